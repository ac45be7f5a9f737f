//! Event syncs end to end: JSON-lines changelog → field mapper → file
//! destination, resuming from the stored cursor.

mod common;

use common::{HostDir, file_pipeline_tenant};
use serde_json::json;

const FIELDS: &str = r#"[
  { name = "id", from = "id" },
  { name = "name", from = "name" },
  { name = "seq", from = "seq" },
]"#;

fn host(pipeline_extra: &str) -> HostDir {
    let host = HostDir::new();
    host.write("data/in/changes.jsonl", "");
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            FIELDS,
            &format!("mode = \"event\"\n{pipeline_extra}"),
        ),
    );
    host
}

fn upsert(id: u32, name: &str, seq: u32) -> String {
    format!("{}\n", json!({"op": "upsert", "row": {"id": id.to_string(), "name": name, "seq": seq}}))
}

fn delete(id: u32) -> String {
    format!("{}\n", json!({"op": "delete", "key": id.to_string()}))
}

fn stat(report: &serde_json::Value, field: &str) -> serde_json::Value {
    report["stats"][field].clone()
}

#[test]
fn event_sync_applies_events_in_order_and_resumes_from_its_cursor() {
    let host = host("");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + &upsert(2, "Bob", 1) + &upsert(1, "Annie", 2)));

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 3);
    assert_eq!(stat(&report, "cursor_before"), serde_json::Value::Null);
    let first_cursor = stat(&report, "cursor_after");
    let records = host.records("data/out");
    assert_eq!(records["1"], json!({"id": "1", "name": "Annie", "seq": 2}), "the later event for a key wins");
    assert_eq!(records["2"]["name"], "Bob");

    host.append("data/in/changes.jsonl", &(delete(2) + &upsert(3, "Cy", 1)));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 2, "only the new events are read");
    assert_eq!(stat(&report, "cursor_before"), first_cursor);
    assert_eq!((stat(&report, "upserted"), stat(&report, "deleted")), (json!(1), json!(1)));
    let records = host.records("data/out");
    assert_eq!(records.keys().collect::<Vec<_>>(), ["1", "3"]);

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok);
    assert_eq!(stat(&report, "read"), 0, "caught up: nothing read again");
}

#[test]
fn max_batches_stops_early_and_the_next_sync_carries_on() {
    let host = host("max_batch = 2");
    let events: String = (1..=5).map(|i| upsert(i, "x", i)).collect();
    host.append("data/in/changes.jsonl", &events);

    let (ok, report) = host.sync("acme/main", &["--max-batches", "1"]);
    assert!(ok, "{report}");
    assert_eq!((stat(&report, "read"), stat(&report, "batches")), (json!(2), json!(1)));
    assert_eq!(host.records("data/out").len(), 2);

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 3);
    assert_eq!(host.records("data/out").len(), 5);
}

#[test]
fn a_half_written_event_is_left_for_the_next_sync() {
    let host = host("");
    let whole = upsert(1, "Ann", 1);
    let second = upsert(2, "Bob", 1);
    let (head, tail) = second.split_at(10);
    host.append("data/in/changes.jsonl", &(whole + head));

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 1);
    assert_eq!(host.records("data/out").len(), 1);

    host.append("data/in/changes.jsonl", tail);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 1);
    assert_eq!(host.records("data/out")["2"]["name"], "Bob");
}

#[test]
fn a_malformed_event_stops_the_sync_without_moving_the_cursor() {
    let host = host("");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + "{not json\n"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("plugin `src`") && error.contains("not a changelog entry"), "{error}");
    assert_eq!(stat(&report, "cursor_after"), serde_json::Value::Null, "the cursor did not move");
    assert!(host.records("data/out").is_empty(), "nothing of the failed batch was applied");
}
