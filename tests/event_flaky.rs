//! An event sync into a destination that fails transiently 30% of the time
//! and rejects 1% of the keys for good: every operation ends applied or
//! dead-lettered with its reason, and no key's order is ever broken.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{HostDir, pipeline_tenant_with_destination};
use serde_json::json;

const KEYS: u32 = 600;
const EVENTS: u32 = 12_000;

/// FNV-1a, as the fixture uses it to pick the keys it rejects.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn a_flaky_destination_ends_with_every_operation_applied_or_dead_lettered_in_order() {
    let host = HostDir::new();
    let digest = host.install_fixture("flaky_destination.wasm");
    host.write(
        "tenants/acme.toml",
        &pipeline_tenant_with_destination(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "seq", from = "seq" }]"#,
            ("flaky_destination.wasm", &digest),
            r#"{ dir = "/out", shards = 8, transient_rate = 0.3, reject_percent = 1 }"#,
            "mode = \"event\"\nmax_batch = 500\napply_batch = 100\nlanes = 4\nmax_attempts = 40\nretry_backoff = \"1ms\"\nretry_backoff_max = \"5ms\"",
        ),
    );

    // Events in waves over the keys, so that later events for a key arrive
    // while an earlier one waits in the retry queue.
    let mut changelog = String::new();
    let mut last: BTreeMap<String, (u32, bool)> = BTreeMap::new();
    let mut state = 0x1234_5678_u64;
    for _ in 0..EVENTS {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let id = format!("k{}", (state >> 33) % KEYS as u64);
        let seq = last.get(&id).map_or(1, |(s, _)| s + 1);
        let delete = (state >> 20).is_multiple_of(50);
        changelog += &if delete {
            format!("{}\n", json!({"op": "delete", "key": id}))
        } else {
            format!("{}\n", json!({"op": "upsert", "row": {"id": id, "seq": seq}}))
        };
        last.insert(id, (seq, delete));
    }
    host.write("data/in/changes.jsonl", &changelog);
    let rejected: BTreeSet<&String> = last.keys().filter(|k| fnv1a(k) % 100 < 1).collect();
    assert!(!rejected.is_empty(), "the key set must include keys the fixture rejects");

    // Sync until the retry queue is empty, checking after every run that no
    // key went back in the destination.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let (mut transient, mut runs) = (0, 0);
    loop {
        runs += 1;
        assert!(runs < 200, "the retry queue never drained");
        let (_, report) = host.sync("acme/main", &[]);
        // A run that dead-lettered what the destination rejects says so.
        let status = report["status"].as_str().unwrap();
        assert!(status == "succeeded" || status == "succeeded_with_errors", "{report}");
        assert_eq!(status == "succeeded_with_errors", report["stats"]["dead_lettered"] != 0, "{report}");
        transient += report["stats"]["failed"].as_u64().unwrap();
        for (key, record) in host.records("data/out") {
            let seq = record["seq"].as_u64().unwrap();
            let before = seen.insert(key.clone(), seq).unwrap_or(0);
            assert!(seq >= before, "key {key} went back from seq {before} to {seq}");
        }
        if report["stats"]["pending_retries"] == 0 && report["stats"]["read"] == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(transient > 1000, "the destination failed transiently {transient} times; 30% expected");

    // Every key ends as its last event left it, unless the destination
    // rejects it: then its last operation is a dead letter with the reason.
    let records = host.records("data/out");
    let letters = host.json(&["dlq", "list", "acme/main"]);
    let letters = letters.as_array().unwrap();
    let mut letters_by_key: BTreeMap<&str, Vec<&serde_json::Value>> = BTreeMap::new();
    for letter in letters {
        letters_by_key.entry(letter["key"].as_str().unwrap()).or_default().push(letter);
    }
    for (key, &(seq, deleted)) in &last {
        if rejected.contains(key) {
            assert!(!records.contains_key(key), "rejected key {key} was applied");
            let newest = letters_by_key[key.as_str()].last().unwrap();
            assert!(newest["reason"].as_str().unwrap().contains("rejected error"), "{newest}");
            assert!(newest["superseded_by"].is_null(), "{newest}");
            let expected = if deleted {
                json!({"delete": key})
            } else {
                json!({"upsert": {"key": key, "fields": {"id": key, "seq": seq}}})
            };
            assert_eq!(newest["operation"], expected, "the last operation of {key} is kept");
        } else if deleted {
            assert!(!records.contains_key(key), "key {key} was deleted last");
        } else {
            assert_eq!(records.get(key).map(|r| r["seq"].clone()), Some(json!(seq)), "key {key}");
        }
    }
    // Nothing else is dead-lettered: transient failures never ran out of attempts.
    assert!(letters_by_key.keys().all(|k| rejected.contains(&k.to_string())), "{letters_by_key:?}");
}
