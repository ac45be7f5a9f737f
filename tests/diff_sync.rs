//! Diff syncs end to end through the real binary and the bundled plugins:
//! CSV source → field mapper → file destination.

mod common;

use common::{HostDir, file_pipeline_tenant, stderr};
use serde_json::json;

const FIELDS: &str = r#"[
  { name = "id", from = "id" },
  { name = "name", from = "name" },
  { name = "login", template = "{name|lower|alnum}{id}" },
]"#;

fn host_with(csv: &str) -> HostDir {
    let host = HostDir::new();
    host.write("data/in/people.csv", csv);
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/people.csv", key = "id", page_size = 2 }"#,
            FIELDS,
            r#"mode = "diff""#,
        ),
    );
    host
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report["stats"][field].as_u64().unwrap_or_else(|| panic!("no stats.{field} in {report}"))
}

#[test]
fn diff_sync_creates_updates_deletes_and_then_changes_nothing() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n3,Cy\n");

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["status"], "succeeded");
    assert_eq!((count(&report, "read"), count(&report, "created")), (3, 3));
    assert_eq!(
        host.records("data/out"),
        [
            ("1".to_string(), json!({"id": "1", "name": "Ann", "login": "ann1"})),
            ("2".to_string(), json!({"id": "2", "name": "Bob", "login": "bob2"})),
            ("3".to_string(), json!({"id": "3", "name": "Cy", "login": "cy3"})),
        ]
        .into_iter()
        .collect()
    );

    // Bob is renamed, Cy leaves, Di arrives.
    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Rob\n4,Di\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(
        (count(&report, "created"), count(&report, "updated"), count(&report, "deleted"), count(&report, "unchanged")),
        (1, 1, 1, 1)
    );
    let records = host.records("data/out");
    assert_eq!(records.keys().collect::<Vec<_>>(), ["1", "2", "4"]);
    assert_eq!(records["2"], json!({"id": "2", "name": "Rob", "login": "rob2"}));
    assert_eq!(records["4"], json!({"id": "4", "name": "Di", "login": "di4"}));

    // No change at the source: nothing to do, nothing written.
    let before = std::fs::read_dir(host.path("data/out"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().modified().unwrap())
        .collect::<Vec<_>>();
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(
        (count(&report, "created"), count(&report, "updated"), count(&report, "deleted"), count(&report, "unchanged")),
        (0, 0, 0, 3)
    );
    let after = std::fs::read_dir(host.path("data/out"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().modified().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(before, after, "an idle sync rewrote destination files");
}

#[test]
fn manual_edits_to_fields_the_sync_does_not_own_survive() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n");
    assert!(host.sync("acme/main", &[]).0);

    // Someone adds a field by hand to a record and also changes an owned field.
    let shard_files: Vec<_> = std::fs::read_dir(host.path("data/out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl"))
        .collect();
    for path in shard_files {
        let text = std::fs::read_to_string(&path).unwrap();
        let edited: Vec<String> = text
            .lines()
            .map(|line| {
                let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
                if record["key"] == "1" {
                    record["fields"]["note"] = json!("VIP");
                    record["fields"]["name"] = json!("Annie");
                }
                record.to_string()
            })
            .collect();
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    }

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "updated"), 1, "the owned field edited by hand is repaired");
    assert_eq!(host.records("data/out")["1"], json!({"id": "1", "name": "Ann", "login": "ann1", "note": "VIP"}));
}

#[test]
fn an_empty_source_never_deletes_the_destination() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n");
    assert!(host.sync("acme/main", &[]).0);

    host.write("data/in/people.csv", "id,name\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "a sync from an empty source must fail");
    assert_eq!(report["status"], "failed");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("source gave no rows") && error.contains("2 destination rows"), "{error}");
    assert_eq!(host.records("data/out").len(), 2);
}

#[test]
fn a_source_that_fails_part_way_writes_nothing() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n");
    assert!(host.sync("acme/main", &[]).0);

    // The third page has a row without its key: the source fails after two pages.
    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Bobby\n3,Cy\n4,Di\n,Nobody\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("plugin `src`") && error.contains("no value for key field `id`"), "{error}");
    let records = host.records("data/out");
    assert_eq!(records.len(), 2, "nothing created");
    assert_eq!(records["2"]["name"], "Bob", "nothing updated");
}

#[test]
fn duplicate_keys_in_the_desired_state_fail_the_run_by_name() {
    let host = host_with("id,name\n1,Ann\n1,Annie\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    assert!(report["error"].as_str().unwrap().contains("key `1` appears more than once"), "{report}");
    assert!(host.records("data/out").is_empty());
}

#[test]
fn runs_are_recorded_with_the_plugin_digests_they_used() {
    let host = host_with("id,name\n1,Ann\n");
    let (_, report) = host.sync("acme/main", &[]);
    let run = report["run"].as_i64().unwrap().to_string();
    let output = host.synchost(&["runs", "show", &run, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["plugins"]["src"], common::sha256(synchost::bundled::FILE_SOURCE.bytes));
    assert_eq!(record["plugins"]["dst"], common::sha256(synchost::bundled::FILE_DESTINATION.bytes));

    let list = host.synchost(&["runs", "list", "acme/main", "--json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(runs.len(), 1);
}
