//! componentize-js (npm @bytecodealliance/componentize-js, pinned), installed
//! once under the target directory for the JavaScript plugin tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned version the JavaScript kit was written against.
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// The directory holding `componentize-js` (node_modules/.bin), installed
/// on first use; tests in other processes wait for the one installing it.
pub fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("js-tools");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let stamp = dir.join("installed.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(COMPONENTIZE_JS) {
        let output = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(COMPONENTIZE_JS)
            .output()
            .unwrap_or_else(|e| panic!("the JavaScript plugin tests need npm (Node.js): {e}"));
        assert!(
            output.status.success(),
            "npm install {COMPONENTIZE_JS} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp, COMPONENTIZE_JS).unwrap();
    }
    dir.join("node_modules/.bin")
}
