//! An event sync from a NATS JetStream subject into PostgreSQL, against the
//! real servers on this machine: the `synchost` process is killed (SIGKILL)
//! in the middle of the sync and started again, and nothing is lost, no key's
//! state ever goes back, and the host acknowledges messages only up to what
//! it committed. A server that cannot be reached fails the test.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::databases::{NATS_URL, POSTGRES_URL, Postgres, unique_name};
use common::{BIN, HostDir};
use synchost::bundled::{JETSTREAM_SOURCE, SQL_DESTINATION};

const KEYS: u64 = 300;

/// A JetStream context on the local server.
fn jetstream(runtime: &tokio::runtime::Runtime) -> async_nats::jetstream::Context {
    let client = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), async_nats::connect(NATS_URL)).await })
        .unwrap_or_else(|_| panic!("this test needs NATS at {NATS_URL}, which did not answer within 10 s"))
        .unwrap_or_else(|e| {
            panic!(
                "this test needs NATS with JetStream at {NATS_URL} and cannot connect: {e}; start it with \
                 `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 \
                 -js -sd /var/lib/nats-server`"
            )
        });
    // The context spawns its acknowledging task on the runtime.
    let _runtime = runtime.enter();
    async_nats::jetstream::new(client)
}

/// Publishes messages `from..to`: message `i` sets key `i % KEYS` to version
/// `i / KEYS + 1`, so each key's versions rise with the stream.
fn publish(runtime: &tokio::runtime::Runtime, js: &async_nats::jetstream::Context, subject: &str, from: u64, to: u64) {
    runtime.block_on(async {
        // In chunks: the client holds back publishes while too many wait for
        // the stream's acknowledgement.
        for chunk in (from..to).collect::<Vec<_>>().chunks(500) {
            let mut acks = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let payload = serde_json::json!({ "id": i % KEYS, "version": i / KEYS + 1, "name": format!("n{i}") });
                acks.push(js.publish(subject.to_string(), payload.to_string().into()).await.expect("publish"));
            }
            for ack in acks {
                ack.await.expect("the stream stored the message");
            }
        }
    });
}

/// The pipeline's committed cursor, from the state database; `None` before
/// there is one (or a state database).
fn committed_cursor(host: &HostDir) -> Option<u64> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let db = rusqlite::Connection::open_with_flags(host.path("state/state.db"), flags).ok()?;
    db.busy_timeout(Duration::from_secs(5)).ok()?;
    let cursor: String = db
        .query_row("SELECT cursor FROM cursors WHERE tenant = 'acme' AND pipeline = 'main'", [], |row| row.get(0))
        .ok()?;
    Some(cursor.parse().expect("the cursor is a stream sequence"))
}

#[test]
fn jetstream_to_postgres_event_sync_killed_midway_loses_nothing_and_keeps_per_key_order() {
    let pg = Postgres::connect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream(&runtime);
    let name = unique_name("SYNC");
    let subject = format!("{name}.orders");
    let mut stream = runtime
        .block_on(js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        }))
        .expect("create the stream");
    let (table, history) = (unique_name("orders"), unique_name("orders_history"));
    // Every write to the table is logged, in order, to check per-key order.
    pg.run(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, version bigint NOT NULL, name text);
         CREATE TABLE {history} (n bigserial PRIMARY KEY, id bigint NOT NULL, version bigint NOT NULL);
         CREATE FUNCTION {table}_log() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO {history} (id, version) VALUES (NEW.id, NEW.version); RETURN NEW; END $$;
         CREATE TRIGGER {table}_log AFTER INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_log();"
    ));
    publish(&runtime, &js, &subject, 0, 50_000);

    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &format!(
            r#"[streams.orders]
url = "{NATS_URL}"
stream = "{name}"
filter_subject = "{subject}"
ack_wait = "30s"

[connections.pg]
url = "{POSTGRES_URL}"

[plugins.decode]
path = "{src}"
sha256 = "{src_digest}"
streams = ["orders"]
config = {{ stream = "orders", key = "id" }}

[plugins.db]
path = "{dst}"
sha256 = "{dst_digest}"
connections = ["pg"]
config = {{ connection = "pg", table = "{table}", key = "id" }}

[pipelines.main]
mode = "event"
source = "decode"
destination = "db"
max_batch = 100
lanes = 4
"#,
            src = JETSTREAM_SOURCE.file_name,
            src_digest = common::sha256(JETSTREAM_SOURCE.bytes),
            dst = SQL_DESTINATION.file_name,
            dst_digest = common::sha256(SQL_DESTINATION.bytes),
        ),
    );

    // The first sync, killed once some batches are committed.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(host.path("synchost.toml"))
        .args(["sync", "acme/main"])
        .env("SYNCHOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while committed_cursor(&host).is_none_or(|c| c < 2_000) {
        assert!(child.try_wait().unwrap().is_none(), "the sync ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(120), "no batch was committed within two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "the sync ended before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let cursor = committed_cursor(&host).expect("a committed cursor");
    assert!(cursor < 50_000, "the kill landed after the whole stream was committed ({cursor})");

    // Acknowledged only what was committed.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        runtime.block_on(stream.get_consumer("synchost_acme_orders")).expect("the host's durable consumer");
    let info = runtime.block_on(consumer.info()).unwrap().clone();
    assert!(
        info.ack_floor.stream_sequence <= cursor,
        "messages up to {} were acknowledged, but only {cursor} were committed",
        info.ack_floor.stream_sequence
    );

    // More messages arrive while it is down; then it runs to the end.
    publish(&runtime, &js, &subject, 50_000, 55_000);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");

    // Nothing lost: every key holds its last version.
    let last_version = |key: u64| (0..55_000u64).filter(|i| i % KEYS == key).map(|i| i / KEYS + 1).max().unwrap();
    let rows = pg.rows(&format!("SELECT id, version, name FROM {table} ORDER BY id"));
    assert_eq!(rows.len() as u64, KEYS);
    for row in &rows {
        let key: u64 = row[0].as_deref().unwrap().parse().unwrap();
        let version: u64 = row[1].as_deref().unwrap().parse().unwrap();
        assert_eq!(version, last_version(key), "key {key}");
        let last_message = (0..55_000u64).filter(|i| i % KEYS == key).max().unwrap();
        assert_eq!(row[2].as_deref(), Some(format!("n{last_message}").as_str()), "key {key}");
    }
    // Per-key order: no write ever set a key to an older version than the
    // write before it (a replay after the kill writes the same again).
    let backwards = pg.value(&format!(
        "SELECT count(*) FROM (SELECT version, lag(version) OVER (PARTITION BY id ORDER BY n) AS before
         FROM {history}) writes WHERE version < before"
    ));
    assert_eq!(backwards.as_deref(), Some("0"));

    // Everything committed is acknowledged, and nothing is left in flight.
    let last_sequence = runtime.block_on(stream.info()).unwrap().state.last_sequence;
    assert_eq!(committed_cursor(&host), Some(last_sequence));
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        runtime.block_on(stream.get_consumer("synchost_acme_orders")).unwrap();
    let info = runtime.block_on(consumer.info()).unwrap().clone();
    assert_eq!(info.ack_floor.stream_sequence, last_sequence, "{info:?}");
    assert_eq!(info.num_ack_pending, 0, "{info:?}");

    runtime.block_on(js.delete_stream(&name)).unwrap();
    pg.run(&format!("DROP TABLE {table}; DROP TABLE {history}; DROP FUNCTION {table}_log()"));
}

#[test]
fn plugin_test_passes_the_jetstream_source_against_a_stream() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream(&runtime);
    let name = unique_name("PLUGINTEST");
    let subject = format!("{name}.orders");
    runtime
        .block_on(js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        }))
        .expect("create the stream");
    publish(&runtime, &js, &subject, 0, 40);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("jetstream_source.wasm"), JETSTREAM_SOURCE.bytes).unwrap();
    std::fs::write(
        d.join("grants.toml"),
        format!("[streams.orders]\nurl = \"{NATS_URL}\"\nstream = \"{name}\"\nfilter_subject = \"{subject}\"\n"),
    )
    .unwrap();
    std::fs::write(d.join("config.json"), r#"{"stream": "orders", "key": "id"}"#).unwrap();
    let report = common::plugin_test_passes(
        d,
        &["jetstream_source.wasm", "--plugin-config", "config.json", "--grants", "grants.toml"],
    );
    runtime.block_on(js.delete_stream(&name)).unwrap();
    // A stream has no snapshot to page through: those checks are skipped,
    // and the events are read whole, then again from a cursor half way.
    assert!(report.contains("40 event(s); after cursor"), "{report}");
    assert!(report.contains("0 failed"), "{report}");
}
