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

/// A host whose pipeline `acme/main` diffs `data/in/people.csv` into
/// `data/out`; `extra` adds keys to the pipeline table. The change-ratio guard
/// is off unless `extra` sets it, so that small data sets can change freely.
fn host_with(csv: &str, extra: &str) -> HostDir {
    let host = HostDir::new();
    host.write("data/in/people.csv", csv);
    host.write("tenants/acme.toml", &file_pipeline_tenant(SOURCE, FIELDS, &pipeline_table(extra)));
    host
}

const SOURCE: &str = r#"{ snapshot = "/in/people.csv", key = "id", page_size = 2 }"#;

/// The body of the diff pipeline's table: `extra`, and the guard off unless set.
fn pipeline_table(extra: &str) -> String {
    let guard = if extra.contains("max_change_ratio") { "" } else { "max_change_ratio = 10.0\n" };
    format!("mode = \"diff\"\n{guard}{extra}")
}

/// Edits one destination record by hand, as a person would.
fn edit_destination(host: &HostDir, key: &str, edit: impl Fn(&mut serde_json::Value)) {
    let found = synchost::bundled::file_records::edit(&host.path("data/out"), key, edit).unwrap();
    assert!(found, "no record `{key}` to edit");
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report["stats"][field].as_u64().unwrap_or_else(|| panic!("no stats.{field} in {report}"))
}

#[test]
fn diff_sync_creates_updates_deletes_and_then_changes_nothing() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n3,Cy\n", "");

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
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "");
    assert!(host.sync("acme/main", &[]).0);

    // Someone adds a field by hand to a record and also changes an owned field.
    edit_destination(&host, "1", |fields| {
        fields["note"] = json!("VIP");
        fields["name"] = json!("Annie");
    });

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "updated"), 1, "the owned field edited by hand is repaired");
    assert_eq!(host.records("data/out")["1"], json!({"id": "1", "name": "Ann", "login": "ann1", "note": "VIP"}));
}

#[test]
fn an_empty_source_never_deletes_the_destination() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "");
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
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "");
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
    let host = host_with("id,name\n1,Ann\n1,Annie\n", "");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    assert!(report["error"].as_str().unwrap().contains("key `1` appears more than once"), "{report}");
    assert!(host.records("data/out").is_empty());
}

#[test]
fn runs_are_recorded_with_the_plugin_digests_they_used() {
    let host = host_with("id,name\n1,Ann\n", "");
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

#[test]
fn a_plan_over_the_change_ratio_is_blocked_until_approved() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n3,Cy\n4,Di\n5,Ed\n", "max_change_ratio = 0.25");
    assert!(host.sync("acme/main", &[]).0, "an initial load is never blocked");

    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Rob\n4,Di\n5,Eddie\n6,Fay\n");
    let before = host.records("data/out");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "a blocked run is not a success");
    assert_eq!(report["status"], "blocked");
    let reason = report["error"].as_str().unwrap();
    assert!(reason.contains("changes 4 of 5 destination records (80.0%)") && reason.contains("(25.0%)"), "{reason}");
    assert_eq!(host.records("data/out"), before, "a blocked plan writes nothing");
    let run = report["run"].as_i64().unwrap().to_string();

    let output = host.synchost(&["approve", &run, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let approved: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(approved["run"].as_i64().unwrap().to_string(), run, "approve completes the blocked run itself");
    assert_eq!(approved["status"], "succeeded");
    assert_eq!(count(&approved, "read"), 5, "the run keeps what its planning read");
    assert_eq!((count(&approved, "created"), count(&approved, "updated"), count(&approved, "deleted")), (1, 2, 1));
    let records = host.records("data/out");
    assert_eq!(records.keys().collect::<Vec<_>>(), ["1", "2", "4", "5", "6"]);
    assert_eq!(records["5"]["name"], "Eddie");

    // An approved plan cannot be approved twice.
    let again = host.synchost(&["approve", &run]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("is not blocked"), "{}", stderr(&again));
}

#[test]
fn approve_refuses_when_the_destination_changed_since_the_plan() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "max_change_ratio = 0.1");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", "id,name\n1,Annie\n2,Bob\n");
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["status"], "blocked");
    let run = report["run"].as_i64().unwrap().to_string();

    // Someone changes an owned field in the destination meanwhile.
    edit_destination(&host, "2", |fields| fields["name"] = json!("Bobby"));

    let output = host.synchost(&["approve", &run]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("the destination changed since run"), "{}", stderr(&output));
    assert_eq!(host.records("data/out")["2"]["name"], "Bobby", "the refused plan wrote nothing");
    let show = host.synchost(&["runs", "show", &run, "--json"]);
    let record: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(record["status"], "blocked", "a refused approval leaves the run blocked");
}

#[test]
fn force_applies_a_blocked_plan_once() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "max_change_ratio = 0.1");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", "id,name\n1,Annie\n2,Bobby\n");
    let (ok, report) = host.sync("acme/main", &["--force"]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "updated"), 2);
    host.write("data/in/people.csv", "id,name\n1,A\n2,B\n");
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["status"], "blocked", "--force held for one run only");
}

#[test]
fn unique_collisions_are_held_back_with_both_keys_and_the_rest_applies() {
    // `login` is name + id, so unique anyway; `name` collides for 1 and 3.
    let host = host_with("id,name\n1,Sam\n2,Kim\n3,Sam\n", "unique = [\"name\"]");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!((count(&report, "created"), count(&report, "held")), (1, 2));
    let failures: Vec<(String, String)> = serde_json::from_value(report["failures"].clone()).unwrap();
    assert!(failures.iter().any(|(k, why)| k == "1" && why.contains("collides with `3`")), "{failures:?}");
    assert!(failures.iter().any(|(k, why)| k == "3" && why.contains("collides with `1`")), "{failures:?}");
    assert_eq!(host.records("data/out").keys().collect::<Vec<_>>(), ["2"]);

    // Once the source is fixed, the held rows go through.
    host.write("data/in/people.csv", "id,name\n1,Sam\n2,Kim\n3,Sammy\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!((count(&report, "created"), count(&report, "held")), (2, 0));
}

#[test]
fn deletes_never_and_managed_keep_records_the_pipeline_does_not_own() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "deletes = \"managed\"");
    assert!(host.sync("acme/main", &[]).0);
    // A record made by hand in the destination, not by this pipeline.
    let layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(host.path("data/out/layout.json")).unwrap()).unwrap();
    assert_eq!(layout["shards"], 4);
    host.append("data/out/shard-000.jsonl", "{\"key\":\"99\",\"fields\":{\"id\":\"99\",\"name\":\"Manual\"}}\n");
    host.write("data/in/people.csv", "id,name\n1,Ann\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "deleted"), 1, "only the record the pipeline created goes");
    assert_eq!(host.records("data/out").keys().collect::<Vec<_>>(), ["1", "99"]);

    let host = host_with("id,name\n1,Ann\n2,Bob\n", "deletes = \"never\"");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", "id,name\n1,Ann\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "deleted"), 0);
    assert_eq!(host.records("data/out").len(), 2);
}

#[test]
fn owned_fields_limit_what_the_sync_compares_and_writes() {
    let host = host_with("id,name\n1,Ann\n", "owned_fields = [\"id\", \"name\"]");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(host.records("data/out")["1"], json!({"id": "1", "name": "Ann"}), "login is not owned");

    let host = host_with("id,name\n1,Ann\n", "owned_fields = [\"id\", \"nickname\"]");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("owned field `nickname` is not among the fields the transforms emit (id, name, login)"),
        "{error}"
    );
}

#[test]
fn plan_shows_the_plan_and_writes_nothing() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "max_change_ratio = 0.2");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Rob\n3,Cy\n");
    let before = host.records("data/out");
    let runs_before = host.synchost(&["runs", "list", "--json"]).stdout;

    let output = host.synchost(&["plan", "acme/main", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["counts"], json!({"create": 1, "update": 1, "delete": 0, "unchanged": 1, "held": 0}));
    assert_eq!(plan["change_ratio"], 1.0);
    assert!(plan["blocked"].as_str().unwrap().contains("more than max_change_ratio allows"));
    assert_eq!(
        plan["sample"]["update"][0],
        json!({"key": "2", "fields": {"id": "2", "name": "Rob", "login": "rob2"}, "changed": ["name", "login"]})
    );
    assert_eq!(plan["sample"]["create"][0]["key"], "3");

    let human = host.synchost(&["plan", "acme/main"]);
    let text = common::stdout(&human);
    assert!(text.contains("create 1, update 1, delete 0, unchanged 1") && text.contains("BLOCKED"), "{text}");
    assert_eq!(host.records("data/out"), before);
    assert_eq!(host.synchost(&["runs", "list", "--json"]).stdout, runs_before, "plan records no run");
}

#[test]
fn every_run_is_archived_and_replays_to_the_same_plan() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Rob\n3,Cy\n");
    let (_, report) = host.sync("acme/main", &[]);
    let run = report["run"].as_i64().unwrap().to_string();
    let shown = host.json(&["runs", "show", &run]);
    let archived: Vec<&str> =
        shown["archive"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for file in ["source", "destination", "desired", "plan", "outcomes"] {
        assert!(archived.contains(&format!("{file}.jsonl.zst").as_str()), "no {file} in the archive: {shown}");
    }
    assert!(archived.contains(&"meta.json"), "{shown}");
    assert!(!host.path(&format!("state/runs/{run}")).exists(), "nothing left staged beside the state");

    let output = host.synchost(&["replay", &run, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let replay: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(replay["differing_keys"], 0, "{replay}");
    assert_eq!(replay["recorded"], replay["replayed"]);
    assert_eq!(replay["recorded"]["creates"], 1);

    // The same transform file named explicitly replays the same way.
    let mapper = host.path("plugins/field_mapper.wasm");
    let spec = format!("map={}", mapper.display());
    let output = host.synchost(&["replay", &run, "--plugin", &spec, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let replay: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(replay["differing_keys"], 0);

    // With the transform configured differently, the replay shows what would change.
    let tenant = std::fs::read_to_string(host.path("tenants/acme.toml")).unwrap();
    host.write("tenants/acme.toml", &tenant.replace("{name|lower|alnum}{id}", "{name|upper}-{id}"));
    let output = host.synchost(&["replay", &run, "--json"]);
    let replay: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(replay["differing_keys"], 3, "{replay}");
    assert_eq!(replay["replayed"]["updates"], 2);

    let wrong = host.synchost(&["replay", &run, "--plugin", &format!("src={}", mapper.display())]);
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("`src` is not a transform of acme/main"), "{}", stderr(&wrong));
}

/// A host like `host_with`, but writing through the flaky test destination
/// with the given extra config (e.g. `transient_keys = ["2"]`).
#[test]
fn a_diff_applied_in_several_lanes_ends_as_one_lane_would_leave_it() {
    let people = |range: std::ops::RangeInclusive<u32>, name: &str| -> String {
        std::iter::once("id,name\n".to_string()).chain(range.map(|i| format!("{i},{name}{i}\n"))).collect()
    };
    let host = host_with(&people(1..=60, "a"), "lanes = 3\napply_batch = 4\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "created"), 60);
    // Renames, departures and arrivals at once: every lane has deletes,
    // updates and creates.
    host.write("data/in/people.csv", &people(21..=80, "b"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!((count(&report, "deleted"), count(&report, "updated"), count(&report, "created")), (20, 40, 20));
    let records = host.records("data/out");
    let expected: std::collections::BTreeMap<String, serde_json::Value> = (21..=80)
        .map(|i| (i.to_string(), json!({"id": i.to_string(), "name": format!("b{i}"), "login": format!("b{i}{i}")})))
        .collect();
    assert_eq!(records, expected);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok && count(&report, "unchanged") == 60, "{report}");
}

fn flaky_host(csv: &str, pipeline_extra: &str, destination_config: &str) -> HostDir {
    let host = host_with(csv, pipeline_extra);
    let digest = host.install_fixture("flaky_destination.wasm");
    host.write(
        "tenants/acme.toml",
        &common::pipeline_tenant_with_destination(
            SOURCE,
            FIELDS,
            ("flaky_destination.wasm", &digest),
            &format!("{{ dir = \"/out\", shards = 4, {destination_config} }}"),
            &pipeline_table(pipeline_extra),
        ),
    );
    host
}

#[test]
fn transient_failures_are_retried_in_the_run_and_the_rest_repairs_itself() {
    let csv: String = std::iter::once("id,name\n".to_string()).chain((1..=40).map(|i| format!("{i},n{i}\n"))).collect();
    let host =
        flaky_host(&csv, "", "transient_rate = 0.5, seed = 7, reject_keys = [\"13\"], transient_keys = [\"21\"]");
    let (ok, report) = host.sync("acme/main", &[]);
    // It ran to its end, and says what it left out (exit 3, not 0).
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "succeeded_with_errors", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("1 rejected") && error.contains("gave up after their attempts"), "{error}");
    assert!(count(&report, "retried") > 0, "transient failures were retried within the run: {report}");
    assert_eq!(count(&report, "rejected"), 1);
    let created = count(&report, "created");
    let failed = count(&report, "failed");
    assert_eq!(created + failed + 1, 40, "every operation ends applied, failed or rejected: {report}");
    assert!(failed >= 1, "key 21 always fails");
    let failures: Vec<(String, String)> = serde_json::from_value(report["failures"].clone()).unwrap();
    assert!(failures.iter().any(|(k, why)| k == "13" && why.starts_with("rejected error")), "{failures:?}");
    assert!(
        failures.iter().any(|(k, why)| k == "21" && why.starts_with("gave up after 4 attempt(s): transient error")),
        "{failures:?}"
    );

    // Later runs see what is still missing and repair it; only the rejected key stays out.
    let tenant = std::fs::read_to_string(host.path("tenants/acme.toml")).unwrap();
    host.write("tenants/acme.toml", &tenant.replace("transient_keys = [\"21\"]", "transient_keys = []"));
    for _ in 0..10 {
        if host.records("data/out").len() == 39 {
            break;
        }
        host.sync("acme/main", &[]);
    }
    let records = host.records("data/out");
    assert_eq!(records.len(), 39);
    assert!(!records.contains_key("13"));
    assert_eq!(records["21"]["name"], "n21");
}

#[test]
fn a_sync_killed_during_apply_converges_when_run_again() {
    let rows = 600;
    let csv: String =
        std::iter::once("id,name\n".to_string()).chain((1..=rows).map(|i| format!("{i},name{i}\n"))).collect();
    let host = flaky_host(&csv, "apply_batch = 20\nmax_change_ratio = 1000.0", "apply_delay_ms = 25");
    let mut partial = Vec::new();
    for attempt in 0..3u64 {
        let before = if host.path("data/out/layout.json").exists() { host.records("data/out").len() } else { 0 };
        let mut child = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .args(["sync", "acme/main"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until this run has applied a batch more each time (a different
        // point of its apply on each attempt, placed by progress seen rather
        // than by a clock), then kill it there.
        let started = std::time::Instant::now();
        let kill_at = before + 20 * attempt as usize;
        while !host.path("data/out/layout.json").exists() || host.records("data/out").len() <= kill_at {
            if let Some(status) = child.try_wait().unwrap() {
                let report = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
                let log = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
                panic!("the sync ended ({status}) before it was killed:\n{report}\n{log}");
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(120), "the sync never got that far");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap();
        partial.push(host.records("data/out").len());
    }
    assert!(partial.iter().any(|&n| n > 0 && n < rows), "no kill landed mid-apply: {partial:?}");

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    let records = host.records("data/out");
    assert_eq!(records.len(), rows);
    assert!((1..=rows).all(|i| records[&i.to_string()]["name"] == format!("name{i}")));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok);
    assert_eq!(count(&report, "unchanged"), rows as u64, "converged: nothing left to do");

    // The killed runs are not left looking as if they were still going.
    let runs = host.synchost(&["runs", "list", "acme/main", "--json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&runs.stdout).unwrap();
    let statuses: Vec<&str> = runs.iter().rev().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["abandoned", "abandoned", "abandoned", "succeeded", "succeeded"]);
    assert!(runs[4]["error"].as_str().unwrap().contains("ended before it finished"), "{}", runs[4]);
}

#[test]
fn old_run_archives_are_pruned_and_a_blocked_plan_is_superseded_by_the_next_run() {
    let host = host_with("id,name\n1,Ann\n2,Bob\n", "max_change_ratio = 0.6");
    host.write("synchost.toml", &common::host_config("keep_run_archives = 2\n"));
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", "id,name\n1,A\n2,B\n");
    let (_, blocked) = host.sync("acme/main", &[]);
    assert_eq!(blocked["status"], "blocked");
    for name in ["Ann", "Annie", "Anna"] {
        host.write("data/in/people.csv", &format!("id,name\n1,{name}\n2,Bob\n"));
        assert!(host.sync("acme/main", &[]).0);
    }
    let archived: Vec<i64> = (1..=5)
        .filter(|run| !host.json(&["runs", "show", &run.to_string()])["archive"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(archived, [4, 5], "the newest two");

    let show = host.synchost(&["runs", "show", "2", "--json"]);
    let record: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(record["status"], "superseded");
    assert!(record["error"].as_str().unwrap().starts_with("superseded: run 3 planned again"), "{record}");
    let approve = host.synchost(&["approve", "2"]);
    assert!(!approve.status.success());
    assert!(stderr(&approve).contains("is not blocked (it is superseded)"), "{}", stderr(&approve));
}

#[test]
fn a_bad_csv_record_is_named_by_its_line_in_the_file_not_in_its_page() {
    // Pages of two rows: the bad record is on the thirteenth page.
    let mut csv = "id,name\n".to_string();
    for i in 1..=30 {
        csv += &if i == 25 { format!("{i}\n") } else { format!("{i},name{i}\n") };
    }
    let host = host_with(&csv, "");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    let error = report["error"].as_str().unwrap();
    let byte = csv.find("25\n").unwrap();
    // Line 26 of the file: the header is line 1.
    assert!(error.contains(&format!("at line 26 (byte {byte}): the record has 1 fields, the header has 2")), "{error}");
}

/// Starts `synchost sync acme/main ARGS` and SIGKILLs it as soon as `due`
/// holds (it is applying).
fn kill_when(host: &HostDir, args: &[&str], mut due: impl FnMut() -> bool) {
    let mut child = common::KillOnDrop(
        std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .args(["sync", "acme/main"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while !due() {
        assert!(child.try_wait().unwrap().is_none(), "the sync ended before it was killed");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the sync never got that far");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn people(n: usize, name: &str) -> String {
    std::iter::once("id,name\n".to_string()).chain((1..=n).map(|i| format!("{i},{name}{i}\n"))).collect()
}

#[test]
fn an_interrupted_first_load_resumes_under_its_permission_and_then_the_guard_holds_again() {
    // The default guard (20%): a first load passes it (it changes nothing
    // that exists), but what is left of it after a kill is far more than 20%
    // of what it had written.
    let host = flaky_host(&people(600, "name"), "max_change_ratio = 0.2\napply_batch = 20", "apply_delay_ms = 50");
    kill_when(&host, &[], || host.path("data/out/layout.json").exists() && host.records("data/out").len() > 40);
    let partial = host.records("data/out").len();
    assert!(partial < 600, "the kill landed after the load: {partial}");

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "the rest of the load was blocked: {report}");
    assert_eq!(host.records("data/out").len(), 600);

    // The permission was used up: a plan changing everything is blocked again.
    host.write("data/in/people.csv", &people(600, "renamed"));
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["status"], "blocked", "{report}");
}

#[test]
fn a_forced_sync_killed_mid_apply_keeps_its_force_for_the_rest() {
    let host = flaky_host(&people(300, "name"), "max_change_ratio = 0.2\napply_batch = 20", "apply_delay_ms = 50");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", &people(300, "renamed"));
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["status"], "blocked", "{report}");

    // Forced, then killed once it has renamed some: the next run finishes
    // the job without being forced again.
    let renamed =
        || host.records("data/out").values().filter(|r| r["name"].as_str().unwrap().starts_with("renamed")).count();
    kill_when(&host, &["--force"], || renamed() >= 20);
    assert!(renamed() < 300, "the kill landed after the apply");

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "the rest of the forced plan was blocked: {report}");
    assert_eq!(renamed(), 300);
}

#[test]
fn a_blocked_plan_stays_approvable_while_the_same_plan_is_made_again() {
    let host = host_with(&people(10, "name"), "max_change_ratio = 0.2");
    assert!(host.sync("acme/main", &[]).0);
    host.write("data/in/people.csv", &people(10, "renamed"));
    let (_, blocked) = host.sync("acme/main", &[]);
    assert_eq!(blocked["status"], "blocked", "{blocked}");
    let waiting = blocked["run"].as_u64().unwrap();

    // A scheduler planning again and again finds the same plan: the waiting
    // run stays the one to approve, and no new run piles up.
    for _ in 0..3 {
        let (ok, again) = host.sync("acme/main", &[]);
        assert!(!ok);
        assert_eq!((again["status"].as_str(), again["run"].as_u64()), (Some("blocked"), Some(waiting)), "{again}");
        assert!(
            again["error"]
                .as_str()
                .unwrap()
                .contains(&format!("still blocked: the plan is the one run {waiting} made")),
            "{again}"
        );
    }
    let runs = host.json(&["runs", "list", "acme/main"]);
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    let approve = host.synchost(&["approve", &waiting.to_string(), "--json"]);
    assert!(approve.status.success(), "{}", stderr(&approve));
    assert!(host.records("data/out").values().all(|r| r["name"].as_str().unwrap().starts_with("renamed")));

    // A different plan supersedes the waiting one.
    host.write("data/in/people.csv", &people(10, "third"));
    let (_, first) = host.sync("acme/main", &[]);
    host.write("data/in/people.csv", &people(10, "fourth"));
    let (_, second) = host.sync("acme/main", &[]);
    assert_ne!(first["run"], second["run"]);
    let show = host.json(&["runs", "show", &first["run"].to_string()]);
    assert_eq!(show["status"], "superseded", "{show}");
    assert!(show["error"].as_str().unwrap().starts_with("superseded"), "{show}");
}

#[test]
fn json_nested_too_deep_for_the_file_destination_is_rejected_and_its_shards_stay_readable() {
    // 126 levels: the source reads it, but the destination's own records (two
    // levels more) could not be read back: every later run would fail.
    let host = HostDir::new();
    let deep = format!("{}{}", "[".repeat(126), "]".repeat(126));
    host.write(
        "data/in/people.jsonl",
        &format!("{{\"id\": \"1\", \"doc\": {deep}}}\n{{\"id\": \"2\", \"doc\": [1, 2]}}\n"),
    );
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/people.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "doc", from = "doc" }]"#,
            // The refused row is planned again each run; not the guard's business here.
            "mode = \"diff\"\nmax_change_ratio = 10.0",
        ),
    );
    for _ in 0..2 {
        let (_, report) = host.sync("acme/main", &[]);
        assert_eq!(report["status"], "succeeded_with_errors", "the destination stays readable: {report}");
        assert_eq!(count(&report, "rejected"), 1, "{report}");
        let failure = report["failures"][0][1].as_str().unwrap();
        assert!(
            failure.contains("field `doc` nests 126 deep; this destination keeps JSON at most 125 deep"),
            "{failure}"
        );
    }
    assert_eq!(host.records("data/out").keys().collect::<Vec<_>>(), ["2"]);
}

#[test]
fn typed_fields_reach_the_destination_converted_and_compare_after_conversion() {
    let host = HostDir::new();
    host.write("data/in/people.csv", "id,grade,score,active,born\n1,9,1.5,yes,2010-3-7\n2,10,,no,2009-12-31\n");
    let fields = r#"[
  { name = "id", from = "id" },
  { name = "grade", from = "grade", type = "integer" },
  { name = "score", from = "score", type = "float" },
  { name = "active", from = "active", type = "boolean" },
  { name = "born", from = "born", type = "date" },
]"#;
    host.write("tenants/acme.toml", &file_pipeline_tenant(SOURCE, fields, &pipeline_table("")));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    let records = host.records("data/out");
    assert_eq!(records["1"], json!({"id": "1", "grade": 9, "score": 1.5, "active": true, "born": "2010-03-07"}));
    assert_eq!(records["2"], json!({"id": "2", "grade": 10, "score": null, "active": false, "born": "2009-12-31"}));
    // The destination keeps numbers as numbers: the next run finds nothing to change.
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok && count(&report, "unchanged") == 2 && count(&report, "updated") == 0, "{report}");

    // A value that does not convert fails the run, naming row, field and value.
    host.write("data/in/people.csv", "id,grade,score,active,born\n1,nine,1.5,yes,2010-03-07\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("row `1`: field `grade`: `nine` is not an integer"), "{error}");
    assert_eq!(host.records("data/out").len(), 2, "nothing was written");
}

#[test]
fn a_plugin_config_mistake_is_named_at_its_key_in_the_tenant_file_before_the_sync_starts() {
    let host = HostDir::new();
    host.write("data/in/people.csv", "id,name\n1,Ann\n");
    let mapper = r#"[{ name = "id", from = "id" }, { name = "name", form = "name" }]"#;
    let tenant = file_pipeline_tenant(SOURCE, mapper, &pipeline_table(""));
    host.write("tenants/acme.toml", &tenant);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    let error = report["error"].as_str().unwrap();
    let line = tenant.lines().position(|l| l.contains("form = \"name\"")).unwrap() + 1;
    assert!(
        error.contains(&format!("acme.toml:{line}:"))
            && error.contains("plugins.map.config.fields[1].form: unknown key `form`"),
        "{error}"
    );
    assert!(!error.contains("at line"), "no place in the JSON the operator never sees: {error}");
    assert!(host.records("data/out").is_empty(), "nothing ran");
}

/// A CSV of `rows` people, with `renamed` of them under a new name.
fn many_people(rows: usize, renamed: usize) -> String {
    let mut csv = String::from("id,name\n");
    for i in 0..rows {
        let name = if i < renamed { format!("Renamed Person {i}") } else { format!("Person Number {i}") };
        csv.push_str(&format!("{i},{name}\n"));
    }
    csv
}

fn file_size(host: &HostDir, relative: &str) -> u64 {
    std::fs::metadata(host.path(relative)).map_or(0, |m| m.len())
}

#[test]
fn the_file_destination_appends_changes_folds_them_in_and_reads_back_whole() {
    let host = HostDir::new();
    host.write("data/in/people.csv", &many_people(30_000, 0));
    let destination =
        (synchost::bundled::FILE_DESTINATION.file_name, common::sha256(synchost::bundled::FILE_DESTINATION.bytes));
    host.write(
        "tenants/acme.toml",
        &common::pipeline_tenant_with_destination(
            r#"{ snapshot = "/in/people.csv", key = "id" }"#,
            FIELDS,
            (destination.0, &destination.1),
            r#"{ dir = "/out", shards = 1 }"#,
            "mode = \"diff\"\nmax_change_ratio = 10.0",
        ),
    );
    // A first load of 30,000 rows in batches of 500, into one shard: appended
    // to its log, which is folded into the shard each time it outgrows it.
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "created"), 30_000, "{report}");
    let (shard, log) = (file_size(&host, "data/out/shard-000.jsonl"), file_size(&host, "data/out/shard-000.log"));
    assert!(shard > 1 << 20, "the log was never folded in: shard {shard} bytes, log {log}");
    assert!(log <= shard, "a log larger than its shard stayed: shard {shard} bytes, log {log}");
    let records = host.records("data/out");
    assert_eq!(records.len(), 30_000);
    assert_eq!(
        records["29999"],
        json!({"id": "29999", "name": "Person Number 29999", "login": "personnumber2999929999"})
    );

    // A change: only its records are appended, and the shard stays as it was.
    host.write("data/in/people.csv", &many_people(30_000, 10));
    let shard_before = std::fs::read(host.path("data/out/shard-000.jsonl")).unwrap();
    let log_before = file_size(&host, "data/out/shard-000.log");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!((count(&report, "updated"), count(&report, "unchanged")), (10, 29_990), "{report}");
    if std::fs::read(host.path("data/out/shard-000.jsonl")).unwrap() == shard_before {
        let appended = file_size(&host, "data/out/shard-000.log") - log_before;
        assert!(appended < 10 * 200, "10 updates appended {appended} bytes to the log");
    }
    assert_eq!(host.records("data/out")["3"]["name"], "Renamed Person 3");

    // A crash in the middle of an append leaves a line cut short: it is no
    // line, and the next append cuts it off.
    host.append("data/out/shard-000.log", "{\"key\":\"3\",\"fields\":{\"name\":\"half writ");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    common::assert_nothing_changed(&report, 30_000);
    host.write("data/in/people.csv", &many_people(30_000, 11));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "updated"), 1, "{report}");
    let records = host.records("data/out");
    assert_eq!(
        (records["3"]["name"].as_str(), records["10"]["name"].as_str()),
        (Some("Renamed Person 3"), Some("Renamed Person 10"))
    );
    let log = std::fs::read_to_string(host.path("data/out/shard-000.log")).unwrap_or_default();
    assert!(!log.contains("half writ"), "the cut-short line is still in the log");
}
