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
//! - asked for: with the cache, `synchost reload` run as soon as the tenant
//!   file is in place (a deploy script's last step), timed from the command's
//!   start to its answer, which comes once the new version is active; this
//!   daemon's `watch_debounce` is an hour, so that only the request reloads.
//!
//! The first two include the watcher's default 250 ms debounce (the daemon
//! waits for the files to be quiet that long); the last lines show it and
//! what is left beside it. Medians of `--repeat` samples (default 5).
//! `HOT_SWAP_TRACE=1` prints the daemon's log lines as they come, with their
//! time into the sample.
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
/// The daemon waits this long for the files to settle by default.
const DEBOUNCE: Duration = synchost::config::DEFAULT_WATCH_DEBOUNCE;

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

/// A `synchost run` on a host directory, with its log lines as they come.
struct Daemon {
    process: std::process::Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut process = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("SYNCHOST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = mpsc::channel::<(Instant, String)>();
        let stderr = process.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let daemon = Daemon { process, lines };
        daemon.wait_for("synchost is running", Instant::now());
        daemon
    }

    /// Seconds from `since` to the log line holding `needle`.
    fn wait_for(&self, needle: &str, since: Instant) -> f64 {
        loop {
            let (at, line) =
                self.lines.recv_timeout(Duration::from_secs(60)).expect("the daemon logged nothing for 60 s");
            if std::env::var_os("HOT_SWAP_TRACE").is_some() {
                let into = at.saturating_duration_since(since).as_secs_f64() * 1000.0;
                eprintln!("{into:>8.1} ms  {}", &line[..line.len().min(150)]);
            }
            if line.contains(needle) {
                return at.duration_since(since).as_secs_f64();
            }
        }
    }

    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.process.id().to_string()]).status().unwrap();
        self.process.wait().unwrap();
    }
}

/// Writes the `sample`th new mapper version into plugins/; with `compiled`,
/// a `synchost validate` with the deploy step's view compiles it into the
/// shared cache first. Returns its file name and digest.
fn new_version(root: &Path, sample: usize, compiled: bool) -> (String, String) {
    let name = format!("mapper_{sample}.wasm");
    let bytes = mapper_version(sample);
    std::fs::write(root.join("plugins").join(&name), &bytes).unwrap();
    if compiled {
        install(&root.join("prep-tenants"), "bench.toml", &tenant_file(root, &name));
        let validate = Command::new(BIN).arg("--config").arg(root.join("prep.toml")).arg("validate").output().unwrap();
        assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
    }
    (name, digest(&bytes))
}

fn main() {
    let repeat = std::env::args().skip_while(|a| a != "--repeat").nth(1).and_then(|n| n.parse().ok()).unwrap_or(5usize);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    prepare_host_dir(root, &["tenants", "prep-tenants", "in", "out"]).unwrap();
    std::fs::write(root.join("in/changes.jsonl"), "").unwrap();
    std::fs::write(root.join("synchost.toml"), "state_dir = \"state\"\n").unwrap();
    // Only `synchost reload` reloads this one.
    std::fs::write(root.join("asked.toml"), "state_dir = \"state\"\nwatch_debounce = \"1h\"\n").unwrap();
    // The deploy step's view: same state (and cache), its own tenants folder.
    std::fs::write(root.join("prep.toml"), "state_dir = \"state\"\ntenants_dir = \"prep-tenants\"\n").unwrap();
    install(&root.join("tenants"), "bench.toml", &tenant_file(root, "field_mapper.wasm"));

    let daemon = Daemon::start(&root.join("synchost.toml"));
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for sample in 0..repeat * 2 {
        let with_cache = sample % 2 == 1;
        let (name, digest) = new_version(root, sample, with_cache);
        // The new plugin file made the watcher fire too: let that reload
        // (which finds no tenant changed) pass, so it cannot pick up the
        // tenant file early and flatter the figure.
        std::thread::sleep(DEBOUNCE * 3);
        let started = Instant::now();
        install(&root.join("tenants"), "bench.toml", &tenant_file(root, &name));
        let seconds = daemon.wait_for(&format!("\"map\": \"{digest}\""), started);
        if with_cache {
            warm.push(seconds)
        } else {
            cold.push(seconds)
        };
    }
    daemon.stop();

    let daemon = Daemon::start(&root.join("asked.toml"));
    let mut asked = Vec::new();
    for sample in repeat * 2..repeat * 3 {
        let (name, digest) = new_version(root, sample, true);
        install(&root.join("tenants"), "bench.toml", &tenant_file(root, &name));
        let started = Instant::now();
        let reload = Command::new(BIN).arg("--config").arg(root.join("asked.toml")).arg("reload").output().unwrap();
        asked.push(started.elapsed().as_secs_f64());
        let said = String::from_utf8_lossy(&reload.stdout);
        assert!(
            reload.status.success() && said.contains(&digest[..12]),
            "{said}{}",
            String::from_utf8_lossy(&reload.stderr)
        );
        daemon.wait_for(&format!("\"map\": \"{digest}\""), started);
    }
    daemon.stop();

    let (cold, warm, asked) = (median(cold), median(warm), median(asked));
    println!("hot swap: to the new version active in `synchost run`, median of {repeat}");
    println!("{:<48} {:>8.0} ms", "file change, without the compiled-code cache", cold * 1000.0);
    println!("{:<48} {:>8.0} ms", "file change, with the cache (validate first)", warm * 1000.0);
    println!("{:<48} {:>8.0} ms", "`synchost reload` asked, with the cache", asked * 1000.0);
    println!("{:<48} {:>8.2}x", "ratio (without / with the cache)", cold / warm);
    let debounce = DEBOUNCE.as_secs_f64();
    println!("{:<48} {:>8.0} ms", "of the file changes, the watcher's debounce", debounce * 1000.0);
    println!(
        "{:<48} {:>8.0} ms vs {:.0} ms: {:.2}x",
        "beyond the debounce, without vs with",
        (cold - debounce) * 1000.0,
        (warm - debounce) * 1000.0,
        (cold - debounce) / (warm - debounce)
    );
}
