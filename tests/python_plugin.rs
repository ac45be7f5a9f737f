//! A plugin written in Python with the kit in plugins/sdk-python, built with
//! componentize-py (from PyPI, pinned): it passes `plugin test`, and syncs
//! the same data to the same result as the Rust field mapper with the same
//! config, side by side (the ratio of their run times is printed).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{HostDir, python, sha256};

/// Builds the kit's `pick` example into `dir/pick.wasm`.
fn build_pick(dir: &Path) -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk-python");
    let out = dir.join("pick.wasm");
    let output = Command::new(python::venv().join("bin/componentize-py"))
        .arg("-d")
        .arg(kit.join("wit"))
        .args(["-w", "synchost:plugin/transform-plugin", "componentize", "app", "-p"])
        .arg(kit.join("examples/pick"))
        .arg("-p")
        .arg(&kit)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "componentize-py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

#[test]
fn a_python_transform_passes_plugin_test_and_syncs_as_the_rust_one_does() {
    let scratch = tempfile::tempdir().unwrap();
    let pick = build_pick(scratch.path());
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(fixtures.join("input.csv"), "id,first,last\n1,Ada,Lovelace\n2,Grace,Hopper\n").unwrap();
    std::fs::write(fixtures.join("bad.jsonl"), "{\"id\": \"\", \"first\": \"nobody\"}\n").unwrap();
    std::fs::write(scratch.path().join("config.json"), r#"{"fields": [{"name": "given", "from": "first"}]}"#).unwrap();
    let output = Command::new(common::BIN)
        .args(["plugin", "test", "pick.wasm", "--plugin-config", "config.json", "--fixtures", "fixtures"])
        .current_dir(scratch.path())
        .env("XDG_CACHE_HOME", common::shared_cache_dir().join("xdg"))
        .output()
        .unwrap();
    let report = common::stdout(&output);
    assert!(
        output.status.success() && report.contains("4 passed, 0 failed, 0 skipped"),
        "{report}{}",
        common::stderr(&output)
    );

    // The same rows through the Rust field mapper and the Python pick, with
    // the same config, into two destinations.
    let host = HostDir::new();
    std::fs::copy(&pick, host.path("plugins/pick.wasm")).unwrap();
    let mut csv = String::from("id,first,last,city\n");
    for i in 0..20_000 {
        csv += &format!("{i},first{i},last{i},city{}\n", i % 50);
    }
    host.write("data/in/people.csv", &csv);
    let fields =
        r#"[{ name = "id", from = "id" }, { name = "given", from = "first" }, { name = "town", from = "city" }]"#;
    let rust =
        common::file_pipeline_tenant(r#"{ snapshot = "/in/people.csv", key = "id" }"#, fields, "mode = \"diff\"");
    let mapper = format!(
        "path = \"{}\"\nsha256 = \"{}\"\n",
        synchost::bundled::FIELD_MAPPER.file_name,
        sha256(synchost::bundled::FIELD_MAPPER.bytes)
    );
    assert!(rust.contains(&mapper), "the tenant template changed");
    let python = rust
        .replace(&mapper, &format!("path = \"pick.wasm\"\nsha256 = \"{}\"\n", sha256(&std::fs::read(&pick).unwrap())))
        .replace("../data/out", "../data/out-python");
    std::fs::create_dir_all(host.path("data/out-python")).unwrap();
    host.write("tenants/rust.toml", &rust);
    host.write("tenants/python.toml", &python);
    // Compiled once, outside the timing: the cache serves the runs.
    assert!(host.synchost(&["validate"]).status.success());

    let mut seconds = Vec::new();
    for pipeline in ["rust/main", "python/main"] {
        let started = Instant::now();
        let (ok, report) = host.sync(pipeline, &[]);
        seconds.push(started.elapsed().as_secs_f64());
        assert!(ok, "{pipeline}: {report}");
        assert_eq!(report["stats"]["created"], 20_000, "{pipeline}: {report}");
    }
    let (rust_records, python_records) = (host.records("data/out"), host.records("data/out-python"));
    assert_eq!(rust_records.len(), 20_000);
    assert!(rust_records == python_records, "the two transforms wrote different records");
    eprintln!(
        "first load of 20,000 rows: Rust field mapper {:.2} s, Python pick {:.2} s ({:.2}x)",
        seconds[0],
        seconds[1],
        seconds[1] / seconds[0]
    );
}

#[test]
fn plugin_new_makes_python_projects_that_build_and_pass_plugin_test_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", python::venv().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    for (kind, test_args) in [
        ("transform", vec!["--plugin-config", "config.json", "--fixtures", "fixtures"]),
        ("source", vec!["--plugin-config", "config.json"]),
        ("destination", vec!["--plugin-config", "config.json"]),
    ] {
        let name = format!("py-{kind}");
        let made = Command::new(common::BIN)
            .args(["plugin", "new", &name, "--kind", kind, "--lang", "python"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", common::stderr(&made));
        let project = dir.path().join(&name);
        let built = Command::new(project.join("build.sh")).env("PATH", &path).output().unwrap();
        assert!(
            built.status.success(),
            "{kind}: build.sh failed:\n{}{}",
            common::stdout(&built),
            common::stderr(&built)
        );
        let wasm = format!("py_{kind}.wasm");
        let output = Command::new(common::BIN)
            .args([&["plugin", "test", wasm.as_str(), "--json"][..], &test_args].concat())
            .current_dir(&project)
            .env("XDG_CACHE_HOME", common::shared_cache_dir().join("xdg"))
            .output()
            .unwrap();
        let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{kind}: no JSON ({e}): {}{}", common::stdout(&output), common::stderr(&output))
        });
        assert!(output.status.success() && checks.iter().all(|c| c["outcome"] == "pass"), "{kind}: {checks:#?}");
    }
}
