//! Plugins written in Python and JavaScript with synchost's kits
//! (plugins/sdk-python, plugins/sdk-js), built with componentize-py (PyPI)
//! and componentize-js (npm), pinned: each kit's `pick` example passes
//! `plugin test` and syncs the same data to the same records as the Rust
//! field mapper with the same config, side by side (the ratio of their run
//! times is printed); `plugin new --lang python|js` makes projects of each
//! kind that build and pass `plugin test` as they are.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{HostDir, javascript, python, sha256};

/// A language a kit is for.
#[derive(Clone, Copy, Debug)]
enum Lang {
    Python,
    Js,
}

impl Lang {
    fn flag(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// PATH with the language's componentize tool first.
    fn path(self) -> String {
        let tools = match self {
            Lang::Python => python::venv().join("bin"),
            Lang::Js => javascript::bin_dir(),
        };
        format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default())
    }
}

fn run(what: &str, command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds the kit's `pick` example into `dir/pick.wasm`.
fn build_pick(lang: Lang, dir: &Path) -> PathBuf {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let out = dir.join("pick.wasm");
    match lang {
        Lang::Python => {
            let kit = plugins.join("sdk-python");
            run(
                "componentize-py",
                Command::new("componentize-py")
                    .env("PATH", lang.path())
                    .arg("-d")
                    .arg(kit.join("wit"))
                    .args(["-w", "synchost:plugin/transform-plugin", "componentize", "app", "-p"])
                    .arg(kit.join("examples/pick"))
                    .arg("-p")
                    .arg(&kit)
                    .arg("-o")
                    .arg(&out),
            );
        }
        Lang::Js => {
            // componentize-js resolves imports within the app's directory.
            let kit = plugins.join("sdk-js");
            let app = dir.join("pick-js");
            std::fs::create_dir_all(&app).unwrap();
            std::fs::copy(kit.join("examples/pick/app.js"), app.join("app.js")).unwrap();
            std::fs::copy(kit.join("synchost-sdk.js"), app.join("synchost-sdk.js")).unwrap();
            run(
                "componentize-js",
                Command::new("componentize-js")
                    .env("PATH", lang.path())
                    .current_dir(&app)
                    .arg("--wit")
                    .arg(kit.join("wit"))
                    .args(["--world-name", "synchost:plugin/transform-plugin", "--out"])
                    .arg(&out)
                    .arg("app.js"),
            );
        }
    }
    out
}

#[test]
fn a_python_transform_passes_plugin_test_and_syncs_as_the_rust_one_does() {
    pick_passes_plugin_test_and_syncs_as_the_rust_field_mapper(Lang::Python);
}

#[test]
fn a_javascript_transform_passes_plugin_test_and_syncs_as_the_rust_one_does() {
    pick_passes_plugin_test_and_syncs_as_the_rust_field_mapper(Lang::Js);
}

fn pick_passes_plugin_test_and_syncs_as_the_rust_field_mapper(lang: Lang) {
    let scratch = tempfile::tempdir().unwrap();
    let pick = build_pick(lang, scratch.path());
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(fixtures.join("input.csv"), "id,first,last\n1,Ada,Lovelace\n2,Grace,Hopper\n").unwrap();
    std::fs::write(fixtures.join("bad.jsonl"), "{\"id\": \"\", \"first\": \"nobody\"}\n").unwrap();
    std::fs::write(scratch.path().join("config.json"), r#"{"fields": [{"name": "given", "from": "first"}]}"#).unwrap();
    let passed =
        passes_plugin_test(scratch.path(), "pick.wasm", &["--plugin-config", "config.json", "--fixtures", "fixtures"]);
    assert_eq!(passed, 4, "{lang:?} pick");

    // The same rows through the Rust field mapper and the kit's pick, with
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
        "first load of 20,000 rows: Rust field mapper {:.2} s, {lang:?} pick {:.2} s ({:.2}x)",
        seconds[0],
        seconds[1],
        seconds[1] / seconds[0]
    );
}

#[test]
fn plugin_new_makes_python_projects_that_build_and_pass_plugin_test_as_they_are() {
    new_projects_build_and_pass_plugin_test(Lang::Python);
}

#[test]
fn plugin_new_makes_javascript_projects_that_build_and_pass_plugin_test_as_they_are() {
    new_projects_build_and_pass_plugin_test(Lang::Js);
}

fn new_projects_build_and_pass_plugin_test(lang: Lang) {
    let dir = tempfile::tempdir().unwrap();
    let path = lang.path();
    for (kind, test_args) in [
        ("transform", vec!["--plugin-config", "config.json", "--fixtures", "fixtures"]),
        ("source", vec!["--plugin-config", "config.json"]),
        ("destination", vec!["--plugin-config", "config.json"]),
    ] {
        let name = format!("new-{kind}");
        let made = Command::new(common::BIN)
            .args(["plugin", "new", &name, "--kind", kind, "--lang", lang.flag()])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", common::stderr(&made));
        let project = dir.path().join(&name);
        run(&format!("{lang:?} {kind}: build.sh"), Command::new(project.join("build.sh")).env("PATH", &path));
        passes_plugin_test(&project, &format!("new_{kind}.wasm"), &test_args);
    }
}

/// Runs `synchost plugin test WASM ARGS` in `dir`, checks that every check
/// passed, and returns how many there were.
fn passes_plugin_test(dir: &Path, wasm: &str, args: &[&str]) -> usize {
    let output = Command::new(common::BIN)
        .args([&["plugin", "test", wasm, "--json"][..], args].concat())
        .current_dir(dir)
        .env("XDG_CACHE_HOME", common::shared_cache_dir().join("xdg"))
        .output()
        .unwrap();
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{wasm}: no JSON ({e}): {}{}", common::stdout(&output), common::stderr(&output)));
    assert!(output.status.success() && checks.iter().all(|c| c["outcome"] == "pass"), "{wasm}: {checks:#?}");
    checks.len()
}
