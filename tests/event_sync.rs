//! Event syncs end to end: JSON-lines changelog → field mapper → file
//! destination (or the flaky fixture destination), resuming from the stored
//! cursor; collapsing, lanes, the retry queue, dead letters and pauses.

mod common;

use common::{HostDir, file_pipeline_tenant, pipeline_tenant_with_destination};
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
    // Key 1's two events collapse into its last one.
    assert_eq!((stat(&report, "upserted"), stat(&report, "collapsed")), (json!(2), json!(1)));
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
    assert_eq!(report["status"], "paused", "a config error pauses the pipeline: {report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("plugin `src`") && error.contains("not a changelog entry"), "{error}");
    assert_eq!(stat(&report, "cursor_after"), serde_json::Value::Null, "the cursor did not move");
    assert!(host.records("data/out").is_empty(), "nothing of the failed batch was applied");
}

#[test]
fn invalid_utf8_in_the_changelog_pauses_the_sync_naming_the_byte() {
    let host = host("");
    let first = upsert(1, "Ann", 1);
    host.append("data/in/changes.jsonl", &first);
    let mut bytes = std::fs::read(host.path("data/in/changes.jsonl")).unwrap();
    bytes.extend_from_slice(b"{\"op\": \"delete\", \"key\": \"\xff\xfe\"}\n");
    std::fs::write(host.path("data/in/changes.jsonl"), bytes).unwrap();
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok);
    assert_eq!(report["status"], "paused", "bad bytes pause the pipeline like bad JSON: {report}");
    let error = report["error"].as_str().unwrap();
    // The bad byte is the 26th of the second line.
    let at = first.len() + r#"{"op": "delete", "key": ""#.len();
    assert!(error.contains(&format!("at byte {at}: not valid UTF-8")), "{error}");
    assert_eq!(stat(&report, "cursor_after"), serde_json::Value::Null, "the cursor did not move");
}

/// A host whose destination is the flaky fixture with `faults` (TOML keys
/// added to its config table).
fn flaky_host(faults: &str, pipeline_extra: &str) -> HostDir {
    let host = HostDir::new();
    host.write("data/in/changes.jsonl", "");
    write_flaky_tenant(&host, faults, pipeline_extra);
    host
}

fn write_flaky_tenant(host: &HostDir, faults: &str, pipeline_extra: &str) {
    let digest = host.install_fixture("flaky_destination.wasm");
    let separator = if faults.is_empty() { "" } else { ", " };
    host.write(
        "tenants/acme.toml",
        &pipeline_tenant_with_destination(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            FIELDS,
            ("flaky_destination.wasm", &digest),
            &format!("{{ dir = \"/out\", shards = 4{separator}{faults} }}"),
            &format!("mode = \"event\"\n{pipeline_extra}"),
        ),
    );
}

fn run_show(host: &HostDir, report: &serde_json::Value) -> serde_json::Value {
    host.json(&["runs", "show", &report["run"].to_string()])
}

#[test]
fn a_batch_collapses_to_the_last_event_per_key_and_runs_show_has_its_stats() {
    let host = host("lanes = 2");
    let mut events: String = (1..=50).map(|seq| upsert(1, "k", seq)).collect();
    events += &(upsert(2, "gone", 1) + &delete(2) + &upsert(3, "Cy", 1) + &delete(3) + &upsert(3, "Cy again", 2));
    host.append("data/in/changes.jsonl", &events);

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 55);
    assert_eq!(stat(&report, "collapsed"), 52, "50 → 1 for key 1, 2 → 1 for key 2, 3 → 1 for key 3");
    assert_eq!((stat(&report, "upserted"), stat(&report, "deleted")), (json!(2), json!(1)));
    let records = host.records("data/out");
    assert_eq!(records.keys().collect::<Vec<_>>(), ["1", "3"], "the delete was key 2's last event");
    assert_eq!(records["1"]["seq"], 50);
    assert_eq!(records["3"]["name"], "Cy again");

    let shown = run_show(&host, &report);
    let batches = shown["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{shown}");
    let batch = &batches[0];
    assert_eq!((batch["events"].clone(), batch["operations"].clone()), (json!(55), json!(55)));
    assert_eq!(
        (batch["collapsed"].clone(), batch["upserted"].clone(), batch["lanes"].clone()),
        (json!(52), json!(2), json!(2))
    );
    assert!(batch["commit_ms"].as_f64().is_some_and(|ms| ms > 0.0), "the commit time is recorded: {batch}");
    assert!(batch["apply_ms"].as_f64().is_some(), "{batch}");
    let text = host.synchost(&["runs", "show", &report["run"].to_string()]);
    let text = common::stdout(&text);
    assert!(text.contains("collapsed 52") && text.contains("commit ms"), "{text}");
}

#[test]
fn manual_edits_survive_until_an_event_touches_that_key() {
    let host = host("");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + &upsert(2, "Bob", 1)));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");

    // By hand: a new field on both records, and Bob's name changed.
    for entry in std::fs::read_dir(host.path("data/out")).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with("shard-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let edited: Vec<String> = text
            .lines()
            .map(|line| {
                let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
                record["fields"]["note"] = json!("by hand");
                if record["key"] == "2" {
                    record["fields"]["name"] = json!("Robert");
                }
                record.to_string()
            })
            .collect();
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    }

    // An event for key 1 only: key 2's edits stay as they are.
    host.append("data/in/changes.jsonl", &upsert(1, "Annie", 2));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    let records = host.records("data/out");
    assert_eq!(records["2"], json!({"id": "2", "name": "Robert", "seq": 1, "note": "by hand"}));
    assert_eq!(records["1"], json!({"id": "1", "name": "Annie", "seq": 2, "note": "by hand"}));

    // Now an event touches key 2: the fields it carries win, others stay.
    host.append("data/in/changes.jsonl", &upsert(2, "Bob", 2));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(host.records("data/out")["2"], json!({"id": "2", "name": "Bob", "seq": 2, "note": "by hand"}));
}

#[test]
fn lanes_that_share_shards_lose_no_update() {
    // 3 lanes over 4 shards: lanes do write the same shard files at once.
    let host = host("lanes = 3\nmax_batch = 1500\napply_batch = 50");
    let mut expected = std::collections::BTreeMap::new();
    let mut events = String::new();
    for i in 0..6000u32 {
        let (id, seq) = (i % 400, i / 400 + 1);
        events += &upsert(id, &format!("n{i}"), seq);
        expected.insert(id.to_string(), seq);
    }
    host.append("data/in/changes.jsonl", &events);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "batches"), 4);
    let records = host.records("data/out");
    let got: std::collections::BTreeMap<String, u32> =
        records.iter().map(|(k, r)| (k.clone(), r["seq"].as_u64().unwrap() as u32)).collect();
    assert_eq!(got, expected);
    let leftovers: Vec<String> = std::fs::read_dir(host.path("data/out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".lock") || name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "locks or temporary files left behind: {leftovers:?}");
    assert_eq!(run_show(&host, &report)["batches"][0]["lanes"], 3);
}

#[test]
fn a_destination_config_error_pauses_the_pipeline_without_moving_the_cursor() {
    let host = flaky_host(r#"fail_config = "the LMS token was revoked""#, "");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + &upsert(2, "Bob", 1)));
    for _ in 0..2 {
        let (ok, report) = host.sync("acme/main", &[]);
        assert!(!ok);
        assert_eq!(report["status"], "paused", "{report}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("the LMS token was revoked") && error.contains("paused"), "{error}");
        assert_eq!(stat(&report, "cursor_after"), serde_json::Value::Null, "the cursor did not move");
        assert_eq!(stat(&report, "batches"), 0, "nothing of the batch was committed");
    }
    let runs = host.json(&["runs", "list"]);
    assert!(runs.as_array().unwrap().iter().all(|r| r["status"] == "paused"), "{runs}");
    assert!(host.json(&["dlq", "list", "acme/main"]).as_array().unwrap().is_empty(), "nothing dead-lettered");

    // The operator fixes the config: the sync starts where it stood.
    write_flaky_tenant(&host, "", "");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "read"), 2);
    assert_eq!(host.records("data/out").len(), 2);
}

#[test]
fn rejected_operations_go_to_the_dead_letters_and_dlq_retries_or_drops_them() {
    let host = flaky_host(r#"reject_keys = ["9"]"#, "");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + &upsert(9, "Nine", 1)));
    let (ok, report) = host.sync("acme/main", &[]);
    // A rejected operation does not fail the run, but the run says where it went.
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "succeeded_with_errors", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("1 rejected") && error.contains("1 dead-lettered (see `synchost dlq list acme/main`)"),
        "{error}"
    );
    assert_eq!(
        (stat(&report, "upserted"), stat(&report, "rejected"), stat(&report, "dead_lettered")),
        (json!(1), json!(1), json!(1))
    );
    assert!(!host.records("data/out").contains_key("9"));

    let letters = host.json(&["dlq", "list", "acme/main"]);
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["key"], "9");
    assert!(letters[0]["reason"].as_str().unwrap().contains("rejected error: `9` is refused"), "{}", letters[0]);
    assert_eq!(
        letters[0]["operation"],
        json!({"upsert": {"key": "9", "fields": {"id": "9", "name": "Nine", "seq": 1}}})
    );
    let text = common::stdout(&host.synchost(&["dlq", "list", "acme/main"]));
    assert!(text.contains("key 9") && text.contains("refused"), "{text}");

    // Retry and drop name their letters: no implicit "all".
    assert_eq!(host.synchost(&["dlq", "drop", "acme/main"]).status.code(), Some(2));
    let unknown = host.synchost(&["dlq", "retry", "acme/main", "--id", "999"]);
    assert!(!unknown.status.success() && common::stderr(&unknown).contains("no dead letter with id 999"));

    // Still rejected: retrying sends it back to the dead letters, with a new id.
    let id = letters[0]["id"].to_string();
    let retried = host.json(&["dlq", "retry", "acme/main", "--id", &id]);
    assert_eq!(retried["requeued"], json!([letters[0]["id"]]));
    assert!(host.json(&["dlq", "list", "acme/main"]).as_array().unwrap().is_empty());
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["status"], "succeeded_with_errors", "{report}");
    assert_eq!((stat(&report, "retried"), stat(&report, "rejected")), (json!(1), json!(1)));
    let letters = host.json(&["dlq", "list", "acme/main"]);
    assert_eq!(letters.as_array().unwrap().len(), 1);

    // The destination accepts the key again, and retrying the letter applies it.
    write_flaky_tenant(&host, "", "");
    let retried = host.json(&["dlq", "retry", "acme/main", "--all"]);
    assert_eq!(retried["requeued"].as_array().unwrap().len(), 1, "{retried}");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(host.records("data/out")["9"]["seq"], 1);

    // A letter a later event superseded is never retried: it would undo the event.
    write_flaky_tenant(&host, r#"reject_keys = ["9"]"#, "");
    host.append("data/in/changes.jsonl", &upsert(9, "Nine", 2));
    let (_, report) = host.sync("acme/main", &[]);
    assert_eq!(report["status"], "succeeded_with_errors", "{report}");
    write_flaky_tenant(&host, "", "");
    host.append("data/in/changes.jsonl", &upsert(9, "Nine", 3));
    let (ok, _) = host.sync("acme/main", &[]);
    assert!(ok);
    assert_eq!(host.records("data/out")["9"]["seq"], 3);
    let letters = host.json(&["dlq", "list", "acme/main"]);
    assert_eq!(letters[0]["superseded_by"].as_str().map(|p| !p.is_empty()), Some(true), "{letters}");
    let refused = host.synchost(&["dlq", "retry", "acme/main", "--all"]);
    assert!(!refused.status.success());
    assert!(common::stdout(&refused).contains("later event"), "{}", common::stdout(&refused));
    assert_eq!(host.records("data/out")["9"]["seq"], 3);

    let dropped = host.json(&["dlq", "drop", "acme/main", "--all"]);
    assert_eq!(dropped["dropped"], 1);
    assert!(host.json(&["dlq", "list", "acme/main"]).as_array().unwrap().is_empty());
}

#[test]
fn a_later_event_for_a_key_with_a_pending_retry_waits_behind_it_and_supersedes_it() {
    let host = flaky_host(r#"transient_keys = ["1"]"#, "retry_backoff = \"1h\"");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + &upsert(2, "Bob", 1)));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "a transient failure does not fail the run: {report}");
    assert_eq!((stat(&report, "queued"), stat(&report, "pending_retries")), (json!(1), json!(1)));
    assert!(report["failures"][0][1].as_str().unwrap().contains("transient"), "{report}");

    // The destination would take key 1 now, but its retry is not due: the
    // newer event takes the queued one's place and waits; key 2 goes on.
    write_flaky_tenant(&host, "", "retry_backoff = \"1h\"");
    host.append("data/in/changes.jsonl", &(upsert(1, "Annie", 2) + &upsert(2, "Bob", 2)));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(stat(&report, "pending_retries"), 1);
    let records = host.records("data/out");
    assert!(!records.contains_key("1"), "the later event did not overtake the queued one");
    assert_eq!(records["2"]["seq"], 2, "other keys are not held up");
    assert_eq!(run_show(&host, &report)["batches"][0]["superseded"], 1);
}

#[test]
fn retries_back_off_and_end_in_the_dead_letters_after_max_attempts() {
    let host = flaky_host(r#"transient_keys = ["1"]"#, "max_attempts = 3\nretry_backoff = \"20ms\"");
    host.append("data/in/changes.jsonl", &(upsert(1, "Ann", 1) + &upsert(2, "Bob", 1)));
    let mut attempts = 0;
    // Sync until the retry queue is empty: a sync before a retry is due
    // leaves it queued, so how many syncs that takes depends on the machine.
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the retry queue never drained");
        let (_, report) = host.sync("acme/main", &[]);
        let status = report["status"].as_str().unwrap();
        assert!(status == "succeeded" || status == "succeeded_with_errors", "{report}");
        attempts += stat(&report, "failed").as_u64().unwrap();
        if stat(&report, "pending_retries") == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert_eq!(attempts, 3, "three attempts, then it gave up");
    let letters = host.json(&["dlq", "list", "acme/main"]);
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("gave up after 3 attempt(s)") && reason.contains("transient error"), "{reason}");
    assert_eq!(host.records("data/out").keys().collect::<Vec<_>>(), ["2"]);
}

#[test]
fn bad_event_settings_are_reported_with_their_place() {
    let host = host("lanes = 0\nmax_attempts = 0\nretry_backoff = \"soon\"");
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    let errors = common::stderr(&output);
    for expected in [
        "pipelines.main.lanes: `0` must be from 1 to 64",
        "pipelines.main.max_attempts: must be at least 1",
        "pipelines.main.retry_backoff: `soon` is not a duration",
    ] {
        assert!(errors.contains(expected), "missing `{expected}` in:\n{errors}");
    }
    assert!(errors.contains("tenants/acme.toml:"), "errors name the file and line:\n{errors}");

    // Event settings on a diff pipeline would silently do nothing: refused.
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(r#"{ snapshot = "/in/s.csv", key = "id" }"#, FIELDS, "mode = \"diff\"\nmax_attempts = 2"),
    );
    let errors = common::stderr(&host.synchost(&["validate"]));
    assert!(errors.contains("pipelines.main.max_attempts: applies to event pipelines only"), "{errors}");
}
