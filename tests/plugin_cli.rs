//! The connector author's loop without a host directory: `synchost plugin
//! run` calls a plugin file once and prints what it returned, `plugin test`
//! checks it against what the host expects of its kind; both from the
//! user's compiled-code cache.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{stderr, stdout};
use serde_json::json;

/// `synchost plugin ARGS...` in `dir`, with its own compiled-code cache
/// (not the suite's shared one, `common::plugin`): these tests check where
/// the user's cache goes.
fn plugin(dir: &Path, args: &[&str]) -> Output {
    Command::new(common::BIN)
        .arg("plugin")
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("SYNCHOST_LOG", "warn")
        .output()
        .unwrap()
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "{}\n{}", stdout(output), stderr(output));
    stdout(output).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A scratch directory with the bundled plugins in `plugins/`.
fn author_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    for plugin in synchost::bundled::ALL {
        std::fs::write(dir.path().join("plugins").join(plugin.file_name), plugin.bytes).unwrap();
    }
    for sub in ["data", "out", "fixtures"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    dir
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

#[test]
fn plugin_run_calls_a_plugin_file_with_flags_for_grants_and_prints_what_it_returned() {
    let dir = author_dir();
    let d = dir.path();
    write(d, "data/people.csv", "id,first_name\n1,Ada\n2,Alan\n");
    write(
        d,
        "data/changes.jsonl",
        &format!("{}\n", json!({"op": "upsert", "row": {"id": "3", "first_name": "Grace"}})),
    );
    write(d, "source.json", r#"{"snapshot": "/data/people.csv", "changelog": "/data/changes.jsonl", "key": "id"}"#);
    let source = ["run", "plugins/file_source.wasm", "--plugin-config", "source.json", "--dir", "data:/data", "--json"];

    let rows = json_lines(&plugin(d, &[&source[..], &["snapshot"]].concat()));
    assert_eq!(
        rows,
        [
            json!({"key": "1", "fields": {"id": "1", "first_name": "Ada"}}),
            json!({"key": "2", "fields": {"id": "2", "first_name": "Alan"}})
        ]
    );
    let events = json_lines(&plugin(d, &[&source[..], &["events"]].concat()));
    assert_eq!(events[0]["upsert"]["fields"]["first_name"], "Grace", "{events:?}");
    let cursor = events.last().unwrap()["cursor"].as_str().unwrap().to_string();
    let after = json_lines(&plugin(d, &[&source[..], &["events", "--cursor", &cursor]].concat()));
    assert_eq!(after, [json!({"cursor": cursor})], "nothing after the last cursor");
    // The compiled code was kept for the next call.
    assert!(std::fs::read_dir(d.join("cache/synchost/compiled")).unwrap().count() > 0);

    write(d, "mapper.json", r#"{"fields": [{"name": "user", "template": "{first_name|lower}{id}"}]}"#);
    let mapped = json_lines(&plugin(
        d,
        &[
            "run",
            "plugins/field_mapper.wasm",
            "--plugin-config",
            "mapper.json",
            "--json",
            "transform",
            "--input",
            "data/people.csv",
        ],
    ));
    assert_eq!(mapped[1], json!({"key": "2", "fields": {"user": "alan2"}}));

    write(d, "destination.json", r#"{"dir": "/out"}"#);
    write(
        d,
        "ops.jsonl",
        "{\"upsert\": {\"key\": \"a\", \"fields\": {\"n\": 1}}}\n{\"update\": {\"key\": \"missing\", \"fields\": {\"n\": 2}, \"changed\": [\"n\"]}}\n",
    );
    let destination = ["run", "plugins/file_destination.wasm", "--plugin-config", "destination.json", "--json"];
    let output = plugin(d, &[&destination[..], &["--dir", "out:/out:rw", "apply", "--ops", "ops.jsonl"]].concat());
    assert_eq!(output.status.code(), Some(3), "an operation failed: exit 3\n{}", stderr(&output));
    let outcomes: Vec<serde_json::Value> = stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(outcomes[0]["outcome"], "applied");
    assert!(outcomes[1]["error"].as_str().unwrap().contains("no record with key `missing`"), "{outcomes:?}");
    let snapshot = json_lines(&plugin(d, &[&destination[..], &["--dir", "out:/out", "snapshot"]].concat()));
    assert_eq!(snapshot, [json!({"key": "a", "fields": {"n": 1}})]);

    // Mistakes are named.
    let output = plugin(d, &["run", "plugins/file_destination.wasm", "events"]);
    assert!(
        !output.status.success()
            && stderr(&output).contains("is a destination plugin: `events` is not one of its calls"),
        "{}",
        stderr(&output)
    );
    let output = plugin(d, &[&source[..2], &["--dir", "nowhere:/data", "snapshot"]].concat());
    assert!(stderr(&output).contains("--dir nowhere:/data"), "{}", stderr(&output));
    // Without the grant, the plugin cannot read the file, and says so.
    let output = plugin(d, &["run", "plugins/file_source.wasm", "--plugin-config", "source.json", "snapshot"]);
    assert!(!output.status.success(), "{}", stdout(&output));
}

#[test]
fn plugin_test_passes_the_bundled_file_plugins_and_fails_a_destination_that_rejects_everything() {
    let dir = author_dir();
    let d = dir.path();
    let mut changes = String::new();
    for i in 0..40 {
        changes += &format!("{}\n", json!({"op": "upsert", "row": {"id": format!("k{}", i % 9), "n": i}}));
    }
    write(d, "data/changes.jsonl", &changes);
    write(d, "data/people.csv", "id,name\n1,a\n2,b\n3,c\n");
    write(d, "source.json", r#"{"snapshot": "/data/people.csv", "changelog": "/data/changes.jsonl", "key": "id"}"#);
    write(d, "destination.json", r#"{"dir": "/out"}"#);
    write(
        d,
        "mapper.json",
        r#"{"fields": [{"name": "id", "from": "id"}, {"name": "n", "from": "n", "type": "integer"}]}"#,
    );
    write(d, "fixtures/input.csv", "id,n\n1,10\n2,20\n");
    write(d, "fixtures/bad.csv", "id,n\n3,ten\n");

    for args in [
        vec!["test", "plugins/file_source.wasm", "--plugin-config", "source.json", "--dir", "data:/data", "--json"],
        vec![
            "test",
            "plugins/file_destination.wasm",
            "--plugin-config",
            "destination.json",
            "--dir",
            "out:/out:rw",
            "--json",
        ],
        vec!["test", "plugins/field_mapper.wasm", "--plugin-config", "mapper.json", "--fixtures", "fixtures", "--json"],
    ] {
        let output = plugin(d, &args);
        let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}): {}{}", stdout(&output), stderr(&output)));
        assert!(output.status.success(), "{args:?}: {checks:#?}");
        assert!(checks.len() >= 4, "{args:?}: {checks:#?}");
        assert!(checks.iter().all(|c| c["outcome"] == "pass"), "{args:?}: {checks:#?}");
    }
    // The destination's checks leave nothing behind.
    assert!(common::read_records(&d.join("out")).is_empty());

    // A destination that rejects every key fails, and exits 1.
    std::fs::write(d.join("plugins/flaky.wasm"), common::fixture_plugin("flaky_destination.wasm")).unwrap();
    write(d, "flaky.json", r#"{"dir": "/out", "reject_percent": 100}"#);
    let output = plugin(d, &["test", "plugins/flaky.wasm", "--plugin-config", "flaky.json", "--dir", "out:/out:rw"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let report = stdout(&output);
    assert!(report.contains("FAIL  creates show in a snapshot") && report.contains("1 failed"), "{report}");
}

/// A tenant whose diff pipeline maps `data/in/people.csv` through `map.wasm`,
/// pinned or not.
fn dev_tenant(pin_map: bool) -> String {
    let tenant = common::file_pipeline_tenant(
        r#"{ snapshot = "/in/people.csv", key = "id" }"#,
        r#"[{ name = "id", from = "id" }, { name = "user", template = "{name|lower}{id}" }]"#,
        "mode = \"diff\"",
    );
    let map_digest = common::sha256(synchost::bundled::FIELD_MAPPER.bytes);
    let pinned = format!("path = \"{}\"\nsha256 = \"{map_digest}\"\n", synchost::bundled::FIELD_MAPPER.file_name);
    assert!(tenant.contains(&pinned), "the tenant template changed");
    let map = if pin_map {
        format!("path = \"map.wasm\"\nsha256 = \"{map_digest}\"\n")
    } else {
        "path = \"map.wasm\"\n".into()
    };
    tenant.replace(&pinned, &map)
}

#[test]
fn an_unpinned_plugin_loads_only_on_a_dev_host_with_a_warning_and_a_rebuild_is_swapped_in() {
    let host = common::HostDir::new();
    std::fs::write(host.path("plugins/map.wasm"), synchost::bundled::FIELD_MAPPER.bytes).unwrap();
    host.write("data/in/people.csv", "id,name\n1,Ada\n");
    host.write("tenants/acme.toml", &dev_tenant(false));

    // Not a dev host: the missing pin is an error at its place.
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("plugins.map.sha256: is missing: pin the plugin's digest")
            && stderr(&output).contains("dev = true"),
        "{}",
        stderr(&output)
    );

    // A dev host loads it, saying so each time.
    host.write("synchost.toml", &common::host_config("dev = true\n"));
    let output = host.synchost(&["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("plugin `map` is not pinned (dev = true)"), "{}", stderr(&output));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(host.records("data/out")["1"]["user"], "ada1");

    // The daemon swaps in a rebuilt plugin file as if the tenant file changed:
    // here a pass-through transform replaces the mapper.
    let daemon = common::admin::Daemon::start(&host);
    std::fs::write(host.path("plugins/map.wasm"), common::fixture_plugin("v020_transform.wasm")).unwrap();
    let (code, report) = daemon.post("/api/v1/reload", None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["changes"][0]["change"], "swapped", "{report}");
    let (_, plugins) = daemon.get("/api/v1/tenants/acme/plugins");
    let map = plugins.as_array().unwrap().iter().find(|p| p["name"] == "map").unwrap();
    assert_eq!(map["digest"], common::sha256(&common::fixture_plugin("v020_transform.wasm")), "{map}");
    let (code, report) = daemon.post("/api/v1/reload", None);
    assert_eq!((code, &report["changes"]), (200, &json!([])), "an unchanged plugin is not swapped again: {report}");
    drop(daemon);

    // Pinned again, the dev host checks the pin like any host.
    host.write("tenants/acme.toml", &dev_tenant(true));
    let output = host.synchost(&["validate"]);
    assert!(!output.status.success() && stderr(&output).contains("digest mismatch"), "{}", stderr(&output));
}

#[test]
fn plugin_new_makes_projects_that_build_test_and_pass_plugin_test_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One target directory for the three, kept between runs.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-new");
    let target = target.to_str().unwrap();
    for (kind, test_args) in [
        ("transform", vec!["--plugin-config", "config.json", "--fixtures", "fixtures"]),
        ("source", vec!["--plugin-config", "config.json"]),
        ("destination", vec!["--plugin-config", "config.json"]),
    ] {
        let name = format!("my-{kind}");
        let output = plugin(d, &["new", &name, "--kind", kind]);
        assert!(output.status.success(), "{}", stderr(&output));
        let project = d.join(&name);
        // Its own unit test, natively, then the component.
        let tested = common::cargo(&project, &["test", "--target-dir", target]);
        assert!(tested.contains("test result: ok. 1 passed"), "{tested}");
        common::cargo(&project, &["build", "--release", "--target", "wasm32-wasip2", "--target-dir", target]);
        let wasm = Path::new(target).join(format!("wasm32-wasip2/release/my_{kind}.wasm"));
        let output = plugin(&project, &[&["test", wasm.to_str().unwrap(), "--json"][..], &test_args].concat());
        let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{kind}: no JSON ({e}): {}{}", stdout(&output), stderr(&output)));
        assert!(output.status.success() && checks.iter().all(|c| c["outcome"] == "pass"), "{kind}: {checks:#?}");
    }
    // A name that is not a crate name, or a directory in use, is refused.
    let output = plugin(d, &["new", "My Plugin", "--kind", "source"]);
    assert!(stderr(&output).contains("must start with a lower-case letter"), "{}", stderr(&output));
    let output = plugin(d, &["new", "my-source", "--kind", "source"]);
    assert!(stderr(&output).contains("exists and is not empty"), "{}", stderr(&output));
}
