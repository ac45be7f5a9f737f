//! The compiled-code cache: a restart loads plugins from `state/compiled/`
//! instead of compiling them; a damaged or foreign cache file, or one made by
//! an engine configured differently, is never used, and the plugin is
//! compiled again and still works.
//!
//! Each load below is a `Runtime::load`, a fresh engine as after a restart;
//! the engine's counters say where each component came from, and the syncs
//! run the real binary on the same host directory afterwards.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{HostDir, file_pipeline_tenant, sha256, stderr};
use serde_json::json;
use synchost::plugin::{CompileStats, EngineOptions, PluginEngine};
use synchost::{Runtime, Tenants};

const SOURCE: &str = r#"{ snapshot = "/in/people.csv", key = "id" }"#;
const FIELDS: &str = r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#;

/// A host whose pipeline `acme/main` diffs `data/in/people.csv` into
/// `data/out` through the three bundled plugins.
fn host() -> HostDir {
    let host = HostDir::with_own_cache();
    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Bob\n");
    host.write("tenants/acme.toml", &file_pipeline_tenant(SOURCE, FIELDS, "mode = \"diff\""));
    host
}

/// What a fresh engine (a restart) found where, loading every tenant.
fn load(host: &HostDir) -> CompileStats {
    let runtime = Runtime::load(&host.path("synchost.toml"), Tenants::All).expect("the host loads");
    runtime.engine.compile_stats()
}

fn stats(disk_hits: u64, compiled: u64, rejected: u64) -> CompileStats {
    CompileStats { memory_hits: 0, disk_hits, compiled, rejected }
}

/// The cache files in `dir`, by name, with their modification times.
fn cache_files(dir: &Path) -> Vec<(String, SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), entry.metadata().unwrap().modified().unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The cache file of the bundled plugin with these bytes.
fn cache_file_of(dir: &Path, bytes: &[u8]) -> PathBuf {
    let prefix = format!("{}-", sha256(bytes));
    let matching: Vec<_> = cache_files(dir).into_iter().filter(|(name, _)| name.starts_with(&prefix)).collect();
    assert_eq!(matching.len(), 1, "one cache file for {prefix}…, found {matching:?}");
    dir.join(&matching[0].0)
}

/// Syncs `acme/main` with the binary and checks what it wrote.
fn assert_syncs(host: &HostDir) {
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "the sync failed: {report}");
    let records = host.records("data/out");
    assert_eq!(records.len(), 2);
    assert_eq!(records["2"], json!({"id": "2", "name": "Bob"}));
}

#[test]
fn a_restart_loads_every_plugin_from_the_cache_without_rewriting_it() {
    let host = host();
    assert_eq!(load(&host), stats(0, 3, 0), "a first start compiles the three plugins");
    let dir = host.path("state/compiled");
    let written = cache_files(&dir);
    assert_eq!(written.len(), 3, "one file per plugin: {written:?}");
    for (name, _) in &written {
        assert!(name.ends_with(".cwasm"), "{name}");
    }

    assert_eq!(load(&host), stats(3, 0, 0), "a restart compiles nothing");
    assert_eq!(cache_files(&dir), written, "and rewrites nothing");
    // The binary is another process: the key must not depend on anything
    // but the engine's configuration.
    assert_syncs(&host);
    assert_eq!(cache_files(&dir), written);
}

#[test]
fn the_binary_logs_cache_misses_and_hits_at_debug_level() {
    let host = host();
    let validate = || {
        let output = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .arg("validate")
            .env("SYNCHOST_LOG", "synchost=debug")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stderr(&output)
    };
    let first = validate();
    assert_eq!(first.matches("compiled-code cache miss: compiling").count(), 3, "{first}");
    assert!(!first.contains("compiled-code cache hit"), "{first}");
    let second = validate();
    assert_eq!(second.matches("compiled-code cache hit").count(), 3, "{second}");
    assert!(!second.contains("compiled-code cache miss"), "{second}");
}

#[test]
fn damaged_cache_files_are_detected_replaced_and_the_plugins_still_work() {
    use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
    let host = host();
    load(&host);
    let dir = host.path("state/compiled");
    let (mapper, source, destination) = (
        cache_file_of(&dir, FIELD_MAPPER.bytes),
        cache_file_of(&dir, FILE_SOURCE.bytes),
        cache_file_of(&dir, FILE_DESTINATION.bytes),
    );
    // One bit flipped in the middle of the machine code: wasmtime itself
    // would not notice this one.
    let mut bytes = std::fs::read(&mapper).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&mapper, &bytes).unwrap();
    // Cut short, as by a full disk.
    let bytes = std::fs::read(&source).unwrap();
    std::fs::write(&source, &bytes[..bytes.len() / 3]).unwrap();
    // Writable by others: not trusted, whatever it holds.
    std::fs::set_permissions(&destination, std::fs::Permissions::from_mode(0o666)).unwrap();

    assert_eq!(load(&host), stats(0, 3, 3), "all three are refused and compiled again");
    let mode = std::fs::metadata(&destination).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the replacement is the host's alone");
    assert_eq!(load(&host), stats(3, 0, 0), "the replacements are used");
    assert_syncs(&host);
}

#[test]
fn a_cache_made_with_fuel_metering_off_is_not_used_with_it_on() {
    let host = host();
    assert_eq!(load(&host), stats(0, 3, 0));
    let dir = host.path("state/compiled");
    let without_fuel = cache_files(&dir);

    host.write("synchost.toml", "state_dir = \"state\"\n\n[limits]\nfuel = 10_000_000_000\n");
    assert_eq!(load(&host), stats(0, 3, 0), "fuel metering changes the machine code: compiled again");
    let all = cache_files(&dir);
    assert_eq!(all.len(), 6, "the same digests under another engine key: {all:?}");
    for old in &without_fuel {
        assert!(all.contains(old), "the fuel-less files are left alone: {all:?}");
    }
    assert_eq!(load(&host), stats(3, 0, 0));
    assert_syncs(&host);

    host.write("synchost.toml", "state_dir = \"state\"\n");
    assert_eq!(load(&host), stats(3, 0, 0), "and back without fuel, the first files serve again");
}

#[test]
fn the_cache_can_be_moved_or_turned_off() {
    let host = host();
    host.write("synchost.toml", "state_dir = \"state\"\ncompiled_cache_dir = \"cache/code\"\n");
    assert_eq!(load(&host), stats(0, 3, 0));
    assert_eq!(cache_files(&host.path("cache/code")).len(), 3);
    assert!(!host.path("state/compiled").exists());
    assert_eq!(load(&host), stats(3, 0, 0));

    host.write("synchost.toml", "state_dir = \"state\"\ncompiled_cache = false\n");
    assert_eq!(load(&host), stats(0, 3, 0));
    assert_eq!(load(&host), stats(0, 3, 0), "without a cache every start compiles");
    assert!(!host.path("state/compiled").exists());

    host.write("synchost.toml", "state_dir = \"state\"\ncompiled_cache = false\ncompiled_cache_dir = \"c\"\n");
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "synchost.toml:3:22: compiled_cache_dir: is set, but `compiled_cache = false` keeps no compiled code"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_cache_that_cannot_be_written_does_not_stop_the_host() {
    let host = host();
    // A file where the directory should be: nothing can be stored under it.
    host.write("blocked", "not a directory");
    host.write("synchost.toml", "state_dir = \"state\"\ncompiled_cache_dir = \"blocked/compiled\"\n");
    assert_eq!(load(&host), stats(0, 3, 0));
    assert_eq!(load(&host), stats(0, 3, 0));
    assert_syncs(&host);
}

#[test]
fn threads_compiling_the_same_plugin_at_once_compile_and_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions { compiled_cache_dir: Some(dir.path().join("compiled")), ..EngineOptions::default() };
    let engine = PluginEngine::new(options).unwrap();
    let bytes = synchost::bundled::FIELD_MAPPER.bytes;
    let digests: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> =
            (0..4).map(|_| scope.spawn(|| engine.compile("map", bytes).unwrap().digest.clone())).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(digests.iter().all(|d| *d == sha256(bytes)));
    assert_eq!(engine.compile_stats(), CompileStats { memory_hits: 3, disk_hits: 0, compiled: 1, rejected: 0 });
    assert_eq!(cache_files(&dir.path().join("compiled")).len(), 1, "one file, no temporary file left");
}
