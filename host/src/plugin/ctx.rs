//! The state each plugin instance's store carries: its WASI context (with only
//! the directories its tenant granted), its HTTP policy, its SQL and JetStream
//! grants, its limits, where its output goes, and what the `host` interface
//! hands it.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capability::http::HttpPolicy;
use super::capability::jetstream::JetStreamGrants;
use super::capability::logging::PluginOutput;
use super::capability::services::HostServices;
use super::capability::sql::SqlGrants;
use super::error::PluginError;
use super::instance::PluginSetup;

/// Resources (streams, HTTP requests, directory handles...) one instance may
/// hold at once; past this, the WASI call that would add one fails.
const MAX_RESOURCES: usize = 10_000;

/// Per-instance state. One per store; never shared between tenants.
pub struct PluginCtx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    table: ResourceTable,
    pub(super) output: PluginOutput,
    pub(super) limits: StoreLimits,
    pub(super) tenant: String,
    pub(super) plugin: String,
    pub(super) config_json: String,
    pub(super) secrets: BTreeMap<String, String>,
    pub(super) fence: Option<super::bindings::host::Fence>,
    pub(super) sql: SqlGrants,
    pub(super) jetstream: JetStreamGrants,
}

impl PluginCtx {
    pub(super) fn new(setup: &PluginSetup, services: &Arc<HostServices>) -> Result<PluginCtx, PluginError> {
        // Deny by default: no env, args, stdin or sockets; stdout and stderr go
        // to the log, capped; only the granted directories are visible. HTTP
        // goes through `wasi:http` and the plugin's allowed_hosts, never raw
        // sockets.
        let output = PluginOutput::new(&setup.tenant, &setup.plugin, setup.limits.max_log_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        wasi.stdout(output.stdout()).stderr(output.stderr());
        // Plugin calls already run on a thread of their own, off any async
        // runtime: file I/O done right there saves a hop to a blocking pool per
        // read (set before the preopens, which take it over).
        wasi.allow_blocking_current_thread(true);
        super::capability::files::preopen(&mut wasi, &setup.plugin, &setup.dirs)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(setup.limits.memory_bytes as usize)
            .instances(64)
            .tables(64)
            .table_elements(100_000)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(PluginCtx {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy::new(&setup.tenant, &setup.plugin, &setup.allowed_hosts, setup.limits),
            table,
            output,
            limits,
            tenant: setup.tenant.clone(),
            plugin: setup.plugin.clone(),
            config_json: setup.config.to_string(),
            secrets: setup.secrets.clone(),
            fence: setup.fence.clone(),
            sql: SqlGrants::new(&setup.tenant, &setup.plugin, &setup.connections, services.clone()),
            jetstream: JetStreamGrants::new(&setup.tenant, &setup.plugin, &setup.streams, services.clone()),
        })
    }

    /// The monotonic clock, its timers bounded by the call's deadline.
    pub(super) fn deadline_clocks(&mut self) -> super::deadline::DeadlineClocksView<'_> {
        super::deadline::DeadlineClocksView { clocks: wasmtime_wasi::clocks::WasiClocksView::clocks(self) }
    }

    /// The instance's resources: WASI's, and the host interfaces' own.
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_policy }
    }
}
