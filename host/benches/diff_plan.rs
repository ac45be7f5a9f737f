//! Diff planning at scale: 1,000,000 source rows against 1,000,000 destination
//! records of 10 fields, 1% of them different, planned end to end through the
//! wasm file source, field-mapper transform and file destination snapshot.
//!
//! Baselines measured in the same run, each variant in its own process (for
//! its peak RSS) and repeated, medians reported:
//! - `native`: the same files read (both at once, as the host does), the same
//!   transform and the same planner, all in native Rust (no wasm anywhere);
//! - `diff-only`: the host's in-memory diff alone, over rows already in memory;
//! - `duckdb`: the anchor a data engineer would use, DuckDB (from PyPI, pinned,
//!   installed into a virtual environment under the target directory on first
//!   use) on two threads reading the same CSV and shards, computing the same
//!   username and counting creates, updates and deletes with one FULL OUTER
//!   JOIN (`duckdb_plan.py`). Its time, like the others', leaves out the
//!   process start (the interpreter and the import; for synchost, loading the
//!   runtime).
//!
//! Run: `cargo bench -p synchost --bench diff_plan` (`-- --rows N --repeat N` to change the size).
//! Profile one variant: `-- --data DIR --repeat 1`, then `BENCH_BINARY --variant wasm --dir DIR`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use synchost::config::DiffPolicy;
use synchost::model::Table;
use synchost::model::{TableBuilder, ValueRef};
use synchost::sync::diff::{DestinationIndex, HashedRows, Plan, Planner};
use synchost::{Runtime, SyncOptions, Tenants};

mod common;
use common::students::{HEADER, MAPPER_FIELDS, student};
use common::{digest, median, prepare_host_dir};

// The allocator the `synchost` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHARDS: u64 = 16;

const OUTPUT_COLUMNS: [&str; 10] =
    ["sis_id", "given_name", "family_name", "email", "grade", "school", "city", "status", "score", "username"];

/// The computed field of [`native_transform`].
fn username(cells: &[&str]) -> String {
    let first: String = cells[1].to_lowercase().chars().take(1).collect();
    format!("{first}{}{}", cells[2].to_lowercase(), cells[0])
}

/// The same transform in native Rust: one source row (10 text cells) to one
/// output row (the first nine fields copied, then the username).
fn native_transform(cells: &[&str]) -> [String; 10] {
    [
        cells[0].to_string(),
        cells[1].to_string(),
        cells[2].to_string(),
        cells[3].to_string(),
        cells[4].to_string(),
        cells[5].to_string(),
        cells[6].to_string(),
        cells[7].to_string(),
        cells[8].to_string(),
        username(cells),
    ]
}

fn shard_of(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)) % SHARDS
}

/// Writes the source CSV and the destination shards: the destination is the
/// transformed source but for 0.5% updated, 0.25% missing (creates) and 0.25%
/// extra records (deletes).
fn generate(dir: &Path, rows: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("data/in"))?;
    std::fs::create_dir_all(dir.join("data/out"))?;
    let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.join("data/in/students.csv"))?);
    writeln!(csv, "{}", HEADER)?;
    let mut shards: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); SHARDS as usize];
    let record = |key: &str, values: &[String]| {
        let fields: serde_json::Map<String, serde_json::Value> =
            OUTPUT_COLUMNS.iter().zip(values).map(|(c, v)| (c.to_string(), v.clone().into())).collect();
        serde_json::json!({ "key": key, "fields": fields }).to_string()
    };
    for i in 1..=rows {
        let cells = student(i, false);
        writeln!(csv, "{}", cells.join(","))?;
        if i % 400 == 0 {
            continue;
        }
        let mut out = native_transform(&cells.iter().map(String::as_str).collect::<Vec<_>>());
        if i % 200 == 1 {
            out[8] = "changed".into();
        }
        let key = i.to_string();
        shards[shard_of(&key) as usize].insert(key.clone(), record(&key, &out));
    }
    for k in 0..rows / 400 {
        let key = (10 * rows + k).to_string();
        let cells = student(10 * rows + k, false);
        let out = native_transform(&cells.iter().map(String::as_str).collect::<Vec<_>>());
        shards[shard_of(&key) as usize].insert(key.clone(), record(&key, &out));
    }
    csv.flush()?;
    std::fs::write(dir.join("data/out/layout.json"), format!("{{\"shards\":{SHARDS}}}"))?;
    for (n, shard) in shards.iter().enumerate() {
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("data/out/shard-{n:03}.jsonl")))?);
        for line in shard.values() {
            writeln!(file, "{line}")?;
        }
    }
    Ok(())
}

fn write_config(dir: &Path) -> std::io::Result<PathBuf> {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    prepare_host_dir(dir, &["tenants"])?;
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
dirs = [{{ host = "../data/out", guest = "/out" }}]
config = {{ dir = "/out", page_size = 10000 }}

[pipelines.roster]
mode = "diff"
source = "src"
transforms = ["map"]
destination = "dst"
"#,
            FILE_SOURCE.file_name,
            digest(FILE_SOURCE.bytes),
            FIELD_MAPPER.file_name,
            digest(FIELD_MAPPER.bytes),
            FILE_DESTINATION.file_name,
            digest(FILE_DESTINATION.bytes),
        ),
    )?;
    Ok(dir.join("synchost.toml"))
}

/// Rows per page, as the bench tenant's plugins are configured.
const PAGE_ROWS: usize = 10_000;

/// Collects rows of text into tables of [`PAGE_ROWS`], as the plugins page them.
struct Pages {
    done: Vec<Table>,
    building: TableBuilder,
}

impl Pages {
    fn new() -> Pages {
        Pages { done: Vec::new(), building: Pages::builder() }
    }

    fn builder() -> TableBuilder {
        TableBuilder::new(OUTPUT_COLUMNS.iter().map(|c| c.to_string()).collect())
    }

    fn push<'a>(&mut self, key: &str, values: impl IntoIterator<Item = &'a str>) {
        self.building.push_row(key, values.into_iter().map(ValueRef::Text));
        if self.building.len() == PAGE_ROWS {
            self.done.push(std::mem::replace(&mut self.building, Pages::builder()).finish());
        }
    }

    fn finish(mut self) -> Vec<Table> {
        if !self.building.is_empty() {
            self.done.push(self.building.finish());
        }
        self.done
    }
}

/// One destination record, its text borrowed from the line as the wasm
/// destination reads it (all the bench's values are text).
#[derive(serde::Deserialize)]
struct NativeRecord<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    fields: BTreeMap<&'a str, std::borrow::Cow<'a, str>>,
}

/// The destination, read natively into pages (what the wasm destination's snapshot returns).
fn native_destination(dir: &Path) -> Vec<Table> {
    let mut pages = Pages::new();
    for n in 0..SHARDS {
        let text = std::fs::read_to_string(dir.join(format!("data/out/shard-{n:03}.jsonl"))).unwrap();
        for line in text.lines() {
            let record: NativeRecord<'_> = serde_json::from_str(line).unwrap();
            pages.push(&record.key, OUTPUT_COLUMNS.iter().map(|c| &*record.fields[c]));
        }
    }
    pages.finish()
}

/// The source, read and transformed natively.
fn native_desired(dir: &Path) -> Vec<Table> {
    let mut reader = csv::Reader::from_path(dir.join("data/in/students.csv")).unwrap();
    let mut record = csv::StringRecord::new();
    let mut pages = Pages::new();
    while reader.read_record(&mut record).unwrap() {
        let cells: Vec<&str> = record.iter().collect();
        let username = username(&cells);
        pages.push(cells[0], cells[..9].iter().copied().chain([username.as_str()]));
    }
    pages.finish()
}

fn diff(destination: Vec<Table>, desired: Vec<Table>) -> Plan {
    let columns: Vec<String> = OUTPUT_COLUMNS.iter().map(|c| c.to_string()).collect();
    let policy = DiffPolicy::default();
    let mut index = DestinationIndex::new(&columns);
    for page in &destination {
        index.add_page(page).unwrap();
    }
    let mut planner = Planner::new(index, &policy).unwrap();
    for page in desired {
        planner.add(&HashedRows::new(&columns, page).unwrap()).unwrap();
    }
    planner.finish(&policy, None)
}

/// User plus system CPU time of this process so far (Linux, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// One measurement, in this process; prints one JSON line.
fn variant(name: &str, dir: &Path) {
    let (seconds, plan) = match name {
        "wasm" => {
            let runtime = Runtime::load(&dir.join("synchost.toml"), Tenants::Only("bench")).unwrap();
            let stop = AtomicBool::new(false);
            let id = synchost::PipelineId::new("bench", "roster");
            let job = runtime.job(&id, &stop, SyncOptions::default()).unwrap();
            let started = Instant::now();
            let preview = job.preview().unwrap();
            (started.elapsed().as_secs_f64(), preview.plan)
        }
        // Where the time of `wasm` goes: each plugin's part alone.
        "wasm-source" | "wasm-source+transform" | "wasm-destination" => {
            use synchost::plugin::{DestinationInstance, PluginSetup, SourceInstance, TransformInstance};
            let runtime = Runtime::load(&dir.join("synchost.toml"), Tenants::Only("bench")).unwrap();
            let tenant = runtime.tenant("bench").unwrap();
            let plugins = &tenant.plugins;
            let setup = |name: &str| PluginSetup::from_config("bench", &tenant.config.plugins[name]);
            let started = Instant::now();
            let mut rows = 0u64;
            let mut token: Option<String> = None;
            if name == "wasm-destination" {
                let mut destination =
                    DestinationInstance::new(&runtime.engine, &plugins["dst"], &setup("dst")).unwrap();
                loop {
                    let page = destination.snapshot(token.as_deref()).unwrap();
                    rows += page.rows.len() as u64;
                    token = page.next;
                    if token.is_none() {
                        break;
                    }
                }
            } else {
                let mut source = SourceInstance::new(&runtime.engine, &plugins["src"], &setup("src")).unwrap();
                let mut transform = TransformInstance::new(&runtime.engine, &plugins["map"], &setup("map")).unwrap();
                loop {
                    let page = source.snapshot(token.as_deref()).unwrap();
                    rows += page.rows.len() as u64;
                    token = page.next;
                    if name == "wasm-source+transform" {
                        transform.transform(&page.rows).unwrap();
                    }
                    if token.is_none() {
                        break;
                    }
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({ "seconds": seconds, "cpu_seconds": cpu_seconds(), "peak_rss_mib": peak_rss_mib(), "rows": rows })
            );
            return;
        }
        "native" => {
            // Both sides read at once, as the host reads them through wasm.
            let started = Instant::now();
            let (destination, desired) = std::thread::scope(|scope| {
                let destination = scope.spawn(|| native_destination(dir));
                let desired = native_desired(dir);
                (destination.join().unwrap(), desired)
            });
            let plan = diff(destination, desired);
            (started.elapsed().as_secs_f64(), plan)
        }
        "diff-only" => {
            let destination = native_destination(dir);
            let desired = native_desired(dir);
            let started = Instant::now();
            let plan = diff(destination, desired);
            (started.elapsed().as_secs_f64(), plan)
        }
        other => panic!("unknown variant {other}"),
    };
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "cpu_seconds": cpu_seconds(),
            "peak_rss_mib": peak_rss_mib(),
            "rows": plan.desired_rows,
            "creates": plan.creates.len(),
            "updates": plan.updates.len(),
            "deletes": plan.deletes.len(),
        })
    );
}

/// The DuckDB the `duckdb` variant runs, from PyPI.
const DUCKDB_VERSION: &str = "2.0.1";

/// A Python with [`DUCKDB_VERSION`] installed: a virtual environment under
/// the target directory, made on first use.
fn duckdb_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("duckdb-{DUCKDB_VERSION}"));
    let python = venv.join("bin/python");
    let check = format!("import duckdb, sys; sys.exit(duckdb.__version__ != '{DUCKDB_VERSION}')");
    if Command::new(&python).args(["-c", &check]).status().is_ok_and(|s| s.success()) {
        return python;
    }
    eprintln!("installing DuckDB {DUCKDB_VERSION} from PyPI into {}", venv.display());
    let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "`python3 -m venv {}` failed: the duckdb variant needs Python 3",
        venv.display()
    );
    let installed =
        Command::new(venv.join("bin/pip")).args(["install", "--quiet", &format!("duckdb=={DUCKDB_VERSION}")]).status();
    assert!(installed.is_ok_and(|s| s.success()), "installing duckdb=={DUCKDB_VERSION} from PyPI failed");
    python
}

/// What the runs of one variant measured.
#[derive(Default)]
struct Samples {
    seconds: Vec<f64>,
    rss: Vec<f64>,
    cpu: Vec<f64>,
    /// The last run's whole report (the plan's counts).
    last: serde_json::Value,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let (Some(name), Some(dir)) = (flag("--variant"), flag("--dir")) {
        variant(&name, Path::new(&dir));
        return;
    }
    let rows: u64 = flag("--rows").map_or(1_000_000, |r| r.parse().expect("--rows N"));
    let repeat: usize = flag("--repeat").map_or(3, |r| r.parse().expect("--repeat N"));

    // `--data DIR` keeps the generated data there (to profile one variant with
    // `--variant wasm --dir DIR`); by default it lives in a temporary directory.
    let temporary = tempfile::tempdir().unwrap();
    let dir = flag("--data").map_or_else(|| temporary.path().to_path_buf(), PathBuf::from);
    let dir = dir.as_path();
    let started = Instant::now();
    generate(dir, rows).unwrap();
    write_config(dir).unwrap();
    eprintln!(
        "generated {rows} source rows and {} destination records in {:.1}s",
        rows,
        started.elapsed().as_secs_f64()
    );

    let exe = std::env::current_exe().unwrap();
    let python = duckdb_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_plan.py");
    let mut results: BTreeMap<&str, Samples> = BTreeMap::new();
    for _ in 0..repeat {
        for name in ["wasm", "native", "diff-only", "duckdb"] {
            let output = match name {
                "duckdb" => Command::new(&python).arg(script).arg(dir).output().unwrap(),
                _ => Command::new(&exe).args(["--variant", name, "--dir"]).arg(dir).output().unwrap(),
            };
            assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
            let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let entry = results.entry(name).or_default();
            entry.seconds.push(line["seconds"].as_f64().unwrap());
            entry.rss.push(line["peak_rss_mib"].as_f64().unwrap());
            entry.cpu.push(line["cpu_seconds"].as_f64().unwrap());
            entry.last = line;
        }
    }
    let plans: Vec<_> = results
        .values()
        .map(|r| (r.last["creates"].clone(), r.last["updates"].clone(), r.last["deletes"].clone()))
        .collect();
    assert!(plans.windows(2).all(|w| w[0] == w[1]), "the variants planned differently: {plans:?}");

    println!("diff plan, {rows} x {rows} rows of 10 fields, 1% changed; medians of {repeat} runs");
    println!("plan: {} creates, {} updates, {} deletes", plans[0].0, plans[0].1, plans[0].2);
    println!("{:<10} {:>9} {:>14} {:>14} {:>14}", "variant", "seconds", "rows/s", "peak RSS MiB", "process CPU s");
    let (mut medians, mut peaks) = (BTreeMap::new(), BTreeMap::new());
    for (name, samples) in &results {
        let (s, r, c) = (median(samples.seconds.clone()), median(samples.rss.clone()), median(samples.cpu.clone()));
        medians.insert(*name, s);
        peaks.insert(*name, r);
        println!("{name:<10} {s:>9.2} {:>14.0} {r:>14.0} {c:>14.2}", rows as f64 / s);
    }
    println!(
        "ratio wasm / native: {:.2}x; wasm / diff-only: {:.2}x; wasm / duckdb: {:.2}x (peak RSS {:.2}x)",
        medians["wasm"] / medians["native"],
        medians["wasm"] / medians["diff-only"],
        medians["wasm"] / medians["duckdb"],
        peaks["wasm"] / peaks["duckdb"]
    );
}
