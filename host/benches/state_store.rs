//! What PostgreSQL state costs against the embedded SQLite state, on the same
//! data in the same run:
//! - an event sync of upserts (file source → field mapper → file
//!   destination, `max_batch` 10,000), whose state work is one fenced commit
//!   per batch: events/s with each store, their ratio, and the median commit
//!   time per batch;
//! - a diff sync's first load into an empty file destination, whose state
//!   work is the run record, the managed keys and the permitted load.
//!
//! PostgreSQL is the server on this machine (`SYNCHOST_BENCH_POSTGRES`, by
//! default postgres://postgres@127.0.0.1:5432/test), each round in a schema
//! of its own, dropped after. Medians of `--repeat` rounds (default 3).
//!
//! Run: `cargo bench -p synchost --bench state_store` (`-- --events N --rows N
//! --repeat N` to change the size).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

mod common;
use common::{digest, median, prepare_host_dir};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAX_BATCH: u32 = 10_000;

struct Args {
    events: usize,
    rows: usize,
    repeat: usize,
}

fn args() -> Args {
    let mut args = Args { events: 300_000, rows: 200_000, repeat: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match arg.as_str() {
            "--events" => args.events = value(),
            "--rows" => args.rows = value(),
            "--repeat" => args.repeat = value(),
            _ => {} // cargo bench passes `--bench`
        }
    }
    args
}

fn postgres_url() -> String {
    std::env::var("SYNCHOST_BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs SQL through `psql`, failing loudly if the server is not there.
fn psql(sql: &str) {
    let output = Command::new("psql")
        .args([&postgres_url(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("this benchmark needs the `psql` client");
    assert!(
        output.status.success(),
        "psql failed (is PostgreSQL running?): {sql}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        }
    }
}

/// A host directory whose state is `store`, with one tenant of two
/// pipelines: `events` over `in/changes.jsonl`, `load` over `in/people.csv`.
/// The PostgreSQL schema, if any, is dropped with the returned guard.
fn host_dir(store: Store, round: usize) -> (tempfile::TempDir, Option<String>) {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    let dir = tempfile::tempdir().unwrap();
    prepare_host_dir(dir.path(), &["tenants", "in", "out-events", "out-load"]).unwrap();
    let schema = (store == Store::Postgres).then(|| format!("bench_state_{}_{round}", std::process::id()));
    let state = match &schema {
        Some(schema) => {
            psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"));
            format!("state = \"{}?options=-csearch_path%3D{schema}\"\n", postgres_url())
        }
        None => String::new(),
    };
    std::fs::write(
        dir.path().join("synchost.toml"),
        format!("{state}state_dir = \"state\"\n[limits]\nmemory = \"1 GiB\"\ncall_timeout = \"60s\"\n"),
    )
    .unwrap();
    let tenant = format!(
        r#"[plugins.src]
path = "{src}"
sha256 = "{src_digest}"
dirs = [{{ host = "../in", guest = "/in" }}]
config = {{ changelog = "/in/changes.jsonl", key = "id" }}

[plugins.csv]
path = "{src}"
sha256 = "{src_digest}"
dirs = [{{ host = "../in", guest = "/in" }}]
config = {{ snapshot = "/in/people.csv", key = "id", page_size = 10000 }}

[plugins.map]
path = "{map}"
sha256 = "{map_digest}"
config = {{ fields = [{{ name = "id", from = "id" }}, {{ name = "seq", from = "seq" }}] }}

[plugins.people]
path = "{map}"
sha256 = "{map_digest}"
config = {{ fields = [{{ name = "id", from = "id" }}, {{ name = "name", from = "name" }}] }}

[plugins.dst]
path = "{dst}"
sha256 = "{dst_digest}"
dirs = [{{ host = "../out-events", guest = "/out", write = true }}]
config = {{ dir = "/out", shards = 16 }}

[plugins.load_dst]
path = "{dst}"
sha256 = "{dst_digest}"
dirs = [{{ host = "../out-load", guest = "/out", write = true }}]
config = {{ dir = "/out", shards = 16 }}

[pipelines.events]
mode = "event"
source = "src"
transforms = ["map"]
destination = "dst"
max_batch = {MAX_BATCH}
apply_batch = {MAX_BATCH}

[pipelines.load]
mode = "diff"
source = "csv"
transforms = ["people"]
destination = "load_dst"
"#,
        src = FILE_SOURCE.file_name,
        src_digest = digest(FILE_SOURCE.bytes),
        map = FIELD_MAPPER.file_name,
        map_digest = digest(FIELD_MAPPER.bytes),
        dst = FILE_DESTINATION.file_name,
        dst_digest = digest(FILE_DESTINATION.bytes),
    );
    std::fs::write(dir.path().join("tenants/bench.toml"), tenant).unwrap();
    (dir, schema)
}

/// Upserts of `keys` keys, each with a growing sequence number.
fn changelog(events: usize, keys: usize) -> String {
    let mut text = String::with_capacity(events * 48);
    for seq in 0..events {
        text += &format!("{{\"op\":\"upsert\",\"row\":{{\"id\":\"k{}\",\"seq\":{seq}}}}}\n", (seq * 7919) % keys);
    }
    text
}

fn people(rows: usize) -> String {
    let mut text = String::from("id,name\n");
    for id in 0..rows {
        text += &format!("{id},name{id}\n");
    }
    text
}

/// One round of each sync on `store`: event seconds, the median commit time
/// per batch (ms), diff seconds.
fn round(store: Store, round: usize, inputs: &Path, args: &Args) -> (f64, f64, f64) {
    let (dir, schema) = host_dir(store, round);
    for file in ["changes.jsonl", "people.csv"] {
        std::fs::hard_link(inputs.join(file), dir.path().join("in").join(file))
            .or_else(|_| std::fs::copy(inputs.join(file), dir.path().join("in").join(file)).map(drop))
            .unwrap();
    }
    let runtime = Runtime::load(&dir.path().join("synchost.toml"), Tenants::All).expect("the bench config loads");
    let stop = AtomicBool::new(false);
    let timed = |pipeline: &str| {
        let job = runtime.job(&PipelineId::new("bench", pipeline), &stop, SyncOptions::default()).unwrap();
        let started = Instant::now();
        let report = job.run().expect("the sync runs");
        let seconds = started.elapsed().as_secs_f64();
        assert!(report.error.is_none(), "{}: the sync failed: {:?}", store.name(), report.error);
        (seconds, report)
    };
    let (event_seconds, report) = timed("events");
    assert_eq!(report.stats.read as usize, args.events, "every event was read");
    let commits: Vec<f64> = runtime.state.batches(report.run).unwrap().iter().filter_map(|b| b.commit_ms).collect();
    let (diff_seconds, report) = timed("load");
    assert_eq!(report.stats.created as usize, args.rows, "every row was created");
    drop(runtime);
    if let Some(schema) = schema {
        psql(&format!("DROP SCHEMA {schema} CASCADE"));
    }
    (event_seconds, median(commits), diff_seconds)
}

fn main() {
    let args = args();
    let inputs = tempfile::tempdir().unwrap();
    std::fs::write(inputs.path().join("changes.jsonl"), changelog(args.events, 10_000)).unwrap();
    std::fs::write(inputs.path().join("people.csv"), people(args.rows)).unwrap();
    println!(
        "state store: {} upsert events (max_batch {MAX_BATCH}) and a {}-row first diff load, file plugins, \
         median of {}",
        args.events, args.rows, args.repeat
    );
    let mut results = Vec::new();
    for store in [Store::Sqlite, Store::Postgres] {
        let rounds: Vec<(f64, f64, f64)> = (0..args.repeat).map(|i| round(store, i, inputs.path(), &args)).collect();
        let events = median(rounds.iter().map(|r| r.0).collect());
        let commit = median(rounds.iter().map(|r| r.1).collect());
        let diff = median(rounds.iter().map(|r| r.2).collect());
        println!(
            "{:<11} events {:>7.3} s {:>9.0} events/s  commit per batch {:>6.2} ms   diff first load {:>7.3} s",
            store.name(),
            events,
            args.events as f64 / events,
            commit,
            diff
        );
        results.push((events, commit, diff));
    }
    let (sqlite, postgres) = (results[0], results[1]);
    println!(
        "PostgreSQL / SQLite: event throughput {:.2}x ({:+.1}% time), commit per batch {:.2}x, diff first load {:.2}x",
        sqlite.0 / postgres.0,
        (postgres.0 / sqlite.0 - 1.0) * 100.0,
        postgres.1 / sqlite.1,
        postgres.2 / sqlite.2
    );
}
