//! Crash safety for real: an event sync of 100,000 events over 1,000 keys,
//! with the `synchost` process SIGKILLed at random points and restarted each
//! time. Nothing may be lost, and no key may ever go back in the destination.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, HostDir, pipeline_tenant_with_destination};
use serde_json::json;

const EVENTS: usize = 100_000;
/// Events kept in reserve: on a machine fast enough to finish the sync before
/// enough kills, more events arrive (as they would in production) and the
/// killing goes on.
const RESERVE: usize = 60_000;
const RESERVE_CHUNK: usize = 20_000;
const KEYS: u64 = 1_000;
const KILLS: usize = 22;
/// Kills that must land between a batch's first apply and its commit; the
/// killing goes on until there have been this many.
const MIN_MID_BATCH_KILLS: usize = 3;

/// When to kill one run of `synchost sync`.
#[derive(Clone, Copy)]
enum KillAt {
    /// This long after the process started: during start-up, mostly.
    StartUp(Duration),
    /// Right after the test has seen the destination written this many times.
    AfterWrites(u64),
    /// Not at all: the run goes on until it has caught up.
    Never,
}

/// The destination's shard files, with their sizes and modification times:
/// it changes whenever the destination writes.
fn destination_fingerprint(host: &HostDir) -> Vec<(std::ffi::OsString, u64, std::time::SystemTime)> {
    let Ok(entries) = std::fs::read_dir(host.path("data/out")) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .flatten()
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            Some((entry.file_name(), metadata.len(), metadata.modified().ok()?))
        })
        .collect();
    files.sort();
    files
}

/// A small deterministic generator: the test must be reproducible from its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// key → seq of its last upsert, or absent if its last event was a delete.
type State = BTreeMap<String, u64>;

/// What the destination holds: key → seq.
fn destination(host: &HostDir) -> State {
    host.records("data/out")
        .into_iter()
        .map(|(key, fields)| {
            assert_eq!(fields["id"], json!(key), "record {key} holds another key's fields");
            (key, fields["seq"].as_u64().unwrap())
        })
        .collect()
}

/// The committed cursor (a byte offset into the changelog), if any.
fn committed_cursor(host: &HostDir) -> u64 {
    let runs = host.json(&["runs", "list", "--limit", "1000"]);
    runs.as_array()
        .unwrap()
        .iter()
        .filter_map(|run| run["stats"]["cursor_after"].as_str().map(|c| c.parse::<u64>().unwrap()))
        .max()
        .unwrap_or(0)
}

#[test]
fn an_event_sync_killed_at_random_points_loses_nothing_and_never_goes_back() {
    let host = HostDir::new();
    let digest = host.install_fixture("flaky_destination.wasm");
    // The fixture applies like the file destination, with a pause in every
    // apply call so that kills often land mid-apply; a shard lock left by a
    // killed writer is broken after 300 ms.
    host.write(
        "tenants/acme.toml",
        &pipeline_tenant_with_destination(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "seq", from = "seq" }]"#,
            ("flaky_destination.wasm", &digest),
            r#"{ dir = "/out", shards = 8, apply_delay_ms = 8, lock_stale_ms = 300 }"#,
            "mode = \"event\"\nmax_batch = 1000\napply_batch = 100\nlanes = 4",
        ),
    );

    // The changelog, and the expected state after each event (by the byte
    // offset where the event ends, which is what the cursor holds).
    let mut random = Random(0x5eed_2026);
    let mut changelog = String::with_capacity((EVENTS + RESERVE) * 40);
    let mut boundaries = Vec::new(); // where each reserve chunk ends
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    let mut state = State::new();
    let mut checkpoints: Vec<(u64, State)> = vec![(0, State::new())];
    for i in 0..EVENTS + RESERVE {
        let key = (random.next() % KEYS).to_string();
        let seq = seqs.entry(key.clone()).and_modify(|s| *s += 1).or_insert(1);
        if random.next().is_multiple_of(50) {
            changelog += &format!("{}\n", json!({"op": "delete", "key": key}));
            state.remove(&key);
        } else {
            changelog += &format!("{}\n", json!({"op": "upsert", "row": {"id": key, "seq": *seq}}));
            state.insert(key, *seq);
        }
        // A checkpoint every 500 events is enough to place the cursor: it
        // falls on batch boundaries (1000 events).
        if (i + 1) % 500 == 0 {
            checkpoints.push((changelog.len() as u64, state.clone()));
        }
        if i + 1 == EVENTS || (i + 1 > EVENTS && (i + 1 - EVENTS).is_multiple_of(RESERVE_CHUNK)) {
            boundaries.push(changelog.len());
        }
    }
    assert_eq!(seqs.len() as u64, KEYS, "every key has events");
    let mut boundaries = boundaries.into_iter();
    // Bytes of the changelog written out so far.
    let mut written = boundaries.next().unwrap();
    host.write("data/in/changes.jsonl", &changelog[..written]);
    let expected_at = |cursor: u64| -> &State {
        &checkpoints
            .iter()
            .find(|(offset, _)| *offset == cursor)
            .unwrap_or_else(|| panic!("cursor {cursor} is not on a batch boundary"))
            .1
    };

    // Kills are placed by what the test sees the sync do, not by a clock
    // calibrated once (which a busy machine makes wrong): most runs are
    // killed right after the destination has been written some number of
    // times (mid-apply, or just after a batch boundary), a few during
    // start-up, before anything is written.
    let started = Instant::now();
    let mut highest: State = State::new();
    let (mut kills, mut mid_batch_kills, mut progressed_kills, mut startup_kills) = (0, 0, 0, 0);
    let mut cursor_before = 0;
    let mut finished = false;
    let mut attempt = 0;
    while !finished {
        attempt += 1;
        assert!(attempt < 400 && started.elapsed() < Duration::from_secs(900), "the sync never finished");
        let killing = kills < KILLS || mid_batch_kills < MIN_MID_BATCH_KILLS;
        let kill_at = match random.next() % 8 {
            _ if !killing => KillAt::Never,
            0 => KillAt::StartUp(Duration::from_millis(random.next() % 400)),
            _ => KillAt::AfterWrites(1 + random.next() % 120),
        };
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .args(["sync", "acme/main", "--json"])
            .env("SYNCHOST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let mut fingerprint = destination_fingerprint(&host);
        let mut writes = 0;
        let exit = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break Some(exit);
            }
            let now = destination_fingerprint(&host);
            if now != fingerprint {
                fingerprint = now;
                writes += 1;
            }
            let due = match kill_at {
                KillAt::Never => false,
                KillAt::StartUp(after) => spawned.elapsed() >= after,
                KillAt::AfterWrites(n) => writes >= n,
            };
            if due {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        match exit {
            Some(exit) => {
                let report: serde_json::Value = serde_json::from_reader(child.stdout.take().unwrap()).unwrap();
                assert!(exit.success(), "{report}");
                // `sync` runs until caught up.
                assert_eq!(report["stats"]["cursor_after"], json!(written.to_string()), "{report}");
                if killing && let Some(end) = boundaries.next() {
                    host.append("data/in/changes.jsonl", &changelog[written..end]);
                    written = end;
                } else {
                    finished = true;
                }
            }
            None => kills += 1,
        }

        // After every run, killed or not: no key went back.
        let now = destination(&host);
        for (key, seq) in &now {
            let before = highest.insert(key.clone(), *seq).unwrap_or(0);
            assert!(*seq >= before, "after run {attempt}: key {key} went back from seq {before} to {seq}");
        }
        // Where the kill landed: the committed cursor tells how far the
        // batches got; a destination ahead of it means the kill hit a batch
        // between its first apply and the end of its commit.
        let cursor = committed_cursor(&host);
        if exit.is_none() {
            let ahead = &now != expected_at(cursor);
            match (cursor > cursor_before, ahead) {
                (_, true) => mid_batch_kills += 1,
                (true, false) => progressed_kills += 1,
                (false, false) => startup_kills += 1,
            }
        }
        cursor_before = cursor;
    }
    let took = started.elapsed();
    eprintln!(
        "{kills} kills: {mid_batch_kills} mid-batch (applied, not committed), {progressed_kills} at a batch \
         boundary after progress, {startup_kills} before the first commit; {attempt} runs in {took:?}"
    );

    assert!(kills >= 20, "only {kills} kills");
    assert!(mid_batch_kills >= MIN_MID_BATCH_KILLS, "only {mid_batch_kills} kills landed mid-batch");
    assert_eq!(&destination(&host), expected_at(written as u64), "the destination is the final state");
    assert_eq!(committed_cursor(&host), written as u64);
    // Nothing was dead-lettered or left to retry: nothing was lost on the way.
    assert!(host.json(&["dlq", "list", "acme/main"]).as_array().unwrap().is_empty());
}
