//! Hot swap latency: the time from a tenant file changing to the new plugin
//! version being active in a running `synchost run`, with and without the
//! compiled-code cache.
//!
//! Each sample writes a new version of the transform (the bundled field
//! mapper with a distinct custom section: another sha256, the same code, so
//! the engine has never compiled it), points the tenant file at it with a
//! rename, and waits for the daemon's log line saying the tenant loaded it.
//! - without the cache: the daemon compiles the new version itself;
//! - with the cache: a `synchost validate` beside the daemon (sharing its
//!   state directory, and so its cache) compiled it first, as a deploy step
//!   that checks the new file would; the daemon loads the compiled code.
//!
//! Both include the watcher's 250 ms debounce (the daemon waits for the files
//! to be quiet that long); the last lines show it and what is left beside
//! it. Medians of `--repeat` samples (default 5). `HOT_SWAP_TRACE=1` prints
//! the daemon's log lines as they come, with their time into the sample.
//!
//! Run: `cargo bench -p synchost --bench hot_swap`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{digest, median, prepare_host_dir};

const BIN: &str = env!("CARGO_BIN_EXE_synchost");
/// The daemon waits this long for the files to settle (`daemon::watch::SETTLE`).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// The mapper with a custom section naming `version`: valid, never seen before.
fn mapper_version(version: usize) -> Vec<u8> {
    let name = format!("synchost-bench-{version}");
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    let mut bytes = synchost::bundled::FIELD_MAPPER.bytes.to_vec();
    bytes.push(0);
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

/// A tenant whose transform is `mapper` (a file in plugins/).
fn tenant_file(root: &Path, mapper: &str) -> String {
    use synchost::bundled::{FILE_DESTINATION, FILE_SOURCE};
    let mapper_digest = digest(&std::fs::read(root.join("plugins").join(mapper)).unwrap());
    format!(
        "[plugins.src]\npath = \"{}\"\nsha256 = \"{}\"\ndirs = [{{ host = \"../in\", guest = \"/in\" }}]\n\
         config = {{ changelog = \"/in/changes.jsonl\", key = \"id\" }}\n\n\
         [plugins.map]\npath = \"{mapper}\"\nsha256 = \"{mapper_digest}\"\n\
         config = {{ fields = [{{ name = \"id\", from = \"id\" }}] }}\n\n\
         [plugins.dst]\npath = \"{}\"\nsha256 = \"{}\"\ndirs = [{{ host = \"../out\", guest = \"/out\", write = true }}]\n\
         config = {{ dir = \"/out\" }}\n\n\
         [pipelines.main]\nmode = \"event\"\nsource = \"src\"\ntransforms = [\"map\"]\ndestination = \"dst\"\n\
         schedule = \"every 1s\"\n",
        FILE_SOURCE.file_name,
        digest(FILE_SOURCE.bytes),
        FILE_DESTINATION.file_name,
        digest(FILE_DESTINATION.bytes),
    )
}

/// Writes `text` as `dir/name` by renaming over it, as a deploy would.
fn install(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
    std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
}

fn main() {
    let repeat = std::env::args().skip_while(|a| a != "--repeat").nth(1).and_then(|n| n.parse().ok()).unwrap_or(5usize);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    prepare_host_dir(root, &["tenants", "prep-tenants", "in", "out"]).unwrap();
    std::fs::write(root.join("in/changes.jsonl"), "").unwrap();
    std::fs::write(root.join("synchost.toml"), "state_dir = \"state\"\n").unwrap();
    // The deploy step's view: same state (and cache), its own tenants folder.
    std::fs::write(root.join("prep.toml"), "state_dir = \"state\"\ntenants_dir = \"prep-tenants\"\n").unwrap();
    install(&root.join("tenants"), "bench.toml", &tenant_file(root, "field_mapper.wasm"));

    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(root.join("synchost.toml"))
        .arg("run")
        .env("SYNCHOST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every log line, with when it was read.
    let (lines_tx, lines) = mpsc::channel::<(Instant, String)>();
    let stderr = daemon.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str, since: Instant| -> f64 {
        loop {
            let (at, line) = lines.recv_timeout(Duration::from_secs(60)).expect("the daemon logged nothing for 60 s");
            if std::env::var_os("HOT_SWAP_TRACE").is_some() {
                eprintln!(
                    "{:>8.1} ms  {}",
                    at.saturating_duration_since(since).as_secs_f64() * 1000.0,
                    &line[..line.len().min(150)]
                );
            }
            if line.contains(needle) {
                return at.duration_since(since).as_secs_f64();
            }
        }
    };
    wait_for("synchost is running", Instant::now());

    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for sample in 0..repeat * 2 {
        let with_cache = sample % 2 == 1;
        let name = format!("mapper_{sample}.wasm");
        let bytes = mapper_version(sample);
        std::fs::write(root.join("plugins").join(&name), &bytes).unwrap();
        if with_cache {
            install(&root.join("prep-tenants"), "bench.toml", &tenant_file(root, &name));
            let validate =
                Command::new(BIN).arg("--config").arg(root.join("prep.toml")).arg("validate").output().unwrap();
            assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
        }
        // The new plugin file made the watcher fire too: let that reload
        // (which finds no tenant changed) pass, so it cannot pick up the
        // tenant file early and flatter the figure.
        std::thread::sleep(DEBOUNCE * 3);
        let started = Instant::now();
        install(&root.join("tenants"), "bench.toml", &tenant_file(root, &name));
        let seconds = wait_for(&format!("\"map\": \"{}\"", digest(&bytes)), started);
        if with_cache {
            warm.push(seconds)
        } else {
            cold.push(seconds)
        };
    }
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    daemon.wait().unwrap();

    let (cold, warm) = (median(cold), median(warm));
    println!("hot swap: file change to new version active in `synchost run`, median of {repeat}");
    println!("{:<44} {:>8.0} ms", "without the compiled-code cache (compiles)", cold * 1000.0);
    println!("{:<44} {:>8.0} ms", "with the cache (compiled by a validate first)", warm * 1000.0);
    println!("{:<44} {:>8.2}x", "ratio (without / with)", cold / warm);
    let debounce = DEBOUNCE.as_secs_f64();
    println!("{:<44} {:>8.0} ms", "of which the watcher's debounce", debounce * 1000.0);
    println!(
        "{:<44} {:>8.0} ms vs {:.0} ms: {:.2}x",
        "beyond the debounce, without vs with",
        (cold - debounce) * 1000.0,
        (warm - debounce) * 1000.0,
        (cold - debounce) / (warm - debounce)
    );
}
