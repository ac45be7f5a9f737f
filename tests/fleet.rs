//! Several `synchost run` hosts sharing tenants through PostgreSQL state,
//! against the real server: leases with fencing tokens, hosts killed,
//! stalled and started while events flow, a state connection cut mid-batch,
//! and a manual sync beside a daemon.
//!
//! The destination is the file destination with a log of every write (the
//! `flaky_destination` fixture, with no faults and `write_log`): the tests
//! read it to check that no write ever took a key's sequence number back.
//! (Destination tables in PostgreSQL, a session per tenant per host, would
//! pass the server's connection limit long before 50 tenants on five hosts.)

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::admin::wait_for;
use common::databases::{POSTGRES_URL, Postgres, unique_name};
use common::{BIN, KillOnDrop, sha256, shared_cache_dir};
use serde_json::json;

/// Short, so that takeovers happen many times in a few minutes.
const LEASE_TIME: &str = "3s";
const LEASE_MS: i64 = 3_000;

/// A folder of tenants, plugins and changelogs that every host reads, each
/// host with its own config (its `state_dir` for the admin socket and run
/// archives), all sharing one PostgreSQL schema for state and destinations.
/// The fleet tests run one at a time: each keeps a session per tenant per
/// host open, and the server's connection limit is shared.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Fleet {
    _turn: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    schema: String,
    pg: Postgres,
    next_host: usize,
}

impl Fleet {
    fn new(tenants: usize) -> Fleet {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "tenants", "data/in"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for plugin in synchost::bundled::ALL {
            std::fs::write(dir.path().join("plugins").join(plugin.file_name), plugin.bytes).unwrap();
        }
        std::fs::write(
            dir.path().join("plugins/flaky_destination.wasm"),
            common::fixture_plugin("flaky_destination.wasm"),
        )
        .unwrap();
        let schema = unique_name("fleet");
        let pg = Postgres::connect();
        pg.run(&format!("CREATE SCHEMA {schema}"));
        let fleet = Fleet { _turn: turn, dir, schema, pg, next_host: 0 };
        for t in 0..tenants {
            fleet.add_tenant(&format!("t{t:02}"));
        }
        fleet
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The hosts' state URL: the fleet's schema, under a session name of the
    /// fleet's own (to cut exactly these sessions).
    fn state_url(&self) -> String {
        format!("{POSTGRES_URL}?options=-csearch_path%3D{}&application_name={}", self.schema, self.state_session())
    }

    fn state_session(&self) -> String {
        format!("state_{}", self.schema)
    }

    /// A tenant with an event pipeline: its changelog → field mapper → its
    /// folder under `data/out`, with its write log beside it.
    fn add_tenant(&self, tenant: &str) {
        std::fs::create_dir_all(self.path(&format!("data/out/{tenant}"))).unwrap();
        std::fs::write(self.path(&format!("data/in/{tenant}.jsonl")), "").unwrap();
        let source = format!(r#"changelog = "/in/{tenant}.jsonl""#);
        // A shard lock held by a killed host is broken after a minute (never
        // during a stall: see the README); what waits for it fails
        // transiently and is retried until it applies, never dead-lettered.
        let settings = "mode = \"event\"\nmax_batch = 100\nmax_attempts = 1000\nretry_backoff_max = \"2s\"\n";
        let file = pipeline_toml("", &source, r#"from = "seq""#, tenant, "events", settings);
        std::fs::write(self.path(&format!("tenants/{tenant}.toml")), file).unwrap();
    }

    /// Writes the config of a new host, `host-N`, and returns its path.
    fn host_config(&mut self) -> (String, PathBuf) {
        self.host_config_with("tenants")
    }

    /// The same, reading its tenant files from `tenants_dir`.
    fn host_config_with(&mut self, tenants_dir: &str) -> (String, PathBuf) {
        let id = format!("host-{}", self.next_host);
        self.next_host += 1;
        let config = self.path(&format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "state = \"{url}\"\nhost_id = \"{id}\"\nlease_time = \"{LEASE_TIME}\"\nstate_dir = \"state-{id}\"\n\
                 tenants_dir = \"{tenants_dir}\"\ncompiled_cache_dir = {cache:?}\n[admin]\nbind = \"off\"\n",
                url = self.state_url(),
                cache = shared_cache_dir().display().to_string(),
            ),
        )
        .unwrap();
        (id, config)
    }

    /// Starts `synchost run` as a new host.
    fn start_host(&mut self) -> Host {
        self.start_host_with("tenants")
    }

    /// The same, reading its tenant files from `tenants_dir`.
    fn start_host_with(&mut self, tenants_dir: &str) -> Host {
        let (id, config) = self.host_config_with(tenants_dir);
        let log = self.path(&format!("{id}.log"));
        let mut command = Command::new(BIN);
        command.arg("--config").arg(&config).arg("run").env("SYNCHOST_LOG", "info");
        command.stderr(std::fs::File::create(&log).unwrap());
        // A host dies with the test process, even one killed outright (a
        // timeout): a fleet left running would load the machine for the
        // tests after it.
        // SAFETY: prctl(2) between fork and exec, async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let process = command.spawn().unwrap();
        Host { id, process: KillOnDrop(process), log, stopped: false }
    }

    /// Runs a one-off `synchost` command as a host of this fleet would.
    fn command(&mut self, args: &[&str]) -> std::process::Output {
        let (_, config) = self.host_config();
        Command::new(BIN).arg("--config").arg(config).args(args).env("SYNCHOST_LOG", "warn").output().unwrap()
    }

    fn value(&self, sql: &str) -> i64 {
        self.pg.value(&format!("SET search_path TO {}; {sql}", self.schema)).map_or(0, |v| v.parse().unwrap())
    }

    fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.pg.rows(&format!("SET search_path TO {}; {sql}", self.schema))
    }

    /// The committed cursor of each tenant's event pipeline.
    fn cursors(&self) -> BTreeMap<String, u64> {
        // None before the first host has made the state's tables.
        if self.value("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'cursors'")
            == 0
        {
            return BTreeMap::new();
        }
        self.rows("SELECT tenant, cursor FROM cursors WHERE pipeline = 'events'")
            .into_iter()
            .map(|row| (row[0].clone().unwrap(), row[1].as_deref().unwrap().parse().unwrap()))
            .collect()
    }

    /// Waits until every tenant's cursor stands at the end of its changelog,
    /// with nothing left in its retry queue.
    fn wait_caught_up(&self, tenants: &[String], limit: Duration) {
        let lagging = || -> Vec<String> {
            let cursors = self.cursors();
            tenants
                .iter()
                .filter_map(|t| {
                    let end = std::fs::metadata(self.path(&format!("data/in/{t}.jsonl"))).unwrap().len();
                    (end != 0 && cursors.get(t) != Some(&end)).then(|| format!("{t} at {:?} of {end}", cursors.get(t)))
                })
                .collect()
        };
        let caught_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for("every cursor at the end of its changelog, every retry queue empty", limit, || {
                lagging().is_empty() && self.value("SELECT count(*) FROM retry_queue") == 0
            })
        }));
        if let Err(timed_out) = caught_up {
            // What a failure needs to be understood: who lags, and why.
            eprintln!("lagging: {:?}", lagging());
            for table in ["retry_queue", "paused_pipelines", "leases"] {
                eprintln!("{table}: {:?}", self.rows(&format!("SELECT * FROM {table}")));
            }
            let recent = "SELECT id, tenant, pipeline, status, error FROM runs ORDER BY id DESC LIMIT 20";
            eprintln!("latest runs: {:?}", self.rows(recent));
            std::panic::resume_unwind(timed_out);
        }
    }

    /// Each key's seq in tenant `t`'s destination.
    fn destination(&self, tenant: &str) -> BTreeMap<String, u64> {
        common::read_records(&self.path(&format!("data/out/{tenant}")))
            .into_iter()
            .map(|(key, fields)| (key, fields["seq"].as_u64().expect("a seq")))
            .collect()
    }

    /// The writes to tenant `t`'s destination that took a key's seq back, in
    /// the order they were written, with how many writes there were.
    fn regressions(&self, tenant: &str) -> (Vec<String>, usize) {
        let log = std::fs::read_to_string(self.path(&format!("data/out/{tenant}.writes.jsonl"))).unwrap_or_default();
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let mut back = Vec::new();
        for line in log.lines() {
            let write: serde_json::Value = serde_json::from_str(line).unwrap();
            let (key, seq) = (write["key"].as_str().unwrap().to_string(), write["fields"]["seq"].as_u64().unwrap());
            if last.get(&key).is_some_and(|&was| seq < was) {
                back.push(format!("{tenant}: {key} went from {} back to {seq}", last[&key]));
            }
            last.insert(key, seq);
        }
        (back, log.lines().count())
    }

    /// When `pipeline` (`tenant/pipeline`) was first granted after `at_ms`
    /// to a host other than `id`, in ms since the epoch; 0 if it has not been.
    fn granted_elsewhere(&self, pipeline: &str, id: &str, at_ms: i64) -> i64 {
        let (tenant, pipeline) = pipeline.split_once('/').unwrap();
        self.value(&format!(
            "SELECT coalesce(min(granted_at_ms), 0) FROM lease_grants
             WHERE tenant = '{tenant}' AND pipeline = '{pipeline}' AND granted_at_ms > {at_ms} AND holder <> '{id}'"
        ))
    }

    /// Which pipelines (`tenant/pipeline`) host `id` holds an unexpired
    /// lease on now.
    fn leases_of(&self, id: &str) -> Vec<String> {
        let now = chrono::Utc::now().timestamp_millis();
        self.rows(&format!(
            "SELECT tenant || '/' || pipeline FROM leases WHERE holder = '{id}' AND expires_at_ms > {now}"
        ))
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
    }

    /// Gives tenant `tenant` a diff pipeline too: a CSV snapshot of people
    /// (`data/in/{tenant}.people.csv`, its rows' `seq` only growing) → its
    /// own folder `data/out/{tenant}-people`, with its write log beside it.
    fn add_diff_pipeline(&self, tenant: &str) {
        use std::io::Write;
        std::fs::create_dir_all(self.path(&format!("data/out/{tenant}-people"))).unwrap();
        let source = format!(r#"snapshot = "/in/{tenant}.people.csv""#);
        // Each new snapshot may change most rows: no approval is asked for.
        let settings = "mode = \"diff\"\nmax_change_ratio = 10.0\n";
        let out = format!("{tenant}-people");
        let pipeline = pipeline_toml("people_", &source, r#"from = "seq", type = "integer""#, &out, "people", settings);
        let path = self.path(&format!("tenants/{tenant}.toml"));
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(pipeline.as_bytes()).unwrap();
    }
}

/// A tenant file's part for one pipeline, run every second: a file source
/// (`source`, keyed by `id`) → the field mapper (`id`, and `seq` as
/// `seq_field` says) → the flaky destination in `data/out/{out}`, which logs
/// every write to `data/out/{out}.writes.jsonl`; then `[pipelines.{pipeline}]`
/// with `settings`. Its plugins' names start with `prefix`.
fn pipeline_toml(prefix: &str, source: &str, seq_field: &str, out: &str, pipeline: &str, settings: &str) -> String {
    use synchost::bundled::{FIELD_MAPPER, FILE_SOURCE};
    format!(
        r#"
[plugins.{prefix}src]
path = "{src}"
sha256 = "{src_digest}"
dirs = [{{ host = "../data/in", guest = "/in" }}]
config = {{ {source}, key = "id" }}

[plugins.{prefix}map]
path = "{map}"
sha256 = "{map_digest}"
config = {{ fields = [{{ name = "id", from = "id" }}, {{ name = "seq", {seq_field} }}] }}

[plugins.{prefix}dst]
path = "flaky_destination.wasm"
sha256 = "{dst_digest}"
dirs = [{{ host = "../data/out", guest = "/out", write = true }}]
config = {{ dir = "/out/{out}", shards = 2, write_log = "/out/{out}.writes.jsonl", lock_stale_ms = 60000 }}

[pipelines.{pipeline}]
source = "{prefix}src"
transforms = ["{prefix}map"]
destination = "{prefix}dst"
schedule = "every 1s"
{settings}"#,
        src = FILE_SOURCE.file_name,
        src_digest = sha256(FILE_SOURCE.bytes),
        map = FIELD_MAPPER.file_name,
        map_digest = sha256(FIELD_MAPPER.bytes),
        dst_digest = sha256(&common::fixture_plugin("flaky_destination.wasm")),
    )
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Left for a look: the hosts' logs, and the schema.
            self.dir.disable_cleanup(true);
            eprintln!("fleet left in {} (schema {})", self.dir.path().display(), self.schema);
        } else {
            self.pg.run(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}

struct Host {
    id: String,
    process: KillOnDrop,
    log: PathBuf,
    stopped: bool,
}

impl Host {
    fn signal(&mut self, signal: i32) {
        // SAFETY: kill(2) on a child process this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.process.id() as i32, signal) }, 0, "kill({signal}) failed");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Appends events to the tenants' changelogs: upserts of keys with a
/// per-tenant sequence number that only grows. Returns what each key's last
/// event set, per tenant.
struct Writer {
    last: BTreeMap<String, BTreeMap<String, u64>>,
    seq: BTreeMap<String, u64>,
    /// Each diff tenant's last snapshot of people: key → seq.
    people: BTreeMap<String, BTreeMap<String, u64>>,
    random: u64,
}

impl Writer {
    fn new() -> Writer {
        Writer { last: BTreeMap::new(), seq: BTreeMap::new(), people: BTreeMap::new(), random: 0x5eed }
    }

    /// Writes a new snapshot of tenant `t`'s 30 people, whole (renamed over
    /// the old one, so a run reads one snapshot or the other): about a third
    /// of them get the tenant's next seq, the rest keep theirs.
    fn snapshot(&mut self, dir: &Path, tenant: &str) {
        let seq = {
            let seq = self.seq.entry(format!("{tenant}-people")).or_insert(0);
            *seq += 1;
            *seq
        };
        let changed: Vec<bool> = (0..30).map(|_| self.next().is_multiple_of(3)).collect();
        let people = self.people.entry(tenant.to_string()).or_default();
        let mut csv = String::from("id,seq\n");
        for (p, changed) in changed.into_iter().enumerate() {
            let person = people.entry(format!("p{p:02}")).or_insert(seq);
            if changed {
                *person = seq;
            }
            csv += &format!("p{p:02},{person}\n");
        }
        let path = dir.join(format!("data/in/{tenant}.people.csv"));
        let temporary = path.with_extension("csv.tmp");
        std::fs::write(&temporary, csv).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
    }

    fn next(&mut self) -> u64 {
        self.random = self.random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.random >> 33
    }

    /// Appends `n` events to tenant `t`'s changelog, over 50 keys.
    fn append(&mut self, dir: &Path, tenant: &str, n: usize) {
        use std::io::Write;
        let mut text = String::new();
        for _ in 0..n {
            let key = format!("k{}", self.next() % 50);
            let seq = self.seq.entry(tenant.to_string()).or_insert(0);
            *seq += 1;
            text += &format!("{}\n", json!({"op": "upsert", "row": {"id": key, "seq": *seq}}));
            self.last.entry(tenant.to_string()).or_default().insert(key, *seq);
        }
        let mut file =
            std::fs::OpenOptions::new().append(true).open(dir.join(format!("data/in/{tenant}.jsonl"))).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }
}

fn median(mut values: Vec<i64>) -> i64 {
    values.sort();
    values[values.len() / 2]
}

/// What the chaos driver does to a host, in turn, every few seconds.
#[derive(Clone, Copy, PartialEq)]
enum Chaos {
    /// SIGKILL a host and start another in its place.
    Kill,
    /// SIGSTOP a host for three lease times at least, and until its leases
    /// have passed to other hosts, then SIGCONT it.
    Stall,
    /// Start one more host (up to five).
    Join,
}

#[test]
fn hosts_killed_and_started_while_events_flow_lose_nothing_never_go_back_and_never_run_a_pipeline_twice() {
    // At least three minutes; SYNCHOST_FLEET_CHAOS_SECS sets another length.
    let secs = std::env::var("SYNCHOST_FLEET_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    let regressions = chaos(50, Duration::from_secs(secs), &[Chaos::Kill, Chaos::Join, Chaos::Kill]);
    assert!(regressions.is_empty(), "keys went backwards: {regressions:?}");
}

/// The file destination admits a write only under the newest lease token it
/// has seen for the lease's scope (`host.run-fence`): a host whose lease
/// passed on while it stalled mid-apply cannot write over the new holder's
/// writes when it resumes. Tokens of other scopes (another pipeline, or a
/// new state store) are not compared.
#[test]
fn the_file_destination_refuses_a_write_under_an_older_lease_than_it_was_written_under() {
    use synchost::config::DirGrant;
    use synchost::model::types::{Action, Operation, OperationBatch, Row, Value};
    use synchost::plugin::{DestinationInstance, EngineOptions, Fence, PluginEngine, PluginSetup};

    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions { compiled_cache_dir: Some(shared_cache_dir()), ..EngineOptions::default() };
    let engine = PluginEngine::new(options).unwrap();
    let compiled = engine.compile("dst", synchost::bundled::FILE_DESTINATION.bytes).unwrap();
    // Each write sets `seq` on keys k0..k9 (both shards), under a lease.
    let write = |scope: &str, token: u64, seq: i64| {
        let mut setup = PluginSetup::bare("dst");
        setup.dirs = vec![DirGrant { host: dir.path().to_path_buf(), guest: "/out".into(), write: true }];
        setup.config = json!({ "dir": "/out", "shards": 2 });
        setup.fence = Some(Fence { scope: scope.into(), token });
        let mut destination = DestinationInstance::new(&engine, &compiled, &setup).unwrap();
        let operations = (0..10)
            .map(|k| Operation {
                idempotency_key: format!("{scope}-{token}-{seq}-{k}"),
                action: Action::Upsert(Row { key: format!("k{k}"), values: vec![Value::Integer(seq)] }),
            })
            .collect();
        destination.apply(&OperationBatch { columns: vec!["seq".into()], operations }).unwrap()
    };
    let seqs = || -> Vec<u64> {
        common::read_records(dir.path()).values().map(|fields| fields["seq"].as_u64().unwrap()).collect()
    };

    assert!(write("state-a/t/events", 2, 20).iter().all(Result::is_ok));
    // The stale holder (token 1) is refused on every shard, naming both
    // tokens, and nothing of it lands.
    for outcome in write("state-a/t/events", 1, 10) {
        match outcome {
            Err(synchost::plugin::WitError::Transient(why)) => {
                assert!(why.contains("token 1") && why.contains("under token 2"), "{why}")
            }
            other => panic!("a write under an older lease was not refused as transient: {other:?}"),
        }
    }
    assert_eq!(seqs(), vec![20; 10]);
    // The holder's own token, and a newer one, write on.
    assert!(write("state-a/t/events", 2, 21).iter().all(Result::is_ok));
    assert!(write("state-a/t/events", 3, 30).iter().all(Result::is_ok));
    assert_eq!(seqs(), vec![30; 10]);
    // Another scope's tokens are its own: a new state store starts from 1.
    assert!(write("state-b/t/events", 1, 40).iter().all(Result::is_ok));
    assert_eq!(seqs(), vec![40; 10]);
    assert!(write("state-a/t/events", 2, 50).iter().all(Result::is_err));
}

/// A host stalled past its lease finds, when it resumes, its leases taken
/// over and every state write of its runs refused: it commits no batch
/// after a newer holder was granted its pipeline. A destination write it
/// had under way in the stall is refused by the destination's fence (see
/// the test above), so no key ever goes back.
#[test]
fn a_stalled_host_comes_back_to_find_its_leases_gone_and_commits_nothing() {
    let regressions = chaos(20, Duration::from_secs(50), &[Chaos::Stall]);
    assert!(regressions.is_empty(), "keys went backwards: {regressions:?}");
}

/// Runs hosts over `tenants` tenants for `length`, doing `actions` in turn
/// to them while events flow, then checks that everything was applied, that
/// no two hosts held a pipeline at once, and that stale writes were refused;
/// prints the figures. Returns the destination writes that went back.
fn chaos(tenants_n: usize, length: Duration, actions: &[Chaos]) -> Vec<String> {
    let chaos = length;
    let mut fleet = Fleet::new(tenants_n);
    let tenants: Vec<String> = (0..tenants_n).map(|t| format!("t{t:02}")).collect();
    // The writer appends events all along; five tenants also sync a
    // snapshot it rewrites now and then, through a diff pipeline.
    let diff_tenants: Vec<String> = tenants.iter().take(5).cloned().collect();
    let writer = Arc::new(Mutex::new(Writer::new()));
    for tenant in &diff_tenants {
        fleet.add_diff_pipeline(tenant);
        writer.lock().unwrap().snapshot(fleet.dir.path(), tenant);
    }
    if actions.contains(&Chaos::Stall) {
        // Apply calls that take a while (the delay comes before any write),
        // so that stalls catch hosts mid-apply, whose late writes the
        // destination must refuse.
        for tenant in &tenants {
            let path = fleet.path(&format!("tenants/{tenant}.toml"));
            let file = std::fs::read_to_string(&path).unwrap();
            let slowed = file.replace("lock_stale_ms = 60000 }", "lock_stale_ms = 60000, apply_delay_ms = 100 }");
            assert_ne!(slowed, file, "the destination's config was not found in {tenant}'s file");
            std::fs::write(&path, slowed).unwrap();
        }
    }
    let mut hosts: Vec<Host> = (0..3).map(|_| fleet.start_host()).collect();
    // They find each other, and split the pipelines between them.
    wait_for("three live hosts sharing the pipelines", Duration::from_secs(120), || {
        let output = fleet.command(&["hosts", "--json"]);
        let hosts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        hosts.as_array().is_some_and(|hosts| {
            hosts.len() == 3
                && hosts.iter().all(|h| h["pipelines"].as_u64().is_some_and(|n| n > 0 && n < tenants_n as u64))
        })
    });

    // The writer, from a thread of its own.
    let writing = Arc::new(AtomicBool::new(true));
    let writer_thread = {
        let (writer, writing, dir, tenants, diff_tenants) =
            (writer.clone(), writing.clone(), fleet.dir.path().to_path_buf(), tenants.clone(), diff_tenants.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while writing.load(Ordering::Relaxed) {
                let mut writer = writer.lock().unwrap();
                let n = 5 + (writer.next() % 40) as usize;
                writer.append(&dir, &tenants[i % tenants.len()], n);
                if i.is_multiple_of(25) {
                    writer.snapshot(&dir, &diff_tenants[(i / 25) % diff_tenants.len()]);
                }
                drop(writer);
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The driver: every few seconds, kill a host (and start another), stall
    // one for three lease times, or start one more (up to five).
    let started = Instant::now();
    let (mut kills, mut stalled, mut joins) = (Vec::new(), Vec::new(), 0);
    let mut stalls_holding = 0;
    let mut step = 0u64;
    while started.elapsed() < chaos {
        std::thread::sleep(Duration::from_secs(6));
        step += 1;
        let live: Vec<usize> = (0..hosts.len()).filter(|&i| !hosts[i].stopped).collect();
        let pick = live[(step as usize * 7) % live.len()];
        match actions[step as usize % actions.len()] {
            Chaos::Kill => {
                // Stopped first, so that what it holds is known exactly.
                let at = chrono::Utc::now().timestamp_millis();
                hosts[pick].signal(libc::SIGSTOP);
                let held = fleet.leases_of(&hosts[pick].id);
                hosts[pick].signal(libc::SIGKILL);
                let _ = hosts[pick].process.wait();
                hosts[pick].stopped = true;
                kills.push((hosts[pick].id.clone(), at, held));
                hosts.push(fleet.start_host());
            }
            Chaos::Stall => {
                // A host that holds leases now, so that the stall catches
                // runs under way (between batches, or mid-apply), if one
                // does within a few seconds.
                let deadline = Instant::now() + Duration::from_secs(5);
                let pick = loop {
                    let holding = (0..live.len())
                        .map(|i| live[(i + step as usize) % live.len()])
                        .find(|&i| !fleet.leases_of(&hosts[i].id).is_empty());
                    match holding {
                        Some(holding) => break holding,
                        None if Instant::now() > deadline => break pick,
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                };
                let at = chrono::Utc::now().timestamp_millis();
                hosts[pick].signal(libc::SIGSTOP);
                let held = fleet.leases_of(&hosts[pick].id);
                if !held.is_empty() {
                    stalls_holding += 1;
                }
                // Stalled for three lease times at least, and until every
                // lease it held has passed to another host (on a busy
                // machine that can take longer), so that it comes back to
                // find them gone.
                std::thread::sleep(Duration::from_millis(3 * LEASE_MS as u64));
                let id = hosts[pick].id.clone();
                wait_for("the stalled host's leases to pass to others", Duration::from_secs(120), || {
                    held.iter().all(|tenant| fleet.granted_elsewhere(tenant, &id, at) > 0)
                });
                stalled.push((id, at, held));
                hosts[pick].signal(libc::SIGCONT);
            }
            Chaos::Join if live.len() < 5 => {
                hosts.push(fleet.start_host());
                joins += 1;
            }
            Chaos::Join => {}
        }
    }
    writing.store(false, Ordering::Relaxed);
    writer_thread.join().unwrap();
    fleet.wait_caught_up(&tenants, Duration::from_secs(300));
    let writer = writer.lock().unwrap();
    // Every diff destination equal to its last snapshot.
    wait_for("every diff destination equal to its last snapshot", Duration::from_secs(300), || {
        diff_tenants.iter().all(|t| fleet.destination(&format!("{t}-people")) == writer.people[t])
    });

    // Every event applied: each key holds its last event's seq.
    let mut events = 0;
    for tenant in &tenants {
        let expected = writer.last.get(tenant).cloned().unwrap_or_default();
        assert_eq!(fleet.destination(tenant), expected, "tenant {tenant}'s table is not its changelog's end");
        events += writer.seq.get(tenant).copied().unwrap_or(0);
    }
    assert_eq!(fleet.value("SELECT count(*) FROM dead_letters"), 0, "events were dead-lettered");
    // Every write to the destinations, in order: those that went back.
    let (mut writes, mut regressions) = (0, Vec::new());
    let diff_destinations = diff_tenants.iter().map(|t| format!("{t}-people"));
    for destination in tenants.iter().cloned().chain(diff_destinations) {
        let (back, written) = fleet.regressions(&destination);
        regressions.extend(back);
        writes += written;
    }
    let diff_runs = fleet.value("SELECT count(*) FROM runs WHERE pipeline = 'people' AND status = 'succeeded'");
    let snapshots: u64 = diff_tenants.iter().map(|t| writer.seq[&format!("{t}-people")]).sum();
    // No two holders of one pipeline at any moment: each grant found the
    // lease it replaced ended (by the database's clock), or its holder's
    // process gone, which only a killed host's can be; tokens only grow.
    let overlaps =
        fleet.value("SELECT count(*) FROM lease_grants WHERE why = 'ended' AND granted_at_ms < previous_expires_at_ms");
    assert_eq!(overlaps, 0, "a lease was granted while another holder's had not ended");
    let killed: Vec<&str> = kills.iter().map(|(id, _, _)| id.as_str()).collect();
    for row in fleet.rows("SELECT DISTINCT previous_holder FROM lease_grants WHERE why = 'holder gone'") {
        let holder = row[0].clone().unwrap();
        assert!(killed.contains(&holder.as_str()), "{holder}'s lease was taken as gone, but it was never killed");
    }
    let grants = fleet.value("SELECT count(*) FROM lease_grants");
    // The destination's refusals of a stale run's writes, as its hosts logged them.
    let fenced_at_destination: usize =
        hosts.iter().map(|host| host.log().matches("has passed to another holder").count()).sum();
    let fenced = fleet.value("SELECT count(*) FROM fenced_writes");
    // No batch was committed under a lease once a newer holder had been
    // granted it: a host that stalled (or was killed) mid-run and came back
    // wrote nothing after its lease passed on. (Whether a stalled host tries
    // a write at all depends on where the stall caught its run: one about to
    // release its lease tries none, so the refusals are counted, not required.)
    let late_commits = fleet.value(
        "SELECT count(*) FROM event_batches b JOIN runs r ON r.id = b.run
         JOIN lease_grants g ON g.tenant = r.tenant AND g.pipeline = r.pipeline AND g.token > r.token
         WHERE b.committed_at::timestamptz > to_timestamp(g.granted_at_ms / 1000.0)",
    );
    assert_eq!(late_commits, 0, "batches were committed under a lease already granted to a newer holder");
    // Takeover: from a kill, or the start of a stall, to the first grant to
    // another host of each pipeline the host held. A killed host's process
    // is seen gone at once on its own machine; a stalled one is what a dead
    // host on another machine looks like: its leases must end first.
    let takeover = |events: &[(String, i64, Vec<String>)]| -> String {
        let mut times = Vec::new();
        for (id, at, held) in events {
            for tenant in held {
                let first = fleet.granted_elsewhere(tenant, id, *at);
                assert!(first > 0, "{tenant}, held by {id}, was never taken over");
                times.push(first - at);
            }
        }
        match times.iter().max() {
            None => "no lease held at the time".to_string(),
            Some(worst) => format!("median {} ms, worst {worst} ms over {} leases", median(times.clone()), times.len()),
        }
    };
    eprintln!(
        "fleet: {} s of chaos, {events} events over {tenants_n} tenants, {diff_runs} diff runs over {snapshots} \
         snapshots of {} tenants, {writes} destination writes; {} kills, {} \
         stalls ({stalls_holding} holding leases), {joins} joins; {grants} lease grants, {fenced} state writes \
         and {fenced_at_destination} destination writes refused as stale; takeover after a kill: {}; after a \
         stall: {}",
        chaos.as_secs(),
        diff_tenants.len(),
        kills.len(),
        stalled.len(),
        takeover(&kills),
        takeover(&stalled),
    );
    for host in &hosts {
        assert!(!host.log().contains("panicked"), "{} panicked:\n{}", host.id, host.log());
    }
    regressions
}

#[test]
fn a_host_whose_state_connection_is_cut_mid_batch_stops_cleanly_and_resumes_committing_nothing_twice() {
    let mut fleet = Fleet::new(1);
    let tenant = "t00".to_string();
    let mut writer = Writer::new();
    for _ in 0..40 {
        writer.append(fleet.dir.path(), &tenant, 500);
    }
    let host = fleet.start_host();
    let end = std::fs::metadata(fleet.path("data/in/t00.jsonl")).unwrap().len();
    // Cut the state store's sessions (not the destination's) whenever the
    // sync is under way, several times.
    let mut cuts = 0;
    wait_for("the sync to catch up through the cuts", Duration::from_secs(300), || {
        let cursor = fleet.cursors().get("t00").copied().unwrap_or(0);
        if cursor > 0 && cursor < end && cuts < 5 {
            cuts += fleet.value(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{}'",
                fleet.state_session()
            ));
        }
        cursor == end
    });
    assert!(cuts > 0, "no state session was cut while the sync was under way");
    assert_eq!(fleet.destination(&tenant), writer.last[&tenant]);
    assert_eq!(fleet.regressions(&tenant).0, Vec::<String>::new());
    // Each event was committed in exactly one batch.
    let committed = fleet.value(
        "SELECT coalesce(sum((b.stats->>'events')::bigint), 0) FROM event_batches b JOIN runs r ON r.id = b.run
         WHERE r.tenant = 't00'",
    );
    assert_eq!(committed, 20_000, "events committed, over every batch of every run");
    assert!(!host.log().contains("panicked"), "{}", host.log());
    eprintln!("state connection cut {cuts} time(s) mid-sync; every event committed once");
}

#[test]
fn a_manual_sync_takes_the_pipelines_lease_and_waits_for_a_host_that_holds_it() {
    let mut fleet = Fleet::new(1);
    let mut writer = Writer::new();
    writer.append(fleet.dir.path(), "t00", 10);
    // Another host holds the lease for a minute.
    let output = fleet.command(&["sync", "t00/events", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let until = chrono::Utc::now().timestamp_millis() + 60_000;
    fleet.rows(&format!(
        "UPDATE leases SET holder = 'host-elsewhere', token = token + 1, expires_at_ms = {until},
             machine = 'elsewhere', pid = 1
         WHERE tenant = 't00' AND pipeline = 'events'"
    ));
    let output = fleet.command(&["sync", "t00/events"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("t00/events is being run by `host-elsewhere`"), "{stderr}");
    // `status` and `hosts` show it.
    let output = fleet.command(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let lease = &status["tenants"][0]["pipelines"][0]["lease"];
    assert_eq!(lease["holder"], "host-elsewhere", "{status}");
    // Once the lease ends, the sync goes through.
    fleet.rows("UPDATE leases SET expires_at_ms = 0 WHERE tenant = 't00'");
    writer.append(fleet.dir.path(), "t00", 10);
    let output = fleet.command(&["sync", "t00/events", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(fleet.destination("t00"), writer.last["t00"]);
}

#[test]
fn mid_rollout_a_pipeline_stays_on_the_version_it_ran_until_every_host_has_moved_on() {
    const TENANTS: usize = 6;
    let mut fleet = Fleet::new(TENANTS);
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("t{t:02}")).collect();
    // Each machine has its own copy of the tenant files, deployed to each.
    for copy in ["tenants-a", "tenants-b"] {
        std::fs::create_dir_all(fleet.path(copy)).unwrap();
        for tenant in &tenants {
            let file = format!("{tenant}.toml");
            std::fs::copy(fleet.path("tenants").join(&file), fleet.path(copy).join(&file)).unwrap();
        }
    }
    let root = fleet.dir.path().to_path_buf();
    // Each tenant's version: its file's digest.
    let versions = |copy: &str| -> BTreeMap<String, String> {
        tenants
            .iter()
            .map(|t| {
                let text = std::fs::read_to_string(root.join(copy).join(format!("{t}.toml"))).unwrap();
                (t.clone(), synchost::config::text_digest(&text))
            })
            .collect()
    };
    let on = |fleet: &Fleet, versions: &BTreeMap<String, String>| {
        fleet
            .rows("SELECT tenant, version FROM leases")
            .into_iter()
            .filter(|row| versions.get(row[0].as_deref().unwrap()).map(String::as_str) == row[1].as_deref())
            .count()
    };
    let v1 = versions("tenants-a");
    let (a, b) = (fleet.start_host_with("tenants-a"), fleet.start_host_with("tenants-b"));
    let mut writer = Writer::new();
    let flow = |fleet: &Fleet, writer: &mut Writer| {
        for tenant in &tenants {
            writer.append(fleet.dir.path(), tenant, 20);
        }
        fleet.wait_caught_up(&tenants, Duration::from_secs(120));
    };
    flow(&fleet, &mut writer);
    let versions_of = |fleet: &Fleet, id: &str| -> Vec<String> {
        fleet
            .rows(&format!("SELECT DISTINCT versions->>'t00' FROM hosts WHERE id = '{id}'"))
            .into_iter()
            .filter_map(|row| row[0].clone())
            .collect()
    };
    // The new version reaches host a only: a line more changes the file's digest.
    for tenant in &tenants {
        let file = fleet.path("tenants-a").join(format!("{tenant}.toml"));
        std::fs::write(&file, std::fs::read_to_string(&file).unwrap() + "# rollout 2\n").unwrap();
    }
    let v2 = versions("tenants-a");
    wait_for("host a to serve the new version", Duration::from_secs(60), || {
        versions_of(&fleet, &a.id) == [v2["t00"].clone()]
    });
    let since = chrono::Utc::now().timestamp_millis();
    flow(&fleet, &mut writer);
    flow(&fleet, &mut writer);
    let by_a = fleet
        .value(&format!("SELECT count(*) FROM lease_grants WHERE holder = '{}' AND granted_at_ms > {since}", a.id));
    assert_eq!(by_a, 0, "host a, on the new version, ran pipelines while host b still served the old one");
    assert_eq!(on(&fleet, &v1), TENANTS, "every pipeline stayed on the version it ran");

    // The rollout reaches host b: the pipelines move on, and both hosts run them.
    for tenant in &tenants {
        let file = fleet.path("tenants-b").join(format!("{tenant}.toml"));
        std::fs::write(&file, std::fs::read_to_string(&file).unwrap() + "# rollout 2\n").unwrap();
    }
    wait_for("host b to serve the new version", Duration::from_secs(60), || {
        versions_of(&fleet, &b.id) == [v2["t00"].clone()]
    });
    wait_for("every pipeline on the new version, run by both hosts", Duration::from_secs(120), || {
        flow(&fleet, &mut writer);
        on(&fleet, &v2) == TENANTS
            && fleet.value(&format!(
                "SELECT count(*) FROM lease_grants WHERE holder = '{}' AND granted_at_ms > {since}",
                a.id
            )) > 0
    });
    for tenant in &tenants {
        assert_eq!(fleet.destination(tenant), writer.last[tenant]);
        assert_eq!(fleet.regressions(tenant).0, Vec::<String>::new());
    }
}

#[test]
fn a_plan_blocked_on_one_host_is_shown_and_replayed_anywhere_and_approved_on_the_host_running_it() {
    let mut fleet = Fleet::new(0);
    let people = |names: [&str; 4]| -> String {
        std::iter::once("id,name\n".to_string())
            .chain(names.iter().enumerate().map(|(i, n)| format!("{i},{n}\n")))
            .collect()
    };
    std::fs::write(fleet.path("data/in/people.csv"), people(["Ann", "Bob", "Cy", "Di"])).unwrap();
    std::fs::create_dir_all(fleet.path("data/out")).unwrap();
    let tenant = common::file_pipeline_tenant(
        r#"{ snapshot = "/in/people.csv", key = "id" }"#,
        r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#,
        "mode = \"diff\"\nmax_change_ratio = 0.5\n",
    );
    std::fs::write(fleet.path("tenants/acme.toml"), tenant).unwrap();
    let json = |output: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON ({e}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    };

    // A one-off command loads the destination, then plans a change of every
    // record, which the guard blocks.
    assert_eq!(json(&fleet.command(&["sync", "acme/main", "--json"]))["status"], "succeeded");
    std::fs::write(fleet.path("data/in/people.csv"), people(["Anna", "Bo", "Cyd", "Dee"])).unwrap();
    let blocked = json(&fleet.command(&["sync", "acme/main", "--json"]));
    assert_eq!(blocked["status"], "blocked", "{blocked}");
    let run = blocked["run"].to_string();

    // Another host's command sees the archive and replays it: it is in the
    // shared state, not in the state_dir of the command that made it.
    let shown = json(&fleet.command(&["runs", "show", &run, "--json"]));
    let files: Vec<&str> = shown["archive"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for file in ["meta.json", "plan.jsonl.zst", "source.jsonl.zst", "destination.jsonl.zst"] {
        assert!(files.contains(&file), "no {file} in run {run}'s archive: {shown}");
    }
    let replay = json(&fleet.command(&["replay", &run, "--json"]));
    assert_eq!(replay["differing_keys"], 0, "{replay}");

    // With a daemon sharing the state, an approval asked anywhere is applied
    // by that daemon, the host that runs the pipeline.
    let daemon = fleet.start_host();
    wait_for("the daemon to join the fleet", Duration::from_secs(60), || {
        fleet.value(&format!("SELECT count(*) FROM hosts WHERE id = '{}'", daemon.id)) == 1
    });
    let output = fleet.command(&["approve", &run, "--json"]);
    let report = json(&output);
    assert!(output.status.success(), "{report}\n{}", daemon.log());
    assert_eq!((report["status"].as_str(), report["host"].as_str()), (Some("succeeded"), Some(daemon.id.as_str())));
    assert_eq!(report["stats"]["updated"], 4, "{report}");
    let names: Vec<String> = common::read_records(&fleet.path("data/out"))
        .values()
        .map(|fields| fields["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Anna", "Bo", "Cyd", "Dee"]);
    let asked = fleet.rows(&format!("SELECT requested_by, claimed_by FROM approvals WHERE run = {run}"));
    assert!(asked[0][0].as_deref().unwrap().starts_with("command:"), "{asked:?}");
    assert_eq!(asked[0][1].as_deref(), Some(daemon.id.as_str()), "{asked:?}");
    // The run's outcomes joined its archive.
    let shown = json(&fleet.command(&["runs", "show", &run, "--json"]));
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert!(shown["archive"].as_array().unwrap().iter().any(|f| f["name"] == "outcomes.jsonl.zst"), "{shown}");

    // Asked again, the daemon refuses: the plan is applied.
    let output = fleet.command(&["approve", &run]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not blocked"), "{stderr}");
}
