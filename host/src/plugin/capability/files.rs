//! Files: a plugin sees only the directories its tenant grants it (`dirs`),
//! each preopened in its WASI context under the guest path the grant names,
//! read-only unless the grant says `write = true`. Nothing else of the host's
//! filesystem exists for it.

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::config::DirGrant;
use crate::plugin::error::PluginError;

/// Preopens every granted directory in `wasi`.
pub(in crate::plugin) fn preopen(
    wasi: &mut WasiCtxBuilder,
    plugin: &str,
    dirs: &[DirGrant],
) -> Result<(), PluginError> {
    for dir in dirs {
        let perms = if dir.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| PluginError::Grant {
            plugin: plugin.to_string(),
            detail: format!("cannot open `{}` for `{}`: {e}", dir.host.display(), dir.guest),
        })?;
    }
    Ok(())
}
