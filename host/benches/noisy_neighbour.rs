//! Noisy neighbour: how much a tenant spinning at its CPU limit slows the
//! other tenants of the same host.
//!
//! `--tenants` well-behaved tenants (default 3) each run an event sync of
//! `--events` upserts (file source → field-mapper → file destination, one
//! lane) at the same time, in one process, as `synchost run` runs them. The
//! noisy tenant's transform is the hostile fixture's infinite loop under a
//! `call_timeout` of 1 s: it burns a full core for a second, is interrupted,
//! and is run again at once, for as long as the others are syncing.
//!
//! Measured in the same run: the others' aggregate throughput alone, and
//! beside the noisy tenant; the ratio is what the noisy tenant costs them.
//! Medians of `--repeat` rounds (default 3), each on fresh host directories.
//!
//! Run: `cargo bench -p synchost --bench noisy_neighbour` (`-- --tenants N
//! --events N --repeat N` to change the size).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

mod common;
use common::{digest, median};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOISY_CALL_TIMEOUT: &str = "1s";

struct Args {
    tenants: usize,
    events: usize,
    repeat: usize,
}

fn parse_args() -> Args {
    let mut parsed = Args { tenants: 3, events: 100_000, repeat: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match flag.as_str() {
            "--tenants" => parsed.tenants = number(),
            "--events" => parsed.events = number(),
            "--repeat" => parsed.repeat = number(),
            _ => {} // cargo bench passes `--bench`
        }
    }
    parsed
}

/// Writes a plugin into the host's plugin directory; returns its tenant-file entry start.
fn plugin_entry(dir: &Path, name: &str, file_name: &str, bytes: &[u8]) -> String {
    std::fs::write(dir.join("plugins").join(file_name), bytes).unwrap();
    format!("[plugins.{name}]\npath = \"{file_name}\"\nsha256 = \"{}\"\n", digest(bytes))
}

/// One host directory: the good tenants `t0..tN`, each with its own changelog
/// and destination, and, if `noisy`, the tenant `noisy`.
fn host_dir(args: &Args, noisy: bool) -> tempfile::TempDir {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    std::fs::create_dir_all(root.join("tenants")).unwrap();
    std::fs::write(root.join("synchost.toml"), "state_dir = \"state\"\n").unwrap();
    let mut changelog = String::with_capacity(args.events * 40);
    for i in 0..args.events {
        changelog += &format!("{{\"op\":\"upsert\",\"row\":{{\"id\":\"k{}\",\"n\":{i}}}}}\n", i % 5000);
    }
    let tenants = (0..args.tenants).map(|t| format!("t{t}")).chain(noisy.then(|| "noisy".to_string()));
    for tenant in tenants {
        let data = root.join("data").join(&tenant);
        std::fs::create_dir_all(data.join("in")).unwrap();
        std::fs::create_dir_all(data.join("out")).unwrap();
        let transform = if tenant == "noisy" {
            std::fs::write(data.join("in/changes.jsonl"), "{\"op\":\"upsert\",\"row\":{\"id\":\"a\",\"n\":1}}\n")
                .unwrap();
            let bytes = std::fs::read(Path::new(synchost::bundled::PLUGIN_DIR).join("hostile_transform.wasm"))
                .expect("the hostile fixture is built with the plugins");
            plugin_entry(root, "map", "hostile_transform.wasm", &bytes)
                + &format!("config = {{ attack = \"loop\" }}\nlimits = {{ call_timeout = \"{NOISY_CALL_TIMEOUT}\" }}\n")
        } else {
            std::fs::write(data.join("in/changes.jsonl"), &changelog).unwrap();
            plugin_entry(root, "map", FIELD_MAPPER.file_name, FIELD_MAPPER.bytes)
                + "config = { fields = [{ name = \"id\", from = \"id\" }, { name = \"n\", from = \"n\" }] }\n"
        };
        let tenant_file = format!(
            "{}dirs = [{{ host = \"../data/{tenant}/in\", guest = \"/in\" }}]\n\
             config = {{ changelog = \"/in/changes.jsonl\", key = \"id\" }}\n\n{transform}\n\
             {}dirs = [{{ host = \"../data/{tenant}/out\", guest = \"/out\", write = true }}]\n\
             config = {{ dir = \"/out\" }}\n\n\
             [pipelines.main]\nmode = \"event\"\nsource = \"src\"\ntransforms = [\"map\"]\ndestination = \"dst\"\n\
             max_batch = 20000\nlanes = 1\n",
            plugin_entry(root, "src", FILE_SOURCE.file_name, FILE_SOURCE.bytes),
            plugin_entry(root, "dst", FILE_DESTINATION.file_name, FILE_DESTINATION.bytes),
        );
        std::fs::write(root.join("tenants").join(format!("{tenant}.toml")), tenant_file).unwrap();
    }
    dir
}

/// One round: the good tenants' syncs side by side (and the noisy tenant's
/// over and over, if present). Returns the good tenants' events per second
/// and how many times the noisy tenant was interrupted.
fn round(args: &Args, noisy: bool) -> (f64, u64) {
    let dir = host_dir(args, noisy);
    let runtime = Runtime::load(&dir.path().join("synchost.toml"), Tenants::All).expect("the bench config loads");
    let stop = AtomicBool::new(false);
    let good_done = AtomicBool::new(false);
    let interrupted = AtomicU64::new(0);
    let started = Instant::now();
    let seconds = std::thread::scope(|scope| {
        if noisy {
            let (runtime, stop, good_done, interrupted) = (&runtime, &stop, &good_done, &interrupted);
            scope.spawn(move || {
                let job = runtime.job(&PipelineId::new("noisy", "main"), stop, SyncOptions::default()).unwrap();
                while !good_done.load(Ordering::Relaxed) {
                    let report = job.run().unwrap();
                    let error = report.error.unwrap_or_default();
                    assert!(error.contains("`call_timeout` limit"), "the noisy tenant failed otherwise: {error}");
                    interrupted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let good: Vec<_> = (0..args.tenants)
            .map(|t| {
                let (runtime, stop) = (&runtime, &stop);
                scope.spawn(move || {
                    let job = runtime.job(&PipelineId::new(&format!("t{t}"), "main"), stop, SyncOptions::default());
                    let report = job.unwrap().run().unwrap();
                    assert!(report.error.is_none(), "tenant t{t} failed: {:?}", report.error);
                    assert_eq!(report.stats.read as usize, args.events, "tenant t{t} read every event");
                })
            })
            .collect();
        for tenant in good {
            tenant.join().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        good_done.store(true, Ordering::Relaxed);
        seconds
    });
    ((args.tenants * args.events) as f64 / seconds, interrupted.load(Ordering::Relaxed))
}

fn main() {
    let args = parse_args();
    println!(
        "noisy neighbour: {} tenants x {} upsert events each, side by side; the noisy tenant spins at its \
         call_timeout of {NOISY_CALL_TIMEOUT}; median of {}",
        args.tenants, args.events, args.repeat
    );
    let (mut alone, mut beside, mut interruptions) = (Vec::new(), Vec::new(), Vec::new());
    // Alternate the two so that drift in the machine's speed hits both alike.
    for _ in 0..args.repeat {
        alone.push(round(&args, false).0);
        let (rate, interrupted) = round(&args, true);
        beside.push(rate);
        interruptions.push(interrupted as f64);
    }
    let (alone, beside) = (median(alone), median(beside));
    println!("{:<40} {:>12.0} events/s", "other tenants, alone", alone);
    println!(
        "{:<40} {:>12.0} events/s  (noisy tenant interrupted {} times per round)",
        "other tenants, beside the noisy tenant",
        beside,
        median(interruptions)
    );
    println!("{:<40} {:>12.2}x", "ratio (beside / alone)", beside / alone);
}
