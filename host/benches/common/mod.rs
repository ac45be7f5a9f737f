//! What every benchmark needs: a host directory with the bundled plugins,
//! their pinned digests, and the median of its rounds.

#![allow(dead_code)] // each bench uses what it needs

use std::path::Path;

pub mod students;

/// Makes `subdirs` under `dir` and writes every bundled plugin into
/// `dir/plugins`, as a host directory holds them.
pub fn prepare_host_dir(dir: &Path, subdirs: &[&str]) -> std::io::Result<()> {
    for sub in ["plugins"].iter().chain(subdirs) {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for plugin in synchost::bundled::ALL {
        std::fs::write(dir.join("plugins").join(plugin.file_name), plugin.bytes)?;
    }
    Ok(())
}

/// The sha256 a tenant file pins a plugin with.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The median of a benchmark's rounds (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
