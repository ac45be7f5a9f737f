//! Builds the plugins in `../plugins` for wasm32-wasip2 and tells the host
//! crate where they are (`SYNCHOST_PLUGIN_DIR`), so that the binary can carry
//! the bundled plugins and the tests can load them. Nothing prebuilt is kept
//! in the repository.
//!
//! A fresh machine has rustup's toolchain with the host target only, and
//! rustup does not add the `targets` of `rust-toolchain.toml` to a toolchain
//! that is already installed: the first thing this script does is make sure
//! the toolchain building us has the wasm32-wasip2 standard library, adding
//! it through rustup when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the plugins are compiled for.
const WASM_TARGET: &str = "wasm32-wasip2";

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
    watch(&plugins.join("sdk/build.rs"));
    watch(&plugins.join("sdk/wit"));
    write_vendored_sources(root);

    // The outer build holds the lock on its target directory: the plugins get
    // their own, beside the profile directories so that it survives
    // `cargo build` and `cargo test` alike and is built once for both.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.ancestors().nth(4).unwrap().join("wasm-plugins");

    ensure_wasm_target();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
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
        panic!("building the plugins in {} failed ({status}); cargo's output above says why", plugins.display());
    }

    let built = target_dir.join(WASM_TARGET).join("release");
    for plugin in PLUGINS {
        let file = built.join(format!("{}.wasm", plugin.replace('-', "_")));
        assert!(file.is_file(), "the plugin build did not produce {}", file.display());
    }
    println!("cargo:rustc-env=SYNCHOST_PLUGIN_DIR={}", built.display());
}

/// Adds the wasm32-wasip2 standard library to the toolchain that runs this
/// build when it lacks it, or stops at once with the command that does.
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if wasm_target_installed(&rustc) {
        return;
    }
    // rustup's proxies name the toolchain they run in RUSTUP_TOOLCHAIN; the
    // target goes to that one, not to whatever rustup's default is.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let fix = match &toolchain {
        Some(toolchain) => format!("rustup target add {WASM_TARGET} --toolchain {toolchain}"),
        None => format!("rustup target add {WASM_TARGET}"),
    };
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = &toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    let added = match rustup.status() {
        Ok(status) if status.success() => wasm_target_installed(&rustc),
        Ok(status) => {
            eprintln!("`{fix}` failed ({status})");
            false
        }
        Err(e) => {
            eprintln!("cannot run rustup: {e}");
            false
        }
    };
    if added {
        // Past tense: cargo shows a build script's warnings again on later
        // builds that reuse its output, and this stays true of them.
        println!(
            "cargo:warning=the {WASM_TARGET} target was missing from this toolchain; the build added it (`{fix}`)"
        );
    } else {
        panic!(
            "the plugins are built for {WASM_TARGET}, whose standard library this toolchain lacks, \
             and adding it failed; run `{fix}` and build again"
        );
    }
}

/// Whether `rustc` has the standard library for the wasm target.
fn wasm_target_installed(rustc: &std::ffi::OsStr) -> bool {
    let output = Command::new(rustc).args(["--print", "target-libdir", "--target", WASM_TARGET]).output();
    match output {
        Ok(output) if output.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            // The directory exists once rustup has put the target's std there.
            std::fs::read_dir(&dir).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
            })
        }
        _ => false,
    }
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Writes `vendored.rs` into OUT_DIR: the SDK's and the model's sources, and
/// the Python kit's, which `synchost plugin new` puts into a new plugin
/// project (vendor/), so that it builds against what this host expects
/// without a registry.
fn write_vendored_sources(root: &Path) {
    let crates = [("synchost-plugin-sdk", root.join("plugins/sdk")), ("synchost-model", root.join("host/model"))];
    let mut files = Vec::new();
    for (name, dir) in &crates {
        watch(&dir.join("Cargo.toml"));
        watch(&dir.join("src"));
        let mut found = vec![dir.join("Cargo.toml")];
        if dir.join("build.rs").is_file() {
            found.push(dir.join("build.rs"));
        }
        collect(&dir.join("src"), &mut found);
        collect(&dir.join("wit"), &mut found);
        for file in found {
            let relative = file.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
            files.push((format!("{name}/{relative}"), file));
        }
    }
    // The Python kit: its modules, and its own WIT beside the host's (its
    // worlds that import wasi:http, and the WASI packages those need).
    let kit = root.join("plugins/sdk-python");
    watch(&kit.join("synchost_sdk"));
    watch(&kit.join("wit"));
    let mut found = vec![kit.join("wit/kit.wit")];
    collect(&kit.join("wit/deps"), &mut found);
    collect(&kit.join("synchost_sdk"), &mut found);
    for file in found {
        let relative = file.strip_prefix(&kit).unwrap().to_string_lossy().replace('\\', "/");
        files.push((format!("sdk-python/{relative}"), file));
    }
    let mut out = String::from(
        "/// (path under vendor/, content) of every vendored file.\npub const VENDORED: &[(&str, &[u8])] = &[\n",
    );
    for (path, file) in files {
        out += &format!("    ({path:?}, include_bytes!({:?})),\n", file.display().to_string());
    }
    out += "];\n";
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("vendored.rs"), out).unwrap();
}

/// Every `.rs`, `.wit` and `.py` file below `dir`, if it exists.
fn collect(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "wit" || e == "py") {
            into.push(path);
        }
    }
}
