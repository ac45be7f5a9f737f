//! Reconciliations of event pipelines with the file plugins: an event stream
//! (`data/in/changes.jsonl`) and the source's current state
//! (`data/in/people.jsonl`, which the source snapshots) into the
//! `flaky_destination` fixture, which logs every write it makes, so that a
//! write that took a key's `seq` back is seen.
//!
//! Changes "behind the stream's back" are made to the snapshot only (an
//! event lost upstream, a delete never sent) and to the destination by hand;
//! a reconciliation must find exactly those, leave the keys with events in
//! flight to the stream, and never move a key backwards, killed or not.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, HostDir, pipeline_tenant_with_destination};
use serde_json::{Value, json};

/// The source's people: key → (seq, name).
type People = BTreeMap<String, (u64, String)>;

/// The people source and its event stream, as the test changes them.
struct Source {
    people: People,
    /// The newest seq each key has had (deleted keys keep theirs).
    seqs: BTreeMap<String, u64>,
    random: u64,
}

impl Source {
    /// `keys` people at seq 1, each also an upsert event.
    fn new(host: &HostDir, keys: usize) -> Source {
        let mut source = Source { people: People::new(), seqs: BTreeMap::new(), random: 0x5eed_0017 };
        let mut events = String::new();
        for i in 0..keys {
            events += &source.set(&format!("{i:04}"), "person");
        }
        host.write("data/in/changes.jsonl", &events);
        source.write_snapshot(host);
        source
    }

    fn next(&mut self) -> u64 {
        self.random = self.random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.random >> 33
    }

    /// A key of those that ever were, at random.
    fn any_key(&mut self) -> String {
        let n = self.seqs.len() as u64;
        format!("{:04}", self.next() % n)
    }

    /// Gives `key` a new seq and `name`; its upsert event.
    fn set(&mut self, key: &str, name: &str) -> String {
        let seq = self.seqs.entry(key.to_string()).and_modify(|s| *s += 1).or_insert(1);
        self.people.insert(key.to_string(), (*seq, format!("{name}-{seq}")));
        format!("{}\n", json!({"op": "upsert", "row": {"id": key, "seq": *seq, "name": format!("{name}-{seq}")}}))
    }

    /// Removes `key`; its delete event.
    fn delete(&mut self, key: &str) -> String {
        self.people.remove(key);
        format!("{}\n", json!({"op": "delete", "key": key}))
    }

    /// The snapshot the source reads: every person now, replaced at once.
    fn write_snapshot(&self, host: &HostDir) {
        self.write_snapshot_in(&host.path(""));
    }

    fn write_snapshot_in(&self, host_dir: &std::path::Path) {
        let lines: String = self
            .people
            .iter()
            .map(|(key, (seq, name))| format!("{}\n", json!({"id": key, "seq": seq, "name": name})))
            .collect();
        let staged = host_dir.join("data/in/people.jsonl.new");
        std::fs::write(&staged, lines).unwrap();
        std::fs::rename(staged, host_dir.join("data/in/people.jsonl")).unwrap();
    }

    /// What the destination must hold once stream and reconciliation are done.
    fn expected(&self) -> BTreeMap<String, Value> {
        self.people
            .iter()
            .map(|(key, (seq, name))| (key.clone(), json!({"id": key, "seq": seq, "name": name})))
            .collect()
    }
}

/// A host with the pipeline `acme/people`: file source → field mapper → the
/// flaky destination (no faults) in `data/out/people`, logging its writes;
/// `pipeline`: more of the pipeline's table.
fn host_with(pipeline: &str, destination: &str) -> HostDir {
    let host = HostDir::new();
    let digest = host.install_fixture("flaky_destination.wasm");
    let tenant = pipeline_tenant_with_destination(
        r#"{ snapshot = "/in/people.jsonl", changelog = "/in/changes.jsonl", key = "id" }"#,
        r#"[{ name = "id", from = "id" }, { name = "seq", from = "seq" }, { name = "name", from = "name" }]"#,
        ("flaky_destination.wasm", &digest),
        &format!("{{ dir = \"/out/people\", shards = 4, write_log = \"/out/people.writes.jsonl\", {destination} }}"),
        &format!("mode = \"event\"\nmax_batch = 500\n{pipeline}"),
    );
    host.write("tenants/acme.toml", &tenant.replace("[pipelines.main]", "[pipelines.people]"));
    std::fs::create_dir_all(host.path("data/out/people")).unwrap();
    host
}

/// [`host_with`] `pipeline` and `destination`, its source `keys` people,
/// loaded by an event sync.
fn loaded(pipeline: &str, destination: &str, keys: usize) -> (HostDir, Source) {
    let host = host_with(pipeline, destination);
    let source = Source::new(&host, keys);
    let (ok, report) = host.sync("acme/people", &[]);
    assert!(ok, "{report}");
    assert_eq!(records(&host), source.expected());
    (host, source)
}

fn records(host: &HostDir) -> BTreeMap<String, Value> {
    host.records("data/out/people")
}

/// Edits a destination record's name by hand, as a person would.
fn hand_edit(host: &HostDir, key: &str) -> bool {
    synchost::bundled::file_records::edit(&host.path("data/out/people"), key, |fields| {
        fields["name"] = json!("edited by hand");
    })
    .unwrap()
}

/// The destination's write log; a last line still being appended (by a
/// run in progress) is not in it yet.
fn write_log(host: &HostDir) -> Vec<String> {
    let log = std::fs::read_to_string(host.path("data/out/people.writes.jsonl")).unwrap_or_default();
    log.split_inclusive('\n').filter(|line| line.ends_with('\n')).map(|line| line.trim_end().to_string()).collect()
}

/// Every write the destination logged that took a key's seq below one it had
/// written before, and how many writes there were.
fn regressions(host: &HostDir) -> (Vec<String>, usize) {
    let log = write_log(host);
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    let mut back = Vec::new();
    for line in &log {
        let write: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn write-log line ({e}): {line}"));
        let key = write["key"].as_str().unwrap().to_string();
        // A delete sets no seq; a later create must still not go below.
        let Some(seq) = write["fields"]["seq"].as_u64() else { continue };
        let was = highest.entry(key.clone()).or_insert(0);
        if seq < *was {
            back.push(format!("{key} went from seq {was} back to {seq}"));
        } else {
            *was = seq;
        }
    }
    (back, log.len())
}

fn sorted(keys: &Value) -> Vec<String> {
    let mut keys: Vec<String> = keys.as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    keys.sort();
    keys
}

#[test]
fn a_reconciliation_repairs_exactly_what_the_stream_missed_and_leaves_keys_in_flight_to_it() {
    let (host, mut source) = loaded("", "lock_stale_ms = 300", 200);

    // Behind the stream's back: two lost updates and a lost create, a
    // delete never sent, and two hand edits of the destination.
    source.set("0010", "lost");
    source.set("0011", "lost");
    source.set("0300", "lost");
    source.delete("0020");
    source.write_snapshot(&host);
    assert!(hand_edit(&host, "0030") && hand_edit(&host, "0031"));
    // And in flight: events not yet applied, for a key that also drifted
    // (0011) and for one that did not (0040).
    let events = source.set("0011", "streamed") + &source.set("0040", "streamed");
    host.append("data/in/changes.jsonl", &events);
    source.write_snapshot(&host);

    let plan = host.json(&["reconcile", "acme/people", "--plan"]);
    let drift = &plan["drift"];
    assert_eq!((drift["missing"].as_u64(), drift["extra"].as_u64()), (Some(1), Some(1)), "{plan}");
    assert_eq!(drift["different"], 5, "0010, 0011, 0030, 0031 and 0040: {plan}");
    assert_eq!(sorted(&drift["samples"]["missing"]), ["0300"]);
    assert_eq!(sorted(&drift["samples"]["extra"]), ["0020"]);
    assert_eq!(drift["fields"], json!({"name": 5, "seq": 3}), "{plan}");
    assert_eq!(sorted(&drift["samples"]["left_to_stream"]), ["0011", "0040"], "{plan}");
    assert_eq!((drift["events_between"].as_u64(), drift["keys_in_flight"].as_u64()), (Some(2), Some(2)));
    assert_eq!(plan["repair"], json!({"creates": 1, "updates": 3, "deletes": 1}), "{plan}");
    // `--plan` wrote nothing.
    assert_eq!(records(&host)["0030"]["name"], "edited by hand");

    let (ok, report) = reconcile(&host, &[]);
    assert!(ok, "{report}");
    assert_eq!((report["mode"].as_str(), report["status"].as_str()), (Some("reconcile"), Some("succeeded")));
    let stats = &report["stats"];
    assert_eq!(
        (stats["created"].as_u64(), stats["updated"].as_u64(), stats["deleted"].as_u64()),
        (Some(1), Some(3), Some(1))
    );
    assert_eq!((stats["drift"]["repaired"].as_u64(), stats["drift"]["left_to_stream"].as_u64()), (Some(5), Some(2)));
    // The stream's keys were left as they were; the cursor did not move.
    let now = records(&host);
    assert_eq!(now["0011"]["name"], "person-1");
    assert_eq!(now["0040"]["name"], "person-1");
    assert_eq!(now["0030"]["name"], "person-1", "the hand edit is repaired");
    assert!(!now.contains_key("0020"));
    let (ok, report) = host.sync("acme/people", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["upserted"], 2, "the stream goes on from the low watermark: {report}");
    assert_eq!(records(&host), source.expected());
    assert_eq!(regressions(&host).0, Vec::<String>::new());

    // The run is kept like a diff run: shown, listed by kind, replayed.
    let run = report_run(&host, "reconcile");
    let shown = host.json(&["runs", "show", &run.to_string()]);
    assert_eq!(shown["stats"]["drift"]["missing"], 1, "{shown}");
    let text = common::stdout(&host.synchost(&["runs", "show", &run.to_string()]));
    assert!(text.contains("reconciliation") && text.contains("1 missing, 1 extra, 5 different"), "{text}");
    let replay = host.json(&["replay", &run.to_string()]);
    assert_eq!(replay["differing_keys"], 0, "{replay}");
    assert_eq!(replay["replayed"]["updates"], 3, "the replay leaves the stream's keys out too: {replay}");

    // In step now: nothing drifted.
    let (ok, report) = reconcile(&host, &[]);
    assert!(ok, "{report}");
    let drift = &report["stats"]["drift"];
    assert_eq!([&drift["missing"], &drift["extra"], &drift["different"]], [&json!(0), &json!(0), &json!(0)]);
}

/// Runs `synchost reconcile acme/people --json EXTRA`: whether it exited 0, and its report.
fn reconcile(host: &HostDir, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["reconcile", "acme/people", "--json"];
    args.extend_from_slice(extra);
    let output = host.synchost(&args);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}{}", common::stdout(&output), common::stderr(&output)));
    (output.status.success(), report)
}

/// The newest run of `kind`.
fn report_run(host: &HostDir, kind: &str) -> u64 {
    let runs = host.json(&["runs", "list", "acme/people"]);
    runs.as_array().unwrap().iter().find(|run| run["mode"] == kind).expect("a run of that kind")["id"].as_u64().unwrap()
}

#[test]
fn a_reconciliation_that_would_change_too_much_waits_for_approval_which_reconciles_again() {
    let (host, mut source) = loaded("reconcile = \"manual\"\nmax_change_ratio = 0.05", "lock_stale_ms = 300", 100);
    for i in 0..10 {
        source.set(&format!("{i:04}"), "lost");
    }
    source.write_snapshot(&host);
    let (ok, report) = reconcile(&host, &[]);
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "blocked", "10 of 100 is over 5%: {report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("synchost approve") && error.contains("reconciles again"), "{error}");
    let blocked = report["run"].as_u64().unwrap();
    assert_eq!(records(&host)["0001"]["name"], "person-1", "nothing was repaired");

    // The stream moved one of them on meanwhile: the approval reconciles
    // again, leaves that key to the stream, and repairs the other nine.
    host.append("data/in/changes.jsonl", &source.set("0001", "streamed"));
    source.write_snapshot(&host);
    let approved = host.json(&["approve", &blocked.to_string()]);
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(approved["stats"]["updated"], 9, "{approved}");
    assert_eq!(approved["stats"]["drift"]["left_to_stream"], 1, "{approved}");
    let (ok, report) = host.sync("acme/people", &[]);
    assert!(ok, "{report}");
    assert_eq!(records(&host), source.expected());

    // Grown past what was approved, a repair is refused and the run stays blocked.
    for i in 20..40 {
        source.set(&format!("{i:04}"), "lost");
    }
    source.write_snapshot(&host);
    let (_, report) = reconcile(&host, &[]);
    let blocked = report["run"].as_u64().unwrap();
    for i in 40..50 {
        source.set(&format!("{i:04}"), "lost");
    }
    source.write_snapshot(&host);
    let output = host.synchost(&["approve", &blocked.to_string()]);
    assert!(!output.status.success());
    assert!(common::stderr(&output).contains("the drift grew since run"), "{}", common::stderr(&output));
    assert_eq!(host.json(&["runs", "show", &blocked.to_string()])["status"], "blocked");
}

/// The daemon reconciles an event pipeline on its `reconcile` schedule (the
/// first one at start-up, as an interval schedule runs), and when asked
/// through the API, between event runs; the drift shows in the pipeline's
/// status, the metrics and the log.
#[test]
fn the_daemon_reconciles_on_its_schedule_and_when_asked_and_shows_the_drift() {
    let host = host_with("schedule = \"every 200ms\"\nreconcile = \"every 1h\"", "lock_stale_ms = 300");
    let mut source = Source::new(&host, 50);
    let daemon = common::admin::Daemon::start(&host);
    common::admin::wait_for("the first load", Duration::from_secs(120), || records(&host) == source.expected());
    let reconciliations = || {
        let runs = host.json(&["runs", "list", "acme/people", "--limit", "1000"]);
        runs.as_array().unwrap().iter().filter(|run| run["mode"] == "reconcile").cloned().collect::<Vec<Value>>()
    };
    common::admin::wait_for("the scheduled reconciliation", Duration::from_secs(120), || {
        daemon.pipeline("acme/people")["last_reconcile"]["status"] == "succeeded"
    });
    assert_eq!(reconciliations().len(), 1, "one at start-up, the next in an hour");

    // Behind the stream's back: a lost update and a hand edit; then asked.
    source.set("0007", "lost");
    source.write_snapshot(&host);
    assert!(hand_edit(&host, "0008"));
    let (code, body) = daemon.post("/api/v1/tenants/acme/pipelines/people/reconcile", None);
    assert_eq!(code, 202, "{body}");
    common::admin::wait_for("the reconciliation asked for to repair them", Duration::from_secs(120), || {
        records(&host) == source.expected()
    });
    // Events still flow after it.
    host.append("data/in/changes.jsonl", &source.set("0009", "streamed"));
    source.write_snapshot(&host);
    common::admin::wait_for("the stream to go on", Duration::from_secs(120), || records(&host) == source.expected());

    let status = daemon.pipeline("acme/people");
    assert_eq!(status["reconcile"], "every 1h", "{status}");
    let drift = &status["last_reconcile"]["stats"]["drift"];
    assert_eq!((drift["different"].as_u64(), drift["repaired"].as_u64()), (Some(2), Some(2)), "{status}");
    let fields = drift["samples"]["different"].as_array().unwrap();
    assert_eq!(
        fields,
        &[json!({"key": "0007", "fields": ["seq", "name"]}), json!({"key": "0008", "fields": ["name"]})]
    );
    assert_eq!(reconciliations().len(), 2);
    let (code, body) = daemon.post("/api/v1/tenants/acme/pipelines/nope/reconcile", None);
    assert_eq!(code, 404, "{body}");
    let (_, metrics) = daemon.get_text("/metrics");
    let different = metrics
        .lines()
        .find(|line| line.starts_with("synchost_reconcile_drift_keys{") && line.contains(r#"kind="different""#));
    assert!(different.is_some_and(|line| line.ends_with(" 2")), "{metrics}");
    assert!(metrics.contains("synchost_reconcile_repaired_total{"), "{metrics}");
    let log = daemon.log();
    assert!(log.contains("reconciliation finished"), "{log}");
    assert_eq!(regressions(&host).0, Vec::<String>::new());
}

/// Runs of `synchost sync` and `synchost reconcile`, SIGKILLed at random
/// moments (most after the destination was written a few times, some in
/// start-up), while a writer appends events, loses some, deletes, and the
/// destination is edited by hand between runs. No write may take a key's seq
/// back; in the end the destination is the source.
#[test]
fn reconciliations_and_event_runs_killed_at_random_while_events_flow_never_move_a_key_back() {
    const KEYS: usize = 1000;
    const RUNS: usize = 80;
    let (host, source) = loaded("apply_batch = 10\nlanes = 2", "lock_stale_ms = 300, apply_delay_ms = 10", KEYS);
    let source = Arc::new(Mutex::new(source));

    // The writer: every few milliseconds a handful of changes, most as
    // events, some behind the stream's back.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (source, writing, host_dir) = (source.clone(), writing.clone(), host.path(""));
        std::thread::spawn(move || {
            let path = |relative: &str| host_dir.join(relative);
            let mut changes = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let mut source = source.lock().unwrap();
                let mut events = String::new();
                for _ in 0..5 {
                    let key = source.any_key();
                    match source.next() % 20 {
                        0 => events += &source.delete(&key),
                        1 => {
                            source.set(&key, "lost");
                        }
                        2 => {
                            source.people.remove(&key);
                        }
                        _ => events += &source.set(&key, "streamed"),
                    }
                    changes += 1;
                }
                use std::io::Write;
                let mut log = std::fs::OpenOptions::new().append(true).open(path("data/in/changes.jsonl")).unwrap();
                log.write_all(events.as_bytes()).unwrap();
                source.write_snapshot_in(&host_dir);
                drop(source);
                std::thread::sleep(Duration::from_millis(20));
            }
            changes
        })
    };

    let started = Instant::now();
    let mut random = 0x0c0ffee_u64;
    let mut next = move || {
        random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        random >> 33
    };
    let (mut kills, mut mid_repair_kills, mut reconciliations) = (0, 0, 0);
    for attempt in 0..RUNS {
        assert!(started.elapsed() < Duration::from_secs(600), "took too long");
        // Hand edits between runs.
        for _ in 0..25 {
            let key = format!("{:04}", next() % KEYS as u64);
            hand_edit(&host, &key);
        }
        let reconciling = attempt % 2 == 0;
        let command = if reconciling { "reconcile" } else { "sync" };
        // Never; in start-up or planning; or after some writes.
        let kill_after_writes = match next() % 4 {
            0 => None,
            1 => Some(0),
            _ => Some(1 + next() % 4),
        };
        let start_up = Duration::from_millis(150 + next() % 300);
        let writes_before = write_log(&host).len();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .args([command, "acme/people", "--json"])
            .env("SYNCHOST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let written = write_log(&host).len() - writes_before;
            let due = match kill_after_writes {
                None => false,
                Some(0) => spawned.elapsed() > start_up,
                Some(n) => written >= n as usize * 5,
            };
            if due {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                if reconciling && written > 0 {
                    mid_repair_kills += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        reconciliations += usize::from(reconciling);
        let (back, _) = regressions(&host);
        assert!(back.is_empty(), "after run {attempt} ({command}): {back:?}");
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let changes = writer.join().unwrap();

    // Caught up: the stream to its end, then one reconciliation for what it
    // missed, then the stream again for what came in meanwhile (nothing).
    let (ok, report) = host.sync("acme/people", &[]);
    assert!(ok, "{report}");
    let (ok, report) = reconcile(&host, &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["drift"]["left_to_stream"], 0, "nothing was in flight: {report}");
    let expected = source.lock().unwrap().expected();
    let now = records(&host);
    let differing: Vec<&String> =
        expected.keys().chain(now.keys()).filter(|key| expected.get(*key) != now.get(*key)).collect();
    assert!(
        differing.is_empty(),
        "the destination is not the source at {} keys: {:?}",
        differing.len(),
        &differing[..differing.len().min(10)]
    );
    let (back, writes) = regressions(&host);
    assert!(back.is_empty(), "{back:?}");
    eprintln!(
        "{changes} source changes, {reconciliations} reconciliations and {} event runs, {kills} kills \
         ({mid_repair_kills} mid-repair), {writes} destination writes, none back, in {:?}",
        RUNS - reconciliations,
        started.elapsed()
    );
    assert!(mid_repair_kills >= 3, "only {mid_repair_kills} kills landed while a reconciliation repaired");
}
