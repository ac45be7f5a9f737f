//! The WIT contract's versions: a plugin built against the released 0.1.0
//! (the `v010-source` fixture, generated from the frozen copy of that WIT in
//! `plugins/fixtures/wit-0.1.0/`, with no SDK) still loads and syncs on a host
//! that implements 0.1.1, through wasmtime's semver matching of both its
//! imports (`host@0.1.0` → the linker's `host@0.1.1`) and its export
//! (`source@0.1.0`, found by the host's `source@0.1.1` bindings); a plugin
//! built against a newer version than the host's is refused, naming both.

mod common;

use common::{HostDir, stderr};

const OLD_SOURCE: &str = "v010_source.wasm";

/// A tenant: the 0.1.0 source (with `rows` rows) → the bundled file destination.
fn old_source_tenant(host: &HostDir, mode: &str) -> String {
    use synchost::bundled::FILE_DESTINATION;
    let digest = host.install_fixture(OLD_SOURCE);
    format!(
        r#"[plugins.old]
path = "{OLD_SOURCE}"
sha256 = "{digest}"
config = {{ rows = 50 }}

[plugins.dst]
path = "{dst}"
sha256 = "{dst_digest}"
dirs = [{{ host = "../data/out", guest = "/out", write = true }}]
config = {{ dir = "/out", shards = 4 }}

[pipelines.main]
mode = "{mode}"
source = "old"
destination = "dst"
"#,
        dst = FILE_DESTINATION.file_name,
        dst_digest = common::sha256(FILE_DESTINATION.bytes),
    )
}

#[test]
fn a_plugin_built_against_0_1_0_is_inspected_as_such() {
    let host = HostDir::new();
    host.install_fixture(OLD_SOURCE);
    let info = host.json(&["plugin", "inspect", host.path("plugins").join(OLD_SOURCE).to_str().unwrap()]);
    assert_eq!(info["kind"], "source", "{info}");
    assert_eq!(info["wit_version"], "0.1.0", "{info}");
    assert_eq!(info["info"]["wit_version"], "0.1.0", "{info}");
    assert_eq!(info["info"]["name"], "v010-source", "{info}");
}

#[test]
fn a_plugin_built_against_0_1_0_runs_a_diff_sync() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &old_source_tenant(&host, "diff"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["created"], 50, "{report}");
    let records = host.records("data/out");
    assert_eq!(records.len(), 50);
    assert_eq!(records["7"]["name"], "name-7");
    assert_eq!(records["7"]["id"], 7);
}

#[test]
fn a_plugin_built_against_0_1_0_runs_an_event_sync() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &old_source_tenant(&host, "event"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["cursor_after"], "50", "{report}");
    assert_eq!(host.records("data/out").len(), 50);
}

#[test]
fn a_plugin_built_against_a_newer_patch_than_the_host_is_refused() {
    // The bundled file source with its export renamed to 0.1.2 (the same
    // length, so the component stays well formed): it might call functions
    // that 0.1.1 lacks.
    let host = HostDir::new();
    let (from, to) = (b"synchost:plugin/source@0.1.1", b"synchost:plugin/source@0.1.2");
    let mut bytes = synchost::bundled::FILE_SOURCE.bytes.to_vec();
    let mut replaced = 0;
    for i in 0..=bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            replaced += 1;
        }
    }
    assert!(replaced > 0, "the source's export name was not found");
    let path = host.path("plugins/newer.wasm");
    std::fs::write(&path, &bytes).unwrap();
    let output = host.synchost(&["plugin", "inspect", path.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output)
            .contains("was built against synchost:plugin@0.1.2, but this host supports synchost:plugin@0.1.1"),
        "{}",
        stderr(&output)
    );
}
