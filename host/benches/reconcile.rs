//! Reconciling an event pipeline against its source's snapshot, next to a
//! plain diff sync of the same data: 1,000,000 students (CSV, through the
//! field mapper) in the file destination, of which 0.1% drifted behind the
//! stream's back (scores changed in the snapshot with no event), while events
//! keep arriving on the changelog.
//!
//! Per round, from the same state: the diff pipeline's sync (plan + apply of
//! the 1,000 updates) is the baseline; then the event pipeline, driven the
//! way the daemon drives it (an event run every 50 ms, a writer appending 200
//! events a second), reconciles once between two event runs. The ratio is
//! the reconciliation's time over the diff sync's. The longest pause is the
//! longest time between two event runs that applied events, which spans the
//! reconciliation: events wait while it holds the pipeline's lease. Medians
//! of `--repeat` rounds (default 3).
//!
//! Run: `cargo bench -p synchost --bench reconcile` (`-- --rows N --repeat N`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

mod common;
use common::students::{HEADER, MAPPER_FIELDS, student, write_source};
use common::{digest, median, prepare_host_dir};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A host whose tenant `bench` has the diff pipeline `roster` (into
/// `data/out/diff`) and the event pipeline `stream` (changelog and snapshot,
/// into `data/out/event`), both from the same CSV.
fn write_host(dir: &Path) -> std::io::Result<PathBuf> {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    prepare_host_dir(dir, &["tenants", "data/in", "data/out/diff", "data/out/event"])?;
    std::fs::write(dir.join("data/in/changes.jsonl"), "")?;
    std::fs::write(
        dir.join("synchost.toml"),
        "state_dir = \"state\"\n[limits]\nmemory = \"1 GiB\"\ncall_timeout = \"60s\"\n",
    )?;
    let (src, map, dst) = (FILE_SOURCE, FIELD_MAPPER, FILE_DESTINATION);
    let plugin = |name: &str, bundled: &synchost::bundled::BundledPlugin, dirs: &str, config: &str| {
        format!(
            "[plugins.{name}]\npath = \"{}\"\nsha256 = \"{}\"\ndirs = [{dirs}]\nconfig = {config}\n\n",
            bundled.file_name,
            digest(bundled.bytes)
        )
    };
    let source =
        r#"{ snapshot = "/in/students.csv", changelog = "/in/changes.jsonl", key = "student_id", page_size = 10000 }"#;
    let tenant = [
        plugin("src", &src, r#"{ host = "../data/in", guest = "/in" }"#, source),
        plugin("map", &map, "", &format!("{{ fields = {MAPPER_FIELDS} }}")),
        plugin(
            "diff_dst",
            &dst,
            r#"{ host = "../data/out/diff", guest = "/out", write = true }"#,
            r#"{ dir = "/out", page_size = 10000 }"#,
        ),
        plugin(
            "event_dst",
            &dst,
            r#"{ host = "../data/out/event", guest = "/out", write = true }"#,
            r#"{ dir = "/out", page_size = 10000 }"#,
        ),
        "[pipelines.roster]\nmode = \"diff\"\nsource = \"src\"\ntransforms = [\"map\"]\ndestination = \"diff_dst\"\n\n"
            .into(),
        "[pipelines.stream]\nmode = \"event\"\nsource = \"src\"\ntransforms = [\"map\"]\ndestination = \"event_dst\"\n\
         reconcile = \"manual\"\nmax_change_ratio = 0.5\n"
            .into(),
    ]
    .concat();
    std::fs::write(dir.join("tenants/bench.toml"), tenant)?;
    Ok(dir.join("synchost.toml"))
}

/// Appends `n` upserts of students as the snapshot has them (none of those
/// that drift), to the changelog.
fn append_events(changelog: &Path, from: u64, n: u64, rows: u64) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).open(changelog)?;
    let mut lines = String::new();
    for i in from..from + n {
        let id = 1 + i * 7919 % rows;
        if id.is_multiple_of(DRIFT_EVERY) {
            continue;
        }
        let fields = HEADER.split(',').zip(student(id, false));
        let row: serde_json::Map<String, serde_json::Value> =
            fields.map(|(name, value)| (name.to_string(), value.into())).collect();
        lines += &format!("{}\n", serde_json::json!({ "op": "upsert", "row": row }));
    }
    file.write_all(lines.as_bytes())
}

/// One student in this many drifts between rounds: 0.1%.
const DRIFT_EVERY: u64 = 1000;

struct Round {
    diff: f64,
    reconcile: f64,
    pause: f64,
    repaired: u64,
    left: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let rows: u64 = flag("--rows").map_or(1_000_000, |r| r.parse().expect("--rows N"));
    let repeat: usize = flag("--repeat").map_or(3, |r| r.parse().expect("--repeat N"));

    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_host(dir.path()).expect("host directory");
    let csv = dir.path().join("data/in/students.csv");
    let changelog = dir.path().join("data/in/changes.jsonl");
    write_source(&csv, rows, None).expect("source");
    let runtime = Runtime::load(&config, Tenants::All).expect("the bench tenant loads");
    let stop = AtomicBool::new(false);
    let roster = PipelineId::new("bench", "roster");
    let stream = PipelineId::new("bench", "stream");
    let job = |id: &PipelineId| runtime.job(id, &stop, SyncOptions::default()).expect("job");
    // Both destinations loaded: the diff one by a first load, the event one
    // by a first reconciliation.
    let started = Instant::now();
    assert_eq!(job(&roster).run().expect("load").stats.created, rows);
    let loaded = job(&stream).reconcile().expect("load");
    assert_eq!(loaded.stats.created, rows, "{:?}", loaded.error);
    eprintln!("loaded both destinations in {:.1} s", started.elapsed().as_secs_f64());

    let mut rounds = Vec::new();
    let mut appended = 0u64;
    for round in 1..=repeat {
        // 0.1% drifted, a different 0.1% each round (scores changed, then set back).
        let every = if round % 2 == 1 { Some(DRIFT_EVERY) } else { None };
        write_source(&csv, rows, every).expect("source");

        let started = Instant::now();
        let report = job(&roster).run().expect("diff sync");
        let diff = started.elapsed().as_secs_f64();
        assert_eq!(report.stats.updated, rows / DRIFT_EVERY, "{:?}", report.error);

        // The event pipeline, as the daemon drives it: event runs every
        // 50 ms, with a writer appending events, and one reconciliation.
        let writing = AtomicBool::new(true);
        let (reconcile, pause, report) = std::thread::scope(|scope| {
            scope.spawn(|| {
                while writing.load(Ordering::Relaxed) {
                    append_events(&changelog, appended, 10, rows).expect("append events");
                    appended += 10;
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let mut last_applied = Instant::now();
            let mut longest = Duration::ZERO;
            let mut reconciled = None;
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(2) || reconciled.is_none() {
                if reconciled.is_none() && began.elapsed() > Duration::from_millis(500) {
                    let started = Instant::now();
                    let report = job(&stream).reconcile().expect("reconcile");
                    reconciled = Some((started.elapsed().as_secs_f64(), report));
                }
                let report = job(&stream).run().expect("event run");
                if report.stats.read > 0 {
                    longest = longest.max(last_applied.elapsed());
                    last_applied = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            writing.store(false, Ordering::Relaxed);
            let (seconds, report) = reconciled.expect("reconciled");
            (seconds, longest.as_secs_f64(), report)
        });
        let drift = report.stats.drift.clone().expect("a reconciliation reports its drift");
        assert_eq!(report.status.to_string(), "succeeded", "{:?}", report.error);
        assert_eq!(drift.different, rows / DRIFT_EVERY, "{drift:?}");
        eprintln!(
            "round {round}: diff sync {diff:.2} s, reconciliation {reconcile:.2} s ({:.2}x), longest pause of \
             events {pause:.2} s; repaired {}, left to the stream {}, {} events between the watermarks",
            reconcile / diff,
            drift.repaired,
            drift.left_to_stream,
            drift.events_between
        );
        rounds.push(Round { diff, reconcile, pause, repaired: drift.repaired, left: drift.left_to_stream });
    }

    let med = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    println!("reconciling {rows} rows with 0.1% drift while events flow, medians of {repeat}:");
    println!("  diff sync of the same data (plan + apply)  {:>8.2} s", med(|r| r.diff));
    println!("  reconciliation                             {:>8.2} s", med(|r| r.reconcile));
    println!("  reconciliation / diff sync                 {:>8.2}x", med(|r| r.reconcile / r.diff));
    println!("  longest pause of events                    {:>8.2} s", med(|r| r.pause));
    println!("  repaired {}, left to the stream {} (median)", med(|r| r.repaired as f64), med(|r| r.left as f64));
}
