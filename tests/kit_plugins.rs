//! Plugins written in Python and JavaScript with synchost's kits
//! (plugins/sdk-python, plugins/sdk-js), built with componentize-py (PyPI)
//! and componentize-js (npm), pinned, as docs/connectors.md has a stranger
//! write them, in an empty directory from the guide's text alone: each
//! language's `pick` transform passes `plugin test` and syncs the same data
//! to the same records as the Rust field mapper with the same config, side
//! by side (the ratio of their run times is printed); each language's HTTP
//! source reads the guide's people API page by page through the host's
//! wasi:http and passes `plugin test`; `plugin new --lang python|js` makes
//! projects of each kind that build and pass `plugin test` as they are.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::people_api::PeopleApi;
use common::{HostDir, guide, javascript, python, sha256};

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

    /// The directory holding the language's componentize tool, installed
    /// (pinned) on first use.
    fn tools(self) -> PathBuf {
        match self {
            Lang::Python => python::venv().join("bin"),
            Lang::Js => javascript::bin_dir(),
        }
    }

    /// PATH with the language's componentize tool first.
    fn path(self) -> String {
        format!("{}:{}", self.tools().display(), std::env::var("PATH").unwrap_or_default())
    }

    /// The guide's sections for this language.
    fn section(self, what: &str) -> String {
        let name = match self {
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        };
        format!("## {what} in {name}")
    }

    /// The line that installs the language's tool, which the test has
    /// installed already, at the version the guide and `plugin new` pin.
    fn install_line(self) -> &'static str {
        match self {
            Lang::Python => "pip install",
            Lang::Js => "npm install",
        }
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

/// Follows the guide's `section` for `lang` in `dir` (its files written, its
/// commands run, a tool install left to the test's own pinned one); returns
/// what the commands printed.
fn follow_guide(lang: Lang, section: &str, dir: &Path, edit: impl Fn(&str) -> String) -> String {
    let text: String = guide::blocks(section).into_iter().map(|(_, body)| body).collect();
    match lang {
        Lang::Python => assert!(
            !text.contains("pip install") || text.contains(python::COMPONENTIZE_PY),
            "{section}: the guide installs another componentize-py than {}",
            python::COMPONENTIZE_PY
        ),
        Lang::Js => {}
    }
    let tools = lang.tools();
    let edit = |script: &str| guide::without_lines(&edit(script), &[lang.install_line()]);
    guide::follow(section, dir, &[&tools], edit).into_iter().map(|(_, printed)| printed).collect()
}

/// Builds the guide's `pick` transform for `lang` into `dir/pick/pick.wasm`.
fn build_pick(lang: Lang, dir: &Path) -> PathBuf {
    let printed = follow_guide(lang, &lang.section("A transform"), dir, str::to_string);
    assert!(printed.contains("4 passed, 0 failed, 0 skipped"), "{lang:?} pick: {printed}");
    dir.join("pick/pick.wasm")
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
fn the_guides_python_http_source_reads_the_api_page_by_page_and_passes_plugin_test() {
    http_source_passes_plugin_test(Lang::Python);
}

#[test]
fn the_guides_javascript_http_source_reads_the_api_page_by_page_and_passes_plugin_test() {
    http_source_passes_plugin_test(Lang::Js);
}

fn http_source_passes_plugin_test(lang: Lang) {
    let api = PeopleApi::start(5);
    let scratch = tempfile::tempdir().unwrap();
    let printed = follow_guide(lang, &lang.section("An HTTP source"), scratch.path(), |script| {
        script.replace("127.0.0.1:8080", &api.address())
    });
    assert!(printed.contains("5 row(s) in 3 page(s), every key once"), "{lang:?}: {printed}");
    assert!(printed.contains("4 passed, 0 failed, 1 skipped"), "{lang:?}: {printed}");

    // What it read, as `plugin run` prints it, and a host it may not reach.
    let dir = scratch.path().join("people");
    let allowed = common::plugin(
        &dir,
        &["run", "people.wasm", "--plugin-config", "config.json", "--allow-host", &api.address(), "--json", "snapshot"],
    );
    let rows = common::stdout(&allowed);
    assert!(allowed.status.success(), "{rows}{}", common::stderr(&allowed));
    assert_eq!(rows.lines().count(), 5, "{rows}");
    assert!(rows.contains(r#""key":"5""#) && rows.contains("p5@example.com"), "{rows}");
    let refused = common::plugin(&dir, &["run", "people.wasm", "--plugin-config", "config.json", "snapshot"]);
    assert!(!refused.status.success(), "a host not granted was reached: {}", common::stdout(&refused));
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
    let output = common::plugin(dir, &[&["test", wasm, "--json"][..], args].concat());
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{wasm}: no JSON ({e}): {}{}", common::stdout(&output), common::stderr(&output)));
    assert!(output.status.success() && checks.iter().all(|c| c["outcome"] == "pass"), "{wasm}: {checks:#?}");
    checks.len()
}
