//! The WIT contract's versions. This host implements 0.2.0 (tables) and still
//! serves plugins built against 0.1.x (rows) through its legacy bindings: a
//! plugin built against the released 0.1.0 (the `v010-source` fixture,
//! generated from the frozen copy of that WIT in `wit/frozen/0.1.0/`,
//! with no SDK) still loads and syncs, through wasmtime's semver matching of
//! its imports (`host@0.1.0` → the linker's `host@0.1.1`) and its export
//! (`source@0.1.0`, found by the legacy `source@0.1.1` bindings); a plugin
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
    // The bundled file source with its export renamed to 0.2.4 (the same
    // length, so the component stays well formed): it might call functions
    // that 0.2.3 lacks.
    let host = HostDir::new();
    let (from, to) = (b"synchost:plugin/source@0.2.3", b"synchost:plugin/source@0.2.4");
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
            .contains("built against synchost:plugin@0.2.4, but this host supports synchost:plugin@0.2.3 (or 0.1.x"),
        "{}",
        stderr(&output)
    );
}

const OLD_TRANSFORM: &str = "v011_transform.wasm";
const OLD_DESTINATION: &str = "v011_destination.wasm";

/// A tenant made only of 0.1.x plugins: the 0.1.0 source → the 0.1.1
/// transform (upper-cases text, adds `via`, drops keys ending in 0) → the
/// 0.1.1 destination (one JSON file, paged three records at a time).
fn old_plugins_tenant(host: &HostDir, mode: &str) -> String {
    std::fs::create_dir_all(host.path("data/out")).unwrap();
    format!(
        r#"[plugins.old]
path = "{OLD_SOURCE}"
sha256 = "{source}"
config = {{ rows = 50 }}

[plugins.upper]
path = "{OLD_TRANSFORM}"
sha256 = "{transform}"

[plugins.dst]
path = "{OLD_DESTINATION}"
sha256 = "{destination}"
dirs = [{{ host = "../data/out", guest = "/out", write = true }}]
config = {{ file = "/out/records.json" }}

[pipelines.main]
mode = "{mode}"
source = "old"
transforms = ["upper"]
destination = "dst"
{settings}"#,
        // A first load changes every record, and this test is not about the
        // guard; the destination keeps one file, so one event lane writes it.
        settings = if mode == "diff" { "max_change_ratio = 1.0\n" } else { "lanes = 1\n" },
        source = host.install_fixture(OLD_SOURCE),
        transform = host.install_fixture(OLD_TRANSFORM),
        destination = host.install_fixture(OLD_DESTINATION),
    )
}

fn old_destination_records(host: &HostDir) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(host.path("data/out/records.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn plugins_built_against_0_1_1_transform_and_write_a_diff_sync_then_find_nothing_to_change() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &old_plugins_tenant(&host, "diff"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["created"], 45, "{report}");
    let records = old_destination_records(&host);
    assert_eq!(records.len(), 45);
    assert_eq!(records["7"], serde_json::json!({ "id": 7, "name": "NAME-7", "via": "0.1.1" }));
    assert!(!records.contains_key("10"), "the transform's filter was lost: {records:?}");

    // The destination, read back in 0.1.1 pages and laid out as tables,
    // equals the desired state: the second run changes nothing.
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    common::assert_nothing_changed(&report, 45);
    assert_eq!(report["stats"]["destination"], 45, "{report}");
}

#[test]
fn plugins_built_against_0_1_1_transform_and_write_an_event_sync() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &old_plugins_tenant(&host, "event"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["cursor_after"], "50", "{report}");
    let records = old_destination_records(&host);
    assert_eq!(records.len(), 45);
    assert_eq!(records["49"], serde_json::json!({ "id": 49, "name": "NAME-49", "via": "0.1.1" }));
}

const V020_TRANSFORM: &str = "v020_transform.wasm";

/// A diff pipeline from `data/in/people.csv` through the fixture transform
/// `file` (installed with `digest`), with `config` as its config table.
fn fixture_transform_tenant(file: &str, digest: &str, config: &str) -> String {
    let fields = r#"[{ name = "id", from = "id" }]"#;
    let tenant = common::file_pipeline_tenant(
        r#"{ snapshot = "/in/people.csv", key = "id" }"#,
        fields,
        "mode = \"diff\"\nmax_change_ratio = 1.0",
    )
    .replace("path = \"field_mapper.wasm\"", &format!("path = \"{file}\""))
    .replace(&common::sha256(synchost::bundled::FIELD_MAPPER.bytes), digest)
    .replace(&format!("config = {{ fields = {fields} }}"), &format!("config = {config}"));
    assert!(tenant.contains(config) && tenant.contains(file), "the tenant template changed:\n{tenant}");
    tenant
}

#[test]
fn a_plugin_built_against_0_2_0_has_no_config_schema_and_still_syncs() {
    // 0.2.1 added the `config` export; a transform built before it (the
    // `v020-transform` fixture, from `wit/frozen/0.2.0`, no SDK) declares no
    // schema, so its config is left to the plugin and any key passes
    // `validate`.
    let host = HostDir::new();
    let digest = host.install_fixture(V020_TRANSFORM);
    let info = host.json(&["plugin", "inspect", host.path("plugins").join(V020_TRANSFORM).to_str().unwrap()]);
    assert_eq!(info["wit_version"], "0.2.0", "{info}");
    assert_eq!(info["config_schema"], serde_json::Value::Null, "{info}");

    host.write("data/in/people.csv", "id,name\n1,Ada\n2,Grace\n3,Edsger\n");
    host.write("tenants/acme.toml", &fixture_transform_tenant(V020_TRANSFORM, &digest, "{ anything = \"goes\" }"));
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["created"], 3, "{report}");
    assert_eq!(host.records("data/out")["2"]["name"], "Grace");
}

const V021_TRANSFORM: &str = "v021_transform.wasm";

#[test]
fn a_plugin_built_against_0_2_1_keeps_its_config_schema_and_syncs() {
    // 0.2.2 added `sql.connection.bulk-upsert`; a transform built before it
    // (the `v021-transform` fixture, from `wit/frozen/0.2.1`, no SDK) exports
    // `config@0.2.1`, which this host must still find and check against.
    let host = HostDir::new();
    let digest = host.install_fixture(V021_TRANSFORM);
    let info = host.json(&["plugin", "inspect", host.path("plugins").join(V021_TRANSFORM).to_str().unwrap()]);
    assert_eq!(info["wit_version"], "0.2.1", "{info}");
    assert_eq!(info["config_schema"]["required"], serde_json::json!(["label"]), "{info}");

    host.write("data/in/people.csv", "id,name\n1,Ada\n2,Grace\n");
    let tenant = |config: &str| fixture_transform_tenant(V021_TRANSFORM, &digest, config);
    host.write("tenants/acme.toml", &tenant("{ lable = \"x\" }"));
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success(), "a config its schema refuses passed validate");
    assert!(stderr(&output).contains("unknown key `lable`"), "{}", stderr(&output));

    host.write("tenants/acme.toml", &tenant("{ label = \"x\" }"));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["stats"]["created"], 2, "{report}");
}
