//! A tenant file as a tenant may write it: any bytes, beside a host directory
//! with the bundled plugins. It loads, or is refused with problems that each
//! name a line of the file and say what is wrong; it never panics and never
//! hangs.

#![no_main]

#[path = "config_check.rs"]
mod config_check;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use synchost::config::{HostConfig, TenantConfig};

struct Host {
    dir: tempfile::TempDir,
    config: HostConfig,
}

static HOST: LazyLock<Host> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a scratch directory");
    for sub in ["plugins", "tenants", "data/in", "data/out"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for plugin in synchost::bundled::ALL {
        std::fs::write(dir.path().join("plugins").join(plugin.file_name), plugin.bytes).unwrap();
    }
    std::fs::write(dir.path().join("synchost.toml"), "state_dir = \"state\"\n").unwrap();
    let config = HostConfig::load(&dir.path().join("synchost.toml")).expect("the host config loads");
    Host { dir, config }
});

fuzz_target!(|data: &[u8]| {
    let path = HOST.dir.path().join("tenants").join("fuzz.toml");
    std::fs::write(&path, data).expect("write the tenant file");
    if let Err(errors) = TenantConfig::load(&path, &HOST.config) {
        config_check::assert_well_reported(&errors, &path, data);
    }
});
