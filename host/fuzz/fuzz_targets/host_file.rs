//! `synchost.toml` as an operator may write it: any bytes. It loads, or is
//! refused with problems that each name a line of the file and say what is
//! wrong; it never panics and never hangs.

#![no_main]

#[path = "config_check.rs"]
mod config_check;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use synchost::config::HostConfig;

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().expect("a scratch directory"));

fuzz_target!(|data: &[u8]| {
    let path = DIR.path().join("synchost.toml");
    std::fs::write(&path, data).expect("write synchost.toml");
    if let Err(errors) = HostConfig::load(&path) {
        config_check::assert_well_reported(&errors, &path, data);
    }
});
