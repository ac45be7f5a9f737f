//! The Rust SDK as a stranger gets it: `cargo package` of `synchost-model`
//! and `synchost-plugin-sdk` succeeds, and docs/connectors.md's transform,
//! written from the guide's text alone into an empty directory outside this
//! repository, builds against the packaged crates and passes the guide's
//! `plugin run` and `plugin test` commands; so does its HTTP source, against
//! the API the guide describes.
//!
//! The crates are not on crates.io: the plugin's Cargo.toml, as the guide
//! writes it, asks for `synchost-plugin-sdk = "0.1"`, and a `[patch]` points
//! that name (and the model's) at the unpacked `.crate` files, as a registry
//! would serve them. Nothing in the build can reach back into the repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cargo, guide};

/// Where this test's builds go: kept between runs, so that only the first
/// compiles wit-bindgen and serde for wasm.
fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-package").join(name)
}

/// Unpacks a `.crate` (a gzipped tar) into `into`.
fn unpack(file: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("tar").arg("xzf").arg(file).arg("-C").arg(into).status().unwrap();
    assert!(status.success(), "cannot unpack {}", file.display());
}

/// `cargo package` of the model and the SDK, unpacked where a registry
/// would put them; returns that directory.
fn packaged_sdk(repo: &Path, target: &Path) -> PathBuf {
    // `cargo package` of both crates, verified (each built from its package).
    let model_target = target.join("model");
    let model_target = model_target.to_str().unwrap();
    cargo(repo, &["package", "-p", "synchost-model", "--allow-dirty", "--target-dir", model_target]);
    let sdk_target = target.join("sdk");
    let sdk_target = sdk_target.to_str().unwrap();
    let model_dir = repo.join("host/model");
    let patch = format!("patch.crates-io.synchost-model.path={:?}", model_dir.to_str().unwrap());
    let manifest = repo.join("plugins/Cargo.toml");
    cargo(
        repo,
        &[
            "package",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-p",
            "synchost-plugin-sdk",
            "--allow-dirty",
            "--target-dir",
            sdk_target,
            "--config",
            &patch,
        ],
    );
    let registry = scratch("registry");
    let _ = std::fs::remove_dir_all(&registry);
    unpack(&Path::new(model_target).join("package/synchost-model-0.1.0.crate"), &registry);
    unpack(&Path::new(sdk_target).join("package/synchost-plugin-sdk-0.1.0.crate"), &registry);
    assert!(registry.join("synchost-plugin-sdk-0.1.0/wit/worlds.wit").exists(), "the SDK carries its WIT");
    registry
}

/// Writes the files of the guide's `section` (its blocks marked `file=PATH`)
/// into `dir`, points the SDK at `registry`, and builds the plugin, leaving
/// it where the guide's commands look for it.
fn build_from_guide(section: &str, dir: &Path, registry: &Path, target: &Path, crate_name: &str) {
    guide::write_files(section, dir);
    let mut manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("the guide writes Cargo.toml");
    manifest += &format!(
        "\n[patch.crates-io]\nsynchost-plugin-sdk = {{ path = {:?} }}\nsynchost-model = {{ path = {:?} }}\n",
        registry.join("synchost-plugin-sdk-0.1.0").to_str().unwrap(),
        registry.join("synchost-model-0.1.0").to_str().unwrap()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    let plugin_target = target.join("plugin");
    cargo(dir, &["build", "--release", "--target", "wasm32-wasip2", "--target-dir", plugin_target.to_str().unwrap()]);
    std::fs::create_dir_all(dir.join("target/wasm32-wasip2/release")).unwrap();
    let wasm = format!("wasm32-wasip2/release/{crate_name}.wasm");
    std::fs::copy(plugin_target.join(&wasm), dir.join("target").join(&wasm)).expect("the build made a component");
}

/// Runs the guide's `sh` blocks of `section` in `dir`, each through `edit`,
/// without the `cargo build` the test did with its own registry; returns
/// each with what it printed.
fn run_guide_commands(section: &str, dir: &Path, edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let mut ran = Vec::new();
    for (info, script) in guide::blocks(section) {
        if info == "sh" {
            let script = guide::without_lines(&edit(&script), &["cargo build", "rustup target add"]);
            let printed = guide::run(&script, dir, &[]);
            ran.push((script, printed));
        }
    }
    ran
}

#[test]
fn the_guides_rust_plugins_build_from_the_packaged_sdk_outside_the_repository_and_pass_plugin_test() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = scratch("target");
    let registry = packaged_sdk(repo, &target);

    // The transform: the guide's files into an empty directory, then its
    // commands.
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().join("upper");
    build_from_guide("## A transform in Rust", &dir, &registry, &target, "upper");
    let ran = run_guide_commands("## Edit, run, test", &dir, str::to_string);
    for (script, text) in &ran {
        if script.contains("plugin run") {
            assert!(text.contains(r#"1  {"id":"1","name":"ADA"}"#) && !text.contains(r#""2""#), "{text}");
        }
        if script.contains("plugin test") {
            assert!(text.contains("4 passed, 0 failed, 0 skipped"), "{text}");
            assert!(text.contains("rejected: row `9`"), "{text}");
        }
    }
    assert!(ran.iter().any(|(script, _)| script.contains("plugin test")), "the guide tests the transform");

    // The HTTP source, against the API it describes (on a port of its own).
    let api = common::people_api::PeopleApi::start(5);
    let dir = project.path().join("people");
    build_from_guide("## An HTTP source in Rust", &dir, &registry, &target, "people");
    let ran = run_guide_commands("## An HTTP source in Rust", &dir, |script| {
        script.replace("127.0.0.1:8080", &api.address())
    });
    let (_, text) = ran.iter().find(|(script, _)| script.contains("plugin test")).expect("the guide tests the source");
    assert!(text.contains("5 row(s) in 3 page(s), every key once"), "{text}");
    assert!(text.contains("4 passed, 0 failed, 1 skipped"), "{text}");
}

#[test]
fn the_sdks_own_unit_tests_pass_natively() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = repo.join("plugins/Cargo.toml");
    let target = scratch("native");
    let text = cargo(
        repo,
        &[
            "test",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-p",
            "synchost-plugin-sdk",
            "--target-dir",
            target.to_str().unwrap(),
        ],
    );
    assert!(text.contains("test result: ok") && !text.contains(" 0 passed; 0 failed; 0 ignored"), "{text}");
}

#[test]
fn the_wit_the_kits_carry_is_the_hosts() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".wit"))
            .collect();
        names.sort();
        names
    };
    let host = repo.join("wit");
    // The Python kit adds its own worlds (those with wasi:http) in kit.wit.
    for (kit, own) in
        [("plugins/sdk/wit", None), ("plugins/sdk-python/wit", Some("kit.wit")), ("plugins/sdk-js/wit", None)]
    {
        let copy = repo.join(kit);
        let carried: Vec<String> = names(&copy).into_iter().filter(|name| Some(name.as_str()) != own).collect();
        assert_eq!(names(&host), carried, "{kit}/ must hold the same files as wit/");
        for name in names(&host) {
            assert_eq!(
                std::fs::read_to_string(host.join(&name)).unwrap(),
                std::fs::read_to_string(copy.join(&name)).unwrap(),
                "{kit}/{name} differs from wit/{name}: copy wit/*.wit into {kit}/"
            );
        }
    }
}
