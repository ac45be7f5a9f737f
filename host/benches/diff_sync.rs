//! Whole diff syncs, planned and applied: a first load of 1,000,000 rows into
//! an empty file destination, a sync after 1% of the source changed, and a
//! sync after nothing did, through the wasm file source, field-mapper
//! transform and file destination, with the run archive written as always.
//!
//! The baseline, measured in the same run just before each sync on the same
//! data: the plan alone (`synchost plan`: both snapshots read, the transform
//! run, the diff made, nothing written). A sync's apply is the part above it,
//! so the ratio says what applying (and archiving) adds to planning. Medians
//! of `--repeat` rounds (default 3), each from an empty destination.
//!
//! Run: `cargo bench -p synchost --bench diff_sync` (`-- --rows N --repeat N
//! --apply-batch N`; without `--apply-batch`, the pipeline leaves it unset and
//! its batches grow while the destination answers quickly).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

mod common;
use common::students::{MAPPER_FIELDS, write_source};
use common::{digest, median, prepare_host_dir};

// The allocator the `synchost` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A host directory whose tenant `bench` diffs the CSV into `data/out`, with
/// `apply_batch` set when given (else the pipeline's default).
fn write_host(dir: &Path, apply_batch: Option<u32>) -> std::io::Result<PathBuf> {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    prepare_host_dir(dir, &["tenants", "data/in", "data/out"])?;
    std::fs::write(
        dir.join("synchost.toml"),
        "state_dir = \"state\"\n[limits]\nmemory = \"1 GiB\"\ncall_timeout = \"60s\"\n",
    )?;
    std::fs::write(
        dir.join("tenants/bench.toml"),
        format!(
            r#"[plugins.src]
path = "{}"
sha256 = "{}"
dirs = [{{ host = "../data/in", guest = "/in" }}]
config = {{ snapshot = "/in/students.csv", key = "student_id", page_size = 10000 }}

[plugins.map]
path = "{}"
sha256 = "{}"
config = {{ fields = {MAPPER_FIELDS} }}

[plugins.dst]
path = "{}"
sha256 = "{}"
dirs = [{{ host = "../data/out", guest = "/out", write = true }}]
config = {{ dir = "/out", page_size = 10000 }}

[pipelines.roster]
mode = "diff"
source = "src"
transforms = ["map"]
destination = "dst"
{apply_batch}
"#,
            FILE_SOURCE.file_name,
            digest(FILE_SOURCE.bytes),
            FIELD_MAPPER.file_name,
            digest(FIELD_MAPPER.bytes),
            FILE_DESTINATION.file_name,
            digest(FILE_DESTINATION.bytes),
            apply_batch = apply_batch.map(|n| format!("apply_batch = {n}")).unwrap_or_default(),
        ),
    )?;
    Ok(dir.join("synchost.toml"))
}

/// Seconds for the plan alone, then for the whole sync, of one step.
struct Step {
    plan: f64,
    sync: f64,
}

/// Plans, then syncs, checking that the sync did what the plan said.
fn step(runtime: &Runtime, expected: (u64, u64, u64)) -> Step {
    let id = PipelineId { tenant: "bench".into(), pipeline: "roster".into() };
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let preview = runtime.job(&id, &stop, SyncOptions::default()).expect("job").preview().expect("plan");
    let plan = started.elapsed().as_secs_f64();
    let planned = (preview.plan.creates.len() as u64, preview.plan.updates.len() as u64, preview.plan.unchanged);
    assert_eq!(planned, expected, "the plan's creates, updates and unchanged");
    drop(preview);
    let started = Instant::now();
    let report = runtime.job(&id, &stop, SyncOptions::default()).expect("job").run().expect("sync");
    let sync = started.elapsed().as_secs_f64();
    assert_eq!(report.status.to_string(), "succeeded", "{:?}", report.error);
    let s = &report.stats;
    // Where the sync's time went, as the run record keeps it.
    eprintln!("  sync phases (ms): {:?}", s.timings_ms);
    assert_eq!((s.created, s.updated, s.unchanged), expected, "the sync's creates, updates and unchanged");
    Step { plan, sync }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let rows: u64 = flag("--rows").map_or(1_000_000, |r| r.parse().expect("--rows N"));
    let repeat: usize = flag("--repeat").map_or(3, |r| r.parse().expect("--repeat N"));
    let apply_batch: Option<u32> = flag("--apply-batch").map(|r| r.parse().expect("--apply-batch N"));
    let changed = rows / 100;

    let mut steps: [Vec<Step>; 3] = Default::default();
    for round in 1..=repeat {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_host(dir.path(), apply_batch).expect("host directory");
        let csv = dir.path().join("data/in/students.csv");
        write_source(&csv, rows, None).expect("source");
        let runtime = Runtime::load(&config, Tenants::All).expect("the bench tenant loads");
        let first = step(&runtime, (rows, 0, 0));
        write_source(&csv, rows, Some(100)).expect("source");
        let change = step(&runtime, (0, changed, rows - changed));
        let idle = step(&runtime, (0, 0, rows));
        eprintln!(
            "round {round}: first load {:.2} s (plan {:.2} s), 1% change {:.2} s (plan {:.2} s), no change {:.2} s (plan {:.2} s)",
            first.sync, first.plan, change.sync, change.plan, idle.sync, idle.plan
        );
        for (all, one) in steps.iter_mut().zip([first, change, idle]) {
            all.push(one);
        }
    }

    println!("diff sync of {rows} rows into the file destination, medians of {repeat}:");
    println!("{:<14} {:>10} {:>10} {:>12} {:>10}", "sync", "plan s", "sync s", "sync / plan", "rows/s");
    for (name, all) in ["first load", "1% change", "no change"].iter().zip(&steps) {
        let plan = median(all.iter().map(|s| s.plan).collect());
        let sync = median(all.iter().map(|s| s.sync).collect());
        let ratio = median(all.iter().map(|s| s.sync / s.plan).collect());
        println!("{name:<14} {plan:>10.2} {sync:>10.2} {ratio:>11.2}x {:>10.0}", rows as f64 / sync);
    }
}
