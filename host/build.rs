//! Builds the plugins in `../plugins` for wasm32-wasip2 and tells the host
//! crate where they are (`SYNCHOST_PLUGIN_DIR`), so that the binary can carry
//! the bundled plugins and the tests can load them. Nothing prebuilt is kept
//! in the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGINS: &[&str] = &[
    "file-source",
    "file-destination",
    "field-mapper",
    "rest-destination",
    "sql-source",
    "sql-destination",
    "jetstream-source",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let plugins = root.join("plugins");
    watch(&plugins.join("Cargo.toml"));
    watch(&plugins.join("Cargo.lock"));
    watch(&root.join("wit"));
    for entry in std::fs::read_dir(&plugins).unwrap().flatten() {
        if entry.path().join("Cargo.toml").is_file() {
            watch(&entry.path().join("Cargo.toml"));
            watch(&entry.path().join("src"));
        }
    }
    // Test-only plugins, built beside the bundled ones but not embedded.
    watch(&plugins.join("fixtures"));

    // The outer build holds the lock on its target directory: the plugins get
    // their own, beside the profile directories so that it survives
    // `cargo build` and `cargo test` alike and is built once for both.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.ancestors().nth(4).unwrap().join("wasm-plugins");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    // What the outer build sets for itself must not leak into the plugins' build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PROFILE_")
            || name.starts_with("CARGO_BUILD_")
            || name.starts_with("CARGO_TARGET_")
            || matches!(
                name.as_ref(),
                "RUSTFLAGS" | "CARGO_ENCODED_RUSTFLAGS" | "RUSTC_WORKSPACE_WRAPPER" | "CARGO_TARGET_DIR"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.status().expect("cannot run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the plugins failed ({status}); is the wasm32-wasip2 target installed? \
             rust-toolchain.toml asks rustup for it"
        );
    }

    let built = target_dir.join("wasm32-wasip2").join("release");
    for plugin in PLUGINS {
        let file = built.join(format!("{}.wasm", plugin.replace('-', "_")));
        assert!(file.is_file(), "the plugin build did not produce {}", file.display());
    }
    println!("cargo:rustc-env=SYNCHOST_PLUGIN_DIR={}", built.display());
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
