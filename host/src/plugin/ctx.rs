//! The state each plugin instance's store carries: its WASI context (with only
//! the directories its tenant granted), its limits, and what the `host`
//! interface hands it.

use std::collections::BTreeMap;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::error::PluginError;
use super::instance::PluginSetup;

/// Per-instance state. One per store; never shared between tenants.
pub struct PluginCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) tenant: String,
    pub(super) plugin: String,
    pub(super) config_json: String,
    pub(super) secrets: BTreeMap<String, String>,
}

impl PluginCtx {
    pub(super) fn new(setup: &PluginSetup) -> Result<PluginCtx, PluginError> {
        // Deny by default: no env, args, stdin or sockets; stdout and stderr go
        // nowhere; only the granted directories are visible.
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        // Plugin calls already run on a thread of their own, off any async
        // runtime: file I/O done right there saves a hop to a blocking pool per
        // read (set before the preopens, which take it over).
        wasi.allow_blocking_current_thread(true);
        for dir in &setup.dirs {
            let perms = if dir.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| PluginError::Grant {
                plugin: setup.plugin.clone(),
                detail: format!("cannot open `{}` for `{}`: {e}", dir.host.display(), dir.guest),
            })?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(setup.limits.memory_bytes as usize)
            .instances(64)
            .tables(64)
            .table_elements(100_000)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        Ok(PluginCtx {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            tenant: setup.tenant.clone(),
            plugin: setup.plugin.clone(),
            config_json: setup.config.to_string(),
            secrets: setup.secrets.clone(),
        })
    }
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
