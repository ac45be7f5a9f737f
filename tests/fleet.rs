//! Several `synchost run` hosts sharing tenants through PostgreSQL state,
//! against the real server: leases with fencing tokens, hosts killed,
//! stalled and started while events flow, a state connection cut mid-batch,
//! and a manual sync beside a daemon.
//!
//! The destination is a PostgreSQL table per tenant whose trigger records
//! every write, and any write that takes a key's sequence number backwards.

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
        let schema = unique_name("fleet");
        let pg = Postgres::connect();
        pg.run(&format!(
            "CREATE SCHEMA {schema};
             SET search_path TO {schema};
             CREATE TABLE writes (tbl text, id text, seq bigint, at timestamptz DEFAULT clock_timestamp());
             CREATE TABLE regressions (tbl text, id text, was bigint, now bigint);
             CREATE FUNCTION audit() RETURNS trigger AS $$
             BEGIN
               IF TG_OP = 'UPDATE' AND NEW.seq < OLD.seq THEN
                 INSERT INTO {schema}.regressions VALUES (TG_TABLE_NAME, NEW.id, OLD.seq, NEW.seq);
               END IF;
               INSERT INTO {schema}.writes (tbl, id, seq) VALUES (TG_TABLE_NAME, NEW.id, NEW.seq);
               RETURN NEW;
             END $$ LANGUAGE plpgsql;"
        ));
        let fleet = Fleet { _turn: turn, dir, schema, pg, next_host: 0 };
        for t in 0..tenants {
            fleet.add_tenant(&format!("t{t:02}"));
        }
        fleet
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// A URL whose sessions work in the fleet's schema.
    fn url(&self) -> String {
        format!("{POSTGRES_URL}?options=-csearch_path%3D{}", self.schema)
    }

    /// The hosts' state URL: the fleet's schema, under a session name of the
    /// fleet's own (tests run side by side on one server).
    fn state_url(&self) -> String {
        format!("{}&application_name={}", self.url(), self.state_session())
    }

    fn state_session(&self) -> String {
        format!("state_{}", self.schema)
    }

    /// A tenant with an event pipeline: its changelog → field mapper → its
    /// table in PostgreSQL (keyed by `id`, with the audit trigger).
    fn add_tenant(&self, tenant: &str) {
        use synchost::bundled::{FIELD_MAPPER, FILE_SOURCE, SQL_DESTINATION};
        self.pg.run(&format!(
            "CREATE TABLE {schema}.{tenant} (id text PRIMARY KEY, seq bigint NOT NULL);
             CREATE TRIGGER audit BEFORE INSERT OR UPDATE ON {schema}.{tenant}
                 FOR EACH ROW EXECUTE FUNCTION {schema}.audit();",
            schema = self.schema
        ));
        std::fs::write(self.path(&format!("data/in/{tenant}.jsonl")), "").unwrap();
        let file = format!(
            r#"[connections.pg]
url = "{url}"
# Sessions of pipelines that moved to another host close soon: hosts x
# tenants sessions would pass the server's connection limit.
idle_timeout = "2s"

[plugins.src]
path = "{src}"
sha256 = "{src_digest}"
dirs = [{{ host = "../data/in", guest = "/in" }}]
config = {{ changelog = "/in/{tenant}.jsonl", key = "id" }}

[plugins.map]
path = "{map}"
sha256 = "{map_digest}"
config = {{ fields = [{{ name = "id", from = "id" }}, {{ name = "seq", from = "seq" }}] }}

[plugins.dst]
path = "{dst}"
sha256 = "{dst_digest}"
connections = ["pg"]
config = {{ connection = "pg", table = "{tenant}", key = "id" }}

[pipelines.events]
mode = "event"
source = "src"
transforms = ["map"]
destination = "dst"
schedule = "every 1s"
max_batch = 100
# A transient failure (the server's connection limit, reached while hosts
# come and go) is retried until it applies, never dead-lettered here.
max_attempts = 1000
retry_backoff_max = "2s"
"#,
            url = self.url(),
            src = FILE_SOURCE.file_name,
            src_digest = sha256(FILE_SOURCE.bytes),
            map = FIELD_MAPPER.file_name,
            map_digest = sha256(FIELD_MAPPER.bytes),
            dst = SQL_DESTINATION.file_name,
            dst_digest = sha256(SQL_DESTINATION.bytes),
        );
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
        let process = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("SYNCHOST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
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
        wait_for("every cursor at the end of its changelog, every retry queue empty", limit, || {
            let cursors = self.cursors();
            tenants.iter().all(|t| {
                let end = std::fs::metadata(self.path(&format!("data/in/{t}.jsonl"))).unwrap().len();
                end == 0 || cursors.get(t) == Some(&end)
            }) && self.value("SELECT count(*) FROM retry_queue") == 0
        });
    }

    /// Each key's seq in tenant `t`'s table.
    fn destination(&self, tenant: &str) -> BTreeMap<String, u64> {
        self.rows(&format!("SELECT id, seq FROM {tenant}"))
            .into_iter()
            .map(|row| (row[0].clone().unwrap(), row[1].as_deref().unwrap().parse().unwrap()))
            .collect()
    }

    /// Which pipelines host `id` holds an unexpired lease on now.
    fn leases_of(&self, id: &str) -> Vec<String> {
        let now = chrono::Utc::now().timestamp_millis();
        self.rows(&format!("SELECT tenant FROM leases WHERE holder = '{id}' AND expires_at_ms > {now}"))
            .into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    }
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
    random: u64,
}

impl Writer {
    fn new() -> Writer {
        Writer { last: BTreeMap::new(), seq: BTreeMap::new(), random: 0x5eed }
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

#[test]
fn hosts_killed_stalled_and_started_while_events_flow_lose_nothing_and_never_run_a_pipeline_twice() {
    const TENANTS: usize = 50;
    // At least three minutes; SYNCHOST_FLEET_CHAOS_SECS sets another length.
    let chaos_secs = std::env::var("SYNCHOST_FLEET_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    let chaos = Duration::from_secs(chaos_secs);
    let mut fleet = Fleet::new(TENANTS);
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("t{t:02}")).collect();
    let mut hosts: Vec<Host> = (0..3).map(|_| fleet.start_host()).collect();
    // They find each other, and split the pipelines between them.
    wait_for("three live hosts sharing the pipelines", Duration::from_secs(120), || {
        let output = fleet.command(&["hosts", "--json"]);
        let hosts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        hosts.as_array().is_some_and(|hosts| {
            hosts.len() == 3 && hosts.iter().all(|h| h["pipelines"].as_u64().is_some_and(|n| n > 5 && n < 30))
        })
    });

    // The writer appends events all along, from a thread of its own.
    let writer = Arc::new(Mutex::new(Writer::new()));
    let writing = Arc::new(AtomicBool::new(true));
    let writer_thread = {
        let (writer, writing, dir, tenants) =
            (writer.clone(), writing.clone(), fleet.dir.path().to_path_buf(), tenants.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while writing.load(Ordering::Relaxed) {
                let mut writer = writer.lock().unwrap();
                let n = 5 + (writer.next() % 40) as usize;
                writer.append(&dir, &tenants[i % tenants.len()], n);
                drop(writer);
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The driver: every few seconds, kill a host (and start another), stall
    // one for three lease times, or start one more (up to five).
    let started = Instant::now();
    let (mut kills, mut stalls, mut joins) = (Vec::new(), 0, 0);
    let mut stalls_holding = 0;
    let mut step = 0u64;
    while started.elapsed() < chaos {
        std::thread::sleep(Duration::from_secs(6));
        step += 1;
        let live: Vec<usize> = (0..hosts.len()).filter(|&i| !hosts[i].stopped).collect();
        let pick = live[(step as usize * 7) % live.len()];
        match step % 3 {
            0 => {
                let held = fleet.leases_of(&hosts[pick].id);
                let at = chrono::Utc::now().timestamp_millis();
                hosts[pick].signal(libc::SIGKILL);
                let _ = hosts[pick].process.wait();
                hosts[pick].stopped = true;
                kills.push((hosts[pick].id.clone(), at, held));
                hosts.push(fleet.start_host());
            }
            1 => {
                if !fleet.leases_of(&hosts[pick].id).is_empty() {
                    stalls_holding += 1;
                }
                hosts[pick].signal(libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(3 * LEASE_MS as u64));
                hosts[pick].signal(libc::SIGCONT);
                stalls += 1;
            }
            _ if live.len() < 5 => {
                hosts.push(fleet.start_host());
                joins += 1;
            }
            _ => {}
        }
    }
    writing.store(false, Ordering::Relaxed);
    writer_thread.join().unwrap();
    fleet.wait_caught_up(&tenants, Duration::from_secs(300));

    // Every event applied: each key holds its last event's seq.
    let writer = writer.lock().unwrap();
    let mut events = 0;
    for tenant in &tenants {
        let expected = writer.last.get(tenant).cloned().unwrap_or_default();
        assert_eq!(fleet.destination(tenant), expected, "tenant {tenant}'s table is not its changelog's end");
        events += writer.seq.get(tenant).copied().unwrap_or(0);
    }
    assert_eq!(fleet.value("SELECT count(*) FROM dead_letters"), 0, "events were dead-lettered");
    // No key ever went back, at any write.
    let regressions = fleet.rows("SELECT tbl, id, was, now FROM regressions LIMIT 10");
    assert!(regressions.is_empty(), "keys went backwards: {regressions:?}");
    // No two holders of one pipeline at any moment: each grant found the
    // lease it replaced ended (by the database's clock), tokens only grow.
    let overlaps = fleet.value(
        "SELECT count(*) FROM lease_grants WHERE granted_at_ms < previous_expires_at_ms AND previous_holder <> ''",
    );
    assert_eq!(overlaps, 0, "a lease was granted while another holder's had not ended");
    let grants = fleet.value("SELECT count(*) FROM lease_grants");
    let fenced = fleet.value("SELECT count(*) FROM fenced_writes");
    // A host stalled while holding leases finds them taken when it resumes,
    // and every write its runs then try is refused and counted.
    if stalls_holding > 0 {
        assert!(fenced > 0, "{stalls_holding} stall(s) held leases, yet no write was refused");
    }
    // Takeover: from a kill to the first grant to another host of each
    // pipeline the killed host held.
    let mut takeovers = Vec::new();
    for (id, at, held) in &kills {
        for tenant in held {
            let first = fleet.value(&format!(
                "SELECT coalesce(min(granted_at_ms), 0) FROM lease_grants
                 WHERE tenant = '{tenant}' AND granted_at_ms > {at} AND holder <> '{id}'"
            ));
            assert!(first > 0, "{tenant}, held by killed {id}, was never taken over");
            takeovers.push(first - at);
        }
    }
    let takeover = if takeovers.is_empty() {
        "no kill caught a lease held".to_string()
    } else {
        format!(
            "median {} ms, worst {} ms over {} leases",
            median(takeovers.clone()),
            takeovers.iter().max().unwrap(),
            takeovers.len()
        )
    };
    eprintln!(
        "fleet: {} s of chaos, {events} events over {TENANTS} tenants; {} kills, {stalls} stalls ({stalls_holding} \
         holding leases), {joins} joins; {grants} lease grants, {fenced} fenced writes refused; takeover after a \
         kill: {takeover}",
        chaos.as_secs(),
        kills.len(),
    );
    for host in &hosts {
        assert!(!host.log().contains("panicked"), "{} panicked:\n{}", host.id, host.log());
    }
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
    assert!(fleet.rows("SELECT * FROM regressions").is_empty());
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
    let version =
        |copy: &str| synchost::config::text_digest(&std::fs::read_to_string(root.join(copy).join("t00.toml")).unwrap());
    let v1 = version("tenants-a");
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
    let v2 = version("tenants-a");
    wait_for("host a to serve the new version", Duration::from_secs(60), || versions_of(&fleet, &a.id) == [v2.clone()]);
    let since = chrono::Utc::now().timestamp_millis();
    flow(&fleet, &mut writer);
    flow(&fleet, &mut writer);
    let by_a = fleet
        .value(&format!("SELECT count(*) FROM lease_grants WHERE holder = '{}' AND granted_at_ms > {since}", a.id));
    assert_eq!(by_a, 0, "host a, on the new version, ran pipelines while host b still served the old one");
    let on_v1 = fleet.value(&format!("SELECT count(*) FROM leases WHERE version = '{v1}'"));
    assert_eq!(on_v1, TENANTS as i64, "every pipeline stayed on the version it ran");

    // The rollout reaches host b: the pipelines move on, and both hosts run them.
    for tenant in &tenants {
        let file = fleet.path("tenants-b").join(format!("{tenant}.toml"));
        std::fs::write(&file, std::fs::read_to_string(&file).unwrap() + "# rollout 2\n").unwrap();
    }
    wait_for("host b to serve the new version", Duration::from_secs(60), || versions_of(&fleet, &b.id) == [v2.clone()]);
    wait_for("every pipeline on the new version, run by both hosts", Duration::from_secs(120), || {
        flow(&fleet, &mut writer);
        fleet.value(&format!("SELECT count(*) FROM leases WHERE version = '{v2}'")) == TENANTS as i64
            && fleet.value(&format!(
                "SELECT count(*) FROM lease_grants WHERE holder = '{}' AND granted_at_ms > {since}",
                a.id
            )) > 0
    });
    for tenant in &tenants {
        assert_eq!(fleet.destination(tenant), writer.last[tenant]);
    }
    assert!(fleet.rows("SELECT * FROM regressions").is_empty());
}
