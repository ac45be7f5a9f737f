//! Event sync throughput end to end: a JSON-lines changelog of small rows read
//! by the wasm file source, through the field-mapper transform, collapsed per
//! key, applied by the wasm file destination in 1, 2, 4 and 8 lanes, and
//! committed to SQLite after every batch.
//!
//! Baselines measured in the same run, on the same changelog:
//! - `source read`: the file source's `events` calls alone (the floor for any
//!   pipeline that reads through the wasm source);
//! - `source + transform`: the same, with the transform chain (no collapse,
//!   no destination, no state).
//!
//! Every figure is the median of `--repeat` runs (default 3), each on a fresh
//! host directory (fresh state and destination). The commit's share is the
//! time spent committing (from the per-batch stats the sync itself records,
//! as `synchost runs show` shows them) over the run's wall time: batches run
//! back to back, so that is its share of the time per batch.
//!
//! Run: `cargo bench -p synchost --bench event_sync` (`-- --events N --keys N
//! --repeat N` to change the size).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use synchost::model::Change;
use synchost::model::Table;
use synchost::plugin::{PluginSetup, SourceInstance, TransformInstance};
use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

mod common;
use common::{digest, median, prepare_host_dir};

// The allocator the `synchost` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAX_BATCH: u32 = 50_000;
const SHARDS: u32 = 16;

struct Args {
    events: usize,
    keys: usize,
    repeat: usize,
}

fn args() -> Args {
    let mut args = Args { events: 500_000, keys: 10_000, repeat: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match arg.as_str() {
            "--events" => args.events = value(),
            "--keys" => args.keys = value(),
            "--repeat" => args.repeat = value(),
            _ => {} // cargo bench passes `--bench`
        }
    }
    args
}

fn changelog(events: usize, keys: usize) -> String {
    let mut state = 0x5eed_u64;
    let mut seqs = vec![0u64; keys];
    let mut text = String::with_capacity(events * 48);
    for _ in 0..events {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = ((state >> 33) % keys as u64) as usize;
        seqs[key] += 1;
        text += &format!(
            "{{\"op\":\"upsert\",\"row\":{{\"id\":\"k{key}\",\"seq\":{},\"v\":\"x{}\"}}}}\n",
            seqs[key],
            state % 1000
        );
    }
    text
}

/// A fresh host directory with the changelog and one event pipeline.
fn host_dir(changelog: &Path, lanes: usize) -> tempfile::TempDir {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    let dir = tempfile::tempdir().unwrap();
    prepare_host_dir(dir.path(), &["tenants", "in", "out"]).unwrap();
    std::fs::hard_link(changelog, dir.path().join("in/changes.jsonl"))
        .or_else(|_| std::fs::copy(changelog, dir.path().join("in/changes.jsonl")).map(|_| ()))
        .unwrap();
    std::fs::write(dir.path().join("synchost.toml"), "state_dir = \"state\"\n").unwrap();
    let tenant = format!(
        r#"[plugins.src]
path = "{}"
sha256 = "{}"
dirs = [{{ host = "../in", guest = "/in" }}]
config = {{ changelog = "/in/changes.jsonl", key = "id" }}

[plugins.map]
path = "{}"
sha256 = "{}"
config = {{ fields = [{{ name = "id", from = "id" }}, {{ name = "seq", from = "seq" }}, {{ name = "v", from = "v" }}] }}

[plugins.dst]
path = "{}"
sha256 = "{}"
dirs = [{{ host = "../out", guest = "/out", write = true }}]
config = {{ dir = "/out", shards = {SHARDS} }}

[pipelines.main]
mode = "event"
source = "src"
transforms = ["map"]
destination = "dst"
max_batch = {MAX_BATCH}
apply_batch = {MAX_BATCH}
lanes = {lanes}
"#,
        FILE_SOURCE.file_name,
        digest(FILE_SOURCE.bytes),
        FIELD_MAPPER.file_name,
        digest(FIELD_MAPPER.bytes),
        FILE_DESTINATION.file_name,
        digest(FILE_DESTINATION.bytes),
    );
    std::fs::write(dir.path().join("tenants/bench.toml"), tenant).unwrap();
    dir
}

/// One end-to-end sync: seconds, commit share, operations applied, and the
/// per-batch phases summed over the run (read, transform, apply, commit, in ms;
/// reading and transforming overlap the previous batch's apply).
struct Run {
    seconds: f64,
    commit_share: f64,
    applied: u64,
    phases: [f64; 4],
}

fn end_to_end(changelog: &Path, lanes: usize, events: usize) -> Run {
    let dir = host_dir(changelog, lanes);
    let runtime = Runtime::load(&dir.path().join("synchost.toml"), Tenants::All).expect("the bench config loads");
    let stop = AtomicBool::new(false);
    let id = PipelineId::new("bench", "main");
    let job = runtime.job(&id, &stop, SyncOptions::default()).unwrap();
    let started = Instant::now();
    let report = job.run().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(report.error.is_none(), "the sync failed: {:?}", report.error);
    assert_eq!(report.stats.read as usize, events, "every event was read");
    let batches = runtime.state.batches(report.run).unwrap();
    let commit: f64 = batches.iter().filter_map(|b| b.commit_ms).sum();
    let sum = |f: fn(&synchost::state::BatchStats) -> f64| batches.iter().map(f).sum::<f64>();
    Run {
        seconds,
        // Batches run back to back (the next one read while this one
        // applies), so the time per batch is the wall time over the batches.
        commit_share: commit / (seconds * 1000.0),
        applied: report.stats.upserted,
        phases: [sum(|b| b.read_ms), sum(|b| b.transform_ms), sum(|b| b.apply_ms), commit],
    }
}

/// The source's `events` calls alone, and with the transform, over the whole changelog.
fn baselines(changelog: &Path, events: usize) -> (f64, f64) {
    let dir = host_dir(changelog, 1);
    let runtime = Runtime::load(&dir.path().join("synchost.toml"), Tenants::All).unwrap();
    let tenant = runtime.tenant("bench").unwrap();
    let compile = |name: &str| {
        let plugin = &tenant.config.plugins[name];
        let bytes = std::fs::read(&plugin.path).unwrap();
        (runtime.engine.compile(name, &bytes).unwrap(), PluginSetup::from_config("bench", plugin))
    };
    let (src, src_setup) = compile("src");
    let (map, map_setup) = compile("map");
    let mut timings = [0.0; 2];
    for (i, with_transform) in [false, true].into_iter().enumerate() {
        let mut source = SourceInstance::new(&runtime.engine, &src, &src_setup).unwrap();
        let mut transform = TransformInstance::new(&runtime.engine, &map, &map_setup).unwrap();
        let started = Instant::now();
        let (mut cursor, mut read) = (None::<String>, 0);
        loop {
            let batch = source.events(cursor.as_deref(), MAX_BATCH).unwrap();
            if batch.events.is_empty() {
                break;
            }
            read += batch.events.len();
            if with_transform {
                let rows: Vec<_> = batch
                    .events
                    .into_iter()
                    .filter_map(|e| match e.change {
                        Change::Upsert(row) => Some(row),
                        Change::Delete(_) => None,
                    })
                    .collect();
                transform.transform(&Table::from_rows(batch.columns, &rows)).unwrap();
            }
            cursor = Some(batch.cursor);
        }
        assert_eq!(read, events);
        timings[i] = started.elapsed().as_secs_f64();
    }
    (timings[0], timings[1])
}

fn main() {
    let args = args();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("changes.jsonl");
    let text = changelog(args.events, args.keys);
    std::fs::write(&path, &text).unwrap();
    println!(
        "event sync: {} upsert events ({:.1} MB) over {} keys, max_batch {MAX_BATCH}, {SHARDS} shards, median of {}",
        args.events,
        text.len() as f64 / 1e6,
        args.keys,
        args.repeat
    );
    drop(text);

    let (mut read, mut transformed) = (Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let (r, t) = baselines(&path, args.events);
        read.push(r);
        transformed.push(t);
    }
    let read = median(read);
    let transformed = median(transformed);
    let rate = |seconds: f64| args.events as f64 / seconds;
    println!("{:<28} {:>10.3} s {:>12.0} events/s", "baseline: source read", read, rate(read));
    println!("{:<28} {:>10.3} s {:>12.0} events/s", "baseline: source + transform", transformed, rate(transformed));
    for lanes in [1, 2, 4, 8] {
        let mut runs: Vec<Run> = (0..args.repeat).map(|_| end_to_end(&path, lanes, args.events)).collect();
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let middle = &runs[runs.len() / 2];
        let (seconds, share, applied) = (middle.seconds, middle.commit_share, middle.applied);
        println!(
            "{:<28} {:>10.3} s {:>12.0} events/s  commit {:>5.1}% of batch time  {} ops applied  {:.2}x source-read time  {:.2}x source+transform time",
            format!("end to end, {lanes} lane(s)"),
            seconds,
            rate(seconds),
            share * 100.0,
            applied,
            seconds / read,
            seconds / transformed,
        );
        let [read_ms, transform_ms, apply_ms, commit_ms] = middle.phases;
        println!(
            "{:<28} phases of the median run: read {read_ms:.0} ms, transform {transform_ms:.0} ms (beside \
             the apply), apply {apply_ms:.0} ms, commit {commit_ms:.0} ms",
            ""
        );
    }
}
