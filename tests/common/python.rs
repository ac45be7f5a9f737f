//! Python tools the tests drive (Playwright, schemathesis, componentize-py), installed at
//! pinned versions into one virtual environment under the target directory,
//! and Debian's chromium for the browser tests. The first test that needs
//! them installs them; a machine that cannot fails the test, naming the step.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The componentize-py the Python kit, `plugin new` and the guide pin.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The pinned packages: what the browser, API and Python plugin tests were
/// written against.
pub const PACKAGES: &[&str] = &["playwright==1.65.2", "schemathesis==4.32.5", COMPONENTIZE_PY];

fn run(what: &str, command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The virtual environment with [`PACKAGES`], made on first use. Tests in
/// other processes wait for the one making it (a lock file).
pub fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-tools");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let venv = dir.join("venv");
    let stamp = venv.join("synchost-packages.txt");
    let wanted = PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        run("making a Python virtual environment", Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(
            "installing the pinned Python test tools from PyPI",
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES),
        );
        std::fs::write(&stamp, &wanted).unwrap();
    }
    venv
}

/// Debian's chromium, installed with apt-get when missing and this test
/// runs as root (as CI does); elsewhere the failure says what to install.
pub fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return path;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-tools");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".apt-lock")).unwrap();
    lock.lock().unwrap();
    if !path.exists() {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        assert!(root, "the browser tests need Debian's chromium: run `apt-get install chromium` as root");
        run("apt-get update", Command::new("apt-get").args(["update", "-qq"]));
        run(
            "installing chromium",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
    }
    path
}
