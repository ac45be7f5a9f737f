//! The Rust SDK as a stranger gets it: `cargo package` of `synchost-model`
//! and `synchost-plugin-sdk` succeeds, and docs/connectors.md's transform,
//! written from the guide's text alone into an empty directory outside this
//! repository, builds against the packaged crates and passes the guide's
//! `plugin run` and `plugin test` commands.
//!
//! The crates are not on crates.io: the plugin's Cargo.toml, as the guide
//! writes it, asks for `synchost-plugin-sdk = "0.1"`, and a `[patch]` points
//! that name (and the model's) at the unpacked `.crate` files, as a registry
//! would serve them. Nothing in the build can reach back into the repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cargo;

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

/// The fenced blocks of a section of the guide: `(info string, body)`.
fn blocks(guide: &str, section: &str) -> Vec<(String, String)> {
    let start = guide.find(section).unwrap_or_else(|| panic!("the guide has no section `{section}`"));
    let rest = &guide[start + section.len()..];
    let rest = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut found = Vec::new();
    let mut lines = rest.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            found.push((info.to_string(), body.join("\n") + "\n"));
        }
    }
    found
}

#[test]
fn the_guides_transform_builds_from_the_packaged_sdk_outside_the_repository_and_passes_plugin_test() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = scratch("target");

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

    // The packages, unpacked where a registry would put them.
    let registry = scratch("registry");
    let _ = std::fs::remove_dir_all(&registry);
    unpack(&Path::new(model_target).join("package/synchost-model-0.1.0.crate"), &registry);
    unpack(&Path::new(sdk_target).join("package/synchost-plugin-sdk-0.1.0.crate"), &registry);
    assert!(registry.join("synchost-plugin-sdk-0.1.0/wit/worlds.wit").exists(), "the SDK carries its WIT");

    // The guide's files, into an empty directory.
    let guide = std::fs::read_to_string(repo.join("docs/connectors.md")).unwrap();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().join("upper");
    for (info, body) in blocks(&guide, "## A transform in Rust") {
        if let Some(file) = info.split_whitespace().find_map(|word| word.strip_prefix("file=")) {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
    }
    let mut manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("the guide writes Cargo.toml");
    manifest += &format!(
        "\n[patch.crates-io]\nsynchost-plugin-sdk = {{ path = {:?} }}\nsynchost-model = {{ path = {:?} }}\n",
        registry.join("synchost-plugin-sdk-0.1.0").to_str().unwrap(),
        registry.join("synchost-model-0.1.0").to_str().unwrap()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    let plugin_target = target.join("plugin");
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2", "--target-dir", plugin_target.to_str().unwrap()]);
    std::fs::create_dir_all(dir.join("target/wasm32-wasip2/release")).unwrap();
    std::fs::copy(
        plugin_target.join("wasm32-wasip2/release/upper.wasm"),
        dir.join("target/wasm32-wasip2/release/upper.wasm"),
    )
    .expect("the build made a component");

    // The guide's commands, as a shell runs them, with this build's synchost.
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for (info, script) in blocks(&guide, "## Edit, run, test") {
        if info != "sh" {
            continue;
        }
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .env("PATH", &path)
            .env("XDG_CACHE_HOME", project.path().join("cache"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "the guide's commands failed:\n{script}\n---\n{text}");
        if script.contains("plugin run") {
            assert!(text.contains(r#"1  {"id":"1","name":"ADA"}"#) && !text.contains(r#""2""#), "{text}");
        }
        if script.contains("plugin test") {
            assert!(text.contains("4 passed, 0 failed, 0 skipped"), "{text}");
            assert!(text.contains("rejected: row `9`"), "{text}");
        }
    }
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
    for kit in ["plugins/sdk/wit", "plugins/sdk-python/wit", "plugins/sdk-js/wit"] {
        let copy = repo.join(kit);
        assert_eq!(names(&host), names(&copy), "{kit}/ must hold the same files as wit/");
        for name in names(&host) {
            assert_eq!(
                std::fs::read_to_string(host.join(&name)).unwrap(),
                std::fs::read_to_string(copy.join(&name)).unwrap(),
                "{kit}/{name} differs from wit/{name}: copy wit/*.wit into {kit}/"
            );
        }
    }
}
