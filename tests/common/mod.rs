//! What the integration tests share: a scratch host directory with the bundled
//! plugins, a way to run the real `synchost` binary in it, and readers for what
//! the file destination wrote.

#![allow(dead_code)]

pub mod admin;
pub mod databases;
pub mod guide;
pub mod javascript;
pub mod people_api;
pub mod python;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_synchost");

/// A host directory: `synchost.toml`, `plugins/` with the bundled plugins,
/// `tenants/`, and `data/` for the plugins' files.
pub struct HostDir {
    pub dir: tempfile::TempDir,
}

impl HostDir {
    pub fn new() -> HostDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["plugins", "tenants", "data/in", "data/out"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for plugin in synchost::bundled::ALL {
            std::fs::write(dir.path().join("plugins").join(plugin.file_name), plugin.bytes).unwrap();
        }
        std::fs::write(dir.path().join("synchost.toml"), host_config("")).unwrap();
        HostDir { dir }
    }

    /// A host directory with the default compiled-code cache
    /// (`state/compiled`), its own: for the tests of the cache itself.
    pub fn with_own_cache() -> HostDir {
        let host = HostDir::new();
        host.write("synchost.toml", "state_dir = \"state\"\n");
        host
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn append(&self, relative: &str, text: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(self.path(relative)).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Runs `synchost --config <dir>/synchost.toml ARGS...`.
    pub fn synchost(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.path("synchost.toml"))
            .args(args)
            .env("SYNCHOST_LOG", "warn")
            .output()
            .expect("run synchost")
    }

    /// Runs `synchost sync PIPELINE --json` and returns the exit status and report.
    pub fn sync(&self, pipeline: &str, extra: &[&str]) -> (bool, serde_json::Value) {
        let mut args = vec!["sync", pipeline, "--json"];
        args.extend_from_slice(extra);
        let output = self.synchost(&args);
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("sync printed no JSON report ({e}):\nstdout: {}\nstderr: {}", stdout(&output), stderr(&output))
        });
        (output.status.success(), report)
    }

    /// The records in a file destination's directory: key → fields.
    pub fn records(&self, relative: &str) -> BTreeMap<String, serde_json::Value> {
        read_records(&self.path(relative))
    }
}

/// The file destination's records in `dir`: key → fields.
pub fn read_records(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    synchost::bundled::file_records::read(dir)
        .unwrap_or_else(|e| panic!("the file destination in {} is unreadable: {e}", dir.display()))
        .into_iter()
        .map(|(key, record)| (key, record["fields"].clone()))
        .collect()
}

/// The compiled-code cache every test's host directory shares. The tests load
/// the same plugins again and again; the cache is content-addressed by plugin
/// digest and engine, and safe for many processes at once (as
/// tests/compiled_cache.rs shows), so each plugin is compiled once per build
/// of the suite instead of once per test.
pub fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-cache")
}

/// A `synchost.toml`: state in `state/`, the shared compiled-code cache (on
/// line 2), then `rest` (from line 3), then the admin endpoint on a port of
/// the system's choice, so that daemons of tests running side by side never
/// collide (`state/admin.url` says which).
pub fn host_config(rest: &str) -> String {
    format!(
        "state_dir = \"state\"\ncompiled_cache_dir = {:?}\n{rest}\n[admin]\nbind = \"127.0.0.1:0\"\n",
        shared_cache_dir().display().to_string()
    )
}

/// A child process (a daemon) that is killed if the test ends while it still
/// runs: a test that fails half-way must not leave a daemon behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs `synchost plugin ARGS` in `dir`, with the shared compiled-code cache
/// as the user's cache.
pub fn plugin(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("plugin")
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", shared_cache_dir().join("xdg"))
        .output()
        .unwrap()
}

/// Runs `synchost plugin test ARGS` in `dir` and returns its report,
/// asserting it exited 0 (no check failed).
pub fn plugin_test_passes(dir: &Path, args: &[&str]) -> String {
    let output = plugin(dir, &[&["test"][..], args].concat());
    let report = stdout(&output);
    assert!(output.status.success(), "plugin test {args:?} failed:\n{report}{}", stderr(&output));
    report
}

/// Serves `app` on a free port of 127.0.0.1, on a thread of its own, for as
/// long as the test process lives; returns the port.
pub fn serve(app: axum::Router) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port on 127.0.0.1");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A tenant file for one pipeline: file source (reading `data/in`) → field
/// mapper → file destination (writing `data/out`). `mapper_fields` is the TOML
/// array of the mapper's `fields`; `pipeline` is the body of the pipeline table.
pub fn file_pipeline_tenant(source_config: &str, mapper_fields: &str, pipeline: &str) -> String {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    format!(
        r#"[plugins.src]
path = "{src}"
sha256 = "{src_digest}"
dirs = [{{ host = "../data/in", guest = "/in" }}]
config = {source_config}

[plugins.map]
path = "{map}"
sha256 = "{map_digest}"
config = {{ fields = {mapper_fields} }}

[plugins.dst]
path = "{dst}"
sha256 = "{dst_digest}"
dirs = [{{ host = "../data/out", guest = "/out", write = true }}]
config = {{ dir = "/out", shards = 4 }}

[pipelines.main]
source = "src"
transforms = ["map"]
destination = "dst"
{pipeline}
"#,
        src = FILE_SOURCE.file_name,
        src_digest = sha256(FILE_SOURCE.bytes),
        map = FIELD_MAPPER.file_name,
        map_digest = sha256(FIELD_MAPPER.bytes),
        dst = FILE_DESTINATION.file_name,
        dst_digest = sha256(FILE_DESTINATION.bytes),
    )
}

/// A CSV of `n` people, `id,name`: ids 0 to n-1, names `{prefix}{id}`.
pub fn people_csv(n: usize, prefix: &str) -> String {
    std::iter::once("id,name\n".to_string()).chain((0..n).map(|i| format!("{i},{prefix}{i}\n"))).collect()
}

// --- event sync helpers ---

/// A test fixture plugin, built by host/build.rs beside the bundled plugins
/// but not bundled in the binary (e.g. `flaky_destination.wasm`).
pub fn fixture_plugin(file_name: &str) -> Vec<u8> {
    let path = Path::new(synchost::bundled::PLUGIN_DIR).join(file_name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture plugin `{}` is missing: {e}", path.display()))
}

/// Asserts that a diff run's report changed nothing and found `unchanged` rows alike.
pub fn assert_nothing_changed(report: &serde_json::Value, unchanged: u64) {
    let stats = &report["stats"];
    assert_eq!(
        (&stats["created"], &stats["updated"], &stats["deleted"]),
        (&0.into(), &0.into(), &0.into()),
        "{report}"
    );
    assert_eq!(stats["unchanged"], unchanged, "{report}");
}

impl HostDir {
    /// Copies a fixture plugin into `plugins/` and returns its sha256.
    pub fn install_fixture(&self, file_name: &str) -> String {
        let bytes = fixture_plugin(file_name);
        std::fs::write(self.path("plugins").join(file_name), &bytes).unwrap();
        sha256(&bytes)
    }

    /// Runs `synchost ARGS... --json` and parses what it printed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.synchost(&all);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("`synchost {}` printed no JSON ({e}):\n{}\n{}", all.join(" "), stdout(&output), stderr(&output))
        })
    }
}

/// An event pipeline `main` from `data/in/changes.jsonl` (rows of `id` and
/// `seq`) into the flaky destination fixture (`digest`) writing
/// `data/out` in two shards, with `faults` (its fault settings, as inline
/// TOML keys) and `pipeline` (more of the pipeline's table).
pub fn flaky_event_tenant(digest: &str, faults: &str, pipeline: &str) -> String {
    pipeline_tenant_with_destination(
        r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
        r#"[{ name = "id", from = "id" }, { name = "seq", from = "seq" }]"#,
        ("flaky_destination.wasm", digest),
        &format!("{{ dir = \"/out\", shards = 2, {faults} }}"),
        &format!("mode = \"event\"\n{pipeline}"),
    )
}

/// Like [`file_pipeline_tenant`], with the destination given: its file name
/// in `plugins/`, its sha256 and its config (an inline TOML table).
pub fn pipeline_tenant_with_destination(
    source_config: &str,
    mapper_fields: &str,
    destination: (&str, &str),
    destination_config: &str,
    pipeline: &str,
) -> String {
    let tenant = file_pipeline_tenant(source_config, mapper_fields, pipeline);
    let file_destination = format!(
        "path = \"{}\"\nsha256 = \"{}\"\ndirs = [{{ host = \"../data/out\", guest = \"/out\", write = true }}]\nconfig = {{ dir = \"/out\", shards = 4 }}\n",
        synchost::bundled::FILE_DESTINATION.file_name,
        sha256(synchost::bundled::FILE_DESTINATION.bytes)
    );
    assert!(tenant.contains(&file_destination), "file_pipeline_tenant changed its destination table");
    let (file_name, digest) = destination;
    tenant.replace(
        &file_destination,
        &format!(
            "path = \"{file_name}\"\nsha256 = \"{digest}\"\ndirs = [{{ host = \"../data/out\", guest = \"/out\", write = true }}]\nconfig = {destination_config}\n"
        ),
    )
}

/// `cargo ARGS` in `dir`, with nothing of the outer build's settings (the
/// tests run under `cargo test`, whose variables would leak into a nested
/// build); its output, or a panic with it if it failed.
pub fn cargo(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" || key == "RUSTC_WRAPPER" {
            command.env_remove(key);
        }
    }
    let output = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "cargo {} in {} failed:\n{text}", args.join(" "), dir.display());
    text
}
