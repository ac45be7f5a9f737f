//! Live plugin instances: a store each, every call under the plugin's limits
//! (deadline, memory, stack, fuel when metered, and caps on what a call may
//! return). An instance whose call failed inside wasm is never called again;
//! the sync that used it makes a new one when it runs next.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::Store;

pub use super::bindings::Transformed;
pub use super::bindings::host::Fence;
use super::bindings::{DestinationPlugin, SourcePlugin, TransformPlugin};
use super::ctx::PluginCtx;
use super::engine::{CompiledPlugin, EPOCH_TICK, MAX_WASM_STACK, PluginEngine, WorldPre};
use super::error::{PluginError, WitError};
use super::kind::PluginKind;
use super::legacy;
use super::types::{Change, EventBatch, OperationBatch, Page, PluginInfo, Row, Table, Value};
use crate::config::{AllowedHost, ConnectionConfig, DirGrant, Limits, PluginConfig, StreamConfig};

/// What one tenant grants one plugin.
#[derive(Debug, Clone)]
pub struct PluginSetup {
    pub tenant: String,
    pub plugin: String,
    /// The plugin's config table, as `host.config()` returns it.
    pub config: serde_json::Value,
    pub dirs: Vec<DirGrant>,
    pub secrets: BTreeMap<String, String>,
    pub allowed_hosts: Vec<AllowedHost>,
    /// The SQL connections the plugin may open.
    pub connections: Vec<Arc<ConnectionConfig>>,
    /// The JetStream streams the plugin may fetch from.
    pub streams: Vec<Arc<StreamConfig>>,
    pub limits: Limits,
    /// The lease of the run the instance works for, as `host.run-fence()`
    /// returns it; none outside a run.
    pub fence: Option<Fence>,
}

impl PluginSetup {
    pub fn from_config(tenant: &str, plugin: &PluginConfig) -> PluginSetup {
        PluginSetup {
            tenant: tenant.to_string(),
            plugin: plugin.name.clone(),
            config: plugin.config.clone(),
            dirs: plugin.dirs.clone(),
            secrets: plugin.secrets.clone(),
            allowed_hosts: plugin.allowed_hosts.clone(),
            connections: plugin.connections.clone(),
            streams: plugin.streams.clone(),
            limits: plugin.limits,
            fence: None,
        }
    }

    /// A setup with nothing granted and default limits, for inspecting a plugin.
    pub fn bare(plugin: &str) -> PluginSetup {
        PluginSetup {
            tenant: "-".into(),
            plugin: plugin.to_string(),
            config: serde_json::json!({}),
            dirs: vec![],
            secrets: BTreeMap::new(),
            allowed_hosts: vec![],
            connections: vec![],
            streams: vec![],
            limits: Limits::default(),
            fence: None,
        }
    }
}

/// A store with the rules every call goes through.
struct Sandbox {
    store: Store<PluginCtx>,
    limits: Limits,
    fuel_metering: bool,
    /// Set once a call failed inside wasm: the instance may be in any state.
    broken: bool,
}

impl Sandbox {
    fn new(engine: &PluginEngine, setup: &PluginSetup) -> Result<Sandbox, PluginError> {
        let mut store = Store::new(engine.engine(), PluginCtx::new(setup, engine.services())?);
        store.limiter(|ctx| &mut ctx.limits);
        store.epoch_deadline_trap();
        store.set_hostcall_fuel(hostcall_fuel(&setup.limits));
        Ok(Sandbox { store, limits: setup.limits, fuel_metering: engine.fuel_metering(), broken: false })
    }

    fn tenant(&self) -> String {
        self.store.data().tenant.clone()
    }

    fn plugin(&self) -> String {
        self.store.data().plugin.clone()
    }

    /// Runs one call into the guest under the deadline, naming `call` in errors.
    fn call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&mut Store<PluginCtx>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        if self.broken {
            return Err(PluginError::Trapped {
                tenant: self.tenant(),
                plugin: self.plugin(),
                call,
                detail: "an earlier call failed and the instance was discarded".into(),
            });
        }
        let ticks = self.limits.call_timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        self.store.set_epoch_deadline(ticks);
        if self.fuel_metering {
            // Plugins without a fuel limit of their own run unmetered in effect.
            let fuel = self.limits.fuel.unwrap_or(u64::MAX);
            self.store.set_fuel(fuel).expect("the engine meters fuel");
        }
        let started = std::time::Instant::now();
        let deadline = started + self.limits.call_timeout;
        let result = super::deadline::during_call(deadline, || f(&mut self.store));
        self.store.data().output.end_call();
        let data = self.store.data();
        crate::metrics::plugin_call(&data.tenant, &data.plugin, call, started.elapsed().as_secs_f64());
        // A call that comes back only after its deadline went past its
        // limit, however it got there: a wait in a host call that the
        // deadline cut short (the plugin never got the hour it slept for)
        // returns in time to the host, but not to the plugin's contract.
        if result.is_ok() && std::time::Instant::now() >= deadline {
            self.broken = true;
            let error = self.timed_out(call);
            crate::metrics::plugin_error(&error);
            return Err(error);
        }
        result.map_err(|e| {
            self.broken = true;
            let error = self.classify(call, e);
            crate::metrics::plugin_error(&error);
            error
        })
    }

    fn timed_out(&self, call: &'static str) -> PluginError {
        PluginError::LimitExceeded {
            tenant: self.tenant(),
            plugin: self.plugin(),
            call,
            limit: "call_timeout",
            detail: humantime::format_duration(self.limits.call_timeout).to_string(),
        }
    }

    fn classify(&self, call: &'static str, error: wasmtime::Error) -> PluginError {
        let limit = |limit: &'static str, detail: String| PluginError::LimitExceeded {
            tenant: self.tenant(),
            plugin: self.plugin(),
            call,
            limit,
            detail,
        };
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => return self.timed_out(call),
            Some(wasmtime::Trap::StackOverflow) => {
                return limit("stack", format!("{} of wasm stack", bytesize::ByteSize::b(MAX_WASM_STACK as u64)));
            }
            Some(wasmtime::Trap::OutOfFuel) => {
                return limit("fuel", format!("{} units", self.limits.fuel.unwrap_or(u64::MAX)));
            }
            _ => {}
        }
        let detail = format!("{error:#}");
        // The store's limiter refused to grow memory (trap_on_grow_failure).
        if detail.contains("forcing trap when growing memory") {
            return limit("memory", bytesize::ByteSize::b(self.limits.memory_bytes).to_string());
        }
        if detail.contains("fuel allocated for hostcalls has been exhausted") {
            let copied = bytesize::ByteSize::b(hostcall_fuel(&self.limits) as u64);
            return limit("max_output", format!("more than {copied} copied out of the plugin in one call"));
        }
        // The wasm backtrace helps the plugin's author, not the report.
        tracing::debug!(tenant = %self.tenant(), plugin = %self.plugin(), call, "trap: {detail}");
        let detail = error.root_cause().to_string();
        PluginError::Trapped { tenant: self.tenant(), plugin: self.plugin(), call, detail }
    }

    /// Checks what a call returned against `max_rows`, `max_columns` and
    /// `max_output`. The memory cap already bounds how much a call can hand
    /// over; these caps stop a plugin that stays within it from flooding the
    /// sync, or from handing the host work it never counted (a table of a
    /// million columns and no rows).
    fn check_output(&mut self, call: &'static str, rows: usize, columns: usize, bytes: u64) -> Result<(), PluginError> {
        let exceeded = if rows as u64 > self.limits.max_rows {
            Some(("max_rows", format!("returned {rows} rows, at most {}", self.limits.max_rows)))
        } else if columns as u64 > self.limits.max_columns {
            Some(("max_columns", format!("returned {columns} columns, at most {}", self.limits.max_columns)))
        } else if bytes > self.limits.max_output_bytes {
            let cap = bytesize::ByteSize::b(self.limits.max_output_bytes);
            Some(("max_output", format!("returned {}, at most {cap}", bytesize::ByteSize::b(bytes))))
        } else {
            None
        };
        match exceeded {
            None => Ok(()),
            Some((limit, detail)) => {
                // Its state may assume the host took the output: start afresh.
                self.broken = true;
                let error =
                    PluginError::LimitExceeded { tenant: self.tenant(), plugin: self.plugin(), call, limit, detail };
                crate::metrics::plugin_error(&error);
                Err(error)
            }
        }
    }

    fn returned<T>(&self, call: &'static str, result: Result<T, WitError>) -> Result<T, PluginError> {
        result.map_err(|error| PluginError::Returned { tenant: self.tenant(), plugin: self.plugin(), call, error })
    }

    fn contract(&self, call: &'static str, detail: String) -> PluginError {
        PluginError::Contract { tenant: self.tenant(), plugin: self.plugin(), call, detail }
    }

    /// Checks a table's layout (see [`Table::check`]).
    fn check_table(&self, call: &'static str, table: &Table) -> Result<(), PluginError> {
        table.check().map_err(|detail| self.contract(call, format!("malformed table: {detail}")))
    }

    /// Checks what a call returned as a page: its size, then its layout.
    fn check_page(&mut self, call: &'static str, table: &Table) -> Result<(), PluginError> {
        // Sizes first: the layout check reads every byte.
        self.check_output(call, table.len(), table.columns.len(), table.payload_bytes())?;
        self.check_table(call, table)
    }

    /// Checks that every row carries one value per column.
    fn check_rows(&self, call: &'static str, columns: &[String], rows: &[Row]) -> Result<(), PluginError> {
        match rows.iter().find(|row| row.values.len() != columns.len()) {
            Some(row) => Err(self.contract(
                call,
                format!("row `{}` has {} values for {} columns", row.key, row.values.len(), columns.len()),
            )),
            None => Ok(()),
        }
    }
}

fn wrong_kind(setup: &PluginSetup, compiled: &CompiledPlugin, wanted: PluginKind) -> PluginError {
    PluginError::Link {
        plugin: setup.plugin.clone(),
        detail: format!("it is a {} plugin, not a {wanted}", compiled.kind),
    }
}

/// How many snapshot pages in a row may come back empty before the host
/// calls it a snapshot that makes no progress.
const MAX_EMPTY_PAGES: u32 = 1000;
/// How many event batches in a row may move the cursor without an event.
/// Each is committed (the cursor moved past blank lines, say), so this also
/// bounds the state writes a source that only moves its cursor can cause.
const MAX_EMPTY_BATCHES: u32 = 100;

/// What a plugin's paging has shown so far, to hold it to making progress: a
/// snapshot whose page token comes back again, or an event cursor that
/// returns to one already seen, would be read forever.
#[derive(Default)]
struct Paging {
    /// Page tokens (or cursors) passed in or handed back since the snapshot began.
    seen: Seen,
    /// Empty pages, or empty batches that moved the cursor, in a row.
    empty_in_a_row: u32,
}

/// The tokens a plugin handed back most recently, by hash: memory that stays
/// the same however long a run goes on or however long its tokens are. A
/// cycle longer than the window goes unseen here, and ends at the run's
/// budgets instead (`max_run_rows`, `max_run_duration`).
#[derive(Default)]
struct Seen {
    order: std::collections::VecDeque<u128>,
    hashes: std::collections::HashSet<u128>,
}

impl Seen {
    /// Tokens remembered: enough for any honest cycle a plugin's bug makes.
    const WINDOW: usize = 4096;

    /// Remembers `token`; false if it was already among those remembered.
    fn insert(&mut self, token: &str) -> bool {
        // 128 bits: two different tokens never pass for one.
        let hash = xxhash_rust::xxh3::xxh3_128(token.as_bytes());
        if !self.hashes.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > Self::WINDOW
            && let Some(oldest) = self.order.pop_front()
        {
            self.hashes.remove(&oldest);
        }
        true
    }

    fn contains(&self, token: &str) -> bool {
        self.hashes.contains(&xxhash_rust::xxh3::xxh3_128(token.as_bytes()))
    }
}

impl Paging {
    /// Checks a snapshot page: `token` is the one asked with (`None` starts
    /// a new snapshot), `next` what the page handed back.
    fn page(&mut self, token: Option<&str>, rows: usize, next: Option<&str>) -> Result<(), String> {
        match token {
            None => *self = Paging::default(),
            Some(token) => {
                self.seen.insert(token);
            }
        }
        self.empty_in_a_row = if rows == 0 { self.empty_in_a_row + 1 } else { 0 };
        if let Some(next) = next {
            if self.seen.contains(next) {
                return Err(format!("handed back page token `{next}` again: the snapshot would never end"));
            }
            if self.empty_in_a_row >= MAX_EMPTY_PAGES {
                return Err(format!("returned {MAX_EMPTY_PAGES} empty pages in a row and still no end"));
            }
        }
        Ok(())
    }

    /// Checks an event batch read after `cursor` that handed back `next`.
    fn batch(&mut self, cursor: Option<&str>, events: usize, next: &str) -> Result<(), String> {
        let from = cursor.unwrap_or_default();
        if next == from {
            // No events and the same cursor: caught up, as an empty stream is.
            return match events {
                0 => Ok(()),
                n => Err(format!("returned {n} events but left its cursor at `{next}`: they would be read forever")),
            };
        }
        self.seen.insert(from);
        if !self.seen.insert(next) {
            return Err(format!("went back to cursor `{next}`, which it had already passed"));
        }
        self.empty_in_a_row = if events == 0 { self.empty_in_a_row + 1 } else { 0 };
        if self.empty_in_a_row >= MAX_EMPTY_BATCHES {
            return Err(format!("moved its cursor {MAX_EMPTY_BATCHES} times in a row without returning an event"));
        }
        Ok(())
    }
}

/// A source plugin's bindings: this host's WIT, or 0.1.x's.
enum SourceBindings {
    Now(SourcePlugin),
    Legacy(legacy::SourcePlugin),
}

/// A source plugin, instantiated for one tenant.
pub struct SourceInstance {
    sandbox: Sandbox,
    bindings: SourceBindings,
    /// Snapshot pages and event batches, each held to progress on its own.
    snapshot_paging: Paging,
    event_paging: Paging,
}

impl SourceInstance {
    pub fn new(engine: &PluginEngine, compiled: &CompiledPlugin, setup: &PluginSetup) -> Result<Self, PluginError> {
        let mut sandbox = Sandbox::new(engine, setup)?;
        let bindings = match &compiled.pre {
            WorldPre::Source(pre) => SourceBindings::Now(sandbox.call("instantiate", |store| pre.instantiate(store))?),
            WorldPre::LegacySource(pre) => {
                SourceBindings::Legacy(sandbox.call("instantiate", |store| pre.instantiate(store))?)
            }
            _ => return Err(wrong_kind(setup, compiled, PluginKind::Source)),
        };
        Ok(SourceInstance { sandbox, bindings, snapshot_paging: Paging::default(), event_paging: Paging::default() })
    }

    pub fn info(&mut self) -> Result<PluginInfo, PluginError> {
        match &self.bindings {
            SourceBindings::Now(b) => self.sandbox.call("info", |store| b.synchost_plugin_source().call_info(store)),
            SourceBindings::Legacy(b) => self.sandbox.call("info", |store| legacy::source_info(b, store)),
        }
    }

    pub fn snapshot(&mut self, token: Option<&str>) -> Result<Page, PluginError> {
        let result = match &self.bindings {
            SourceBindings::Now(b) => {
                self.sandbox.call("snapshot", |store| b.synchost_plugin_source().call_snapshot(store, token))?
            }
            SourceBindings::Legacy(b) => {
                let converted = self.sandbox.call("snapshot", |store| legacy::source_snapshot(b, store, token))?;
                converted.map_err(|breach| self.sandbox.contract("snapshot", breach.0))?
            }
        };
        let page = self.sandbox.returned("snapshot", result)?;
        self.sandbox.check_page("snapshot", &page.rows)?;
        self.snapshot_paging
            .page(token, page.rows.len(), page.next.as_deref())
            .map_err(|detail| self.sandbox.contract("snapshot", detail))?;
        Ok(page)
    }

    /// What acknowledges, after each commit, the JetStream messages the
    /// committed batches consumed (nothing, for a source that reads none).
    pub fn acknowledger(&self) -> super::capability::jetstream::Acknowledger {
        self.sandbox.store.data().jetstream.acknowledger()
    }

    pub fn events(&mut self, cursor: Option<&str>, max: u32) -> Result<EventBatch, PluginError> {
        let result = match &self.bindings {
            SourceBindings::Now(b) => {
                self.sandbox.call("events", |store| b.synchost_plugin_source().call_events(store, cursor, max))?
            }
            SourceBindings::Legacy(b) => {
                self.sandbox.call("events", |store| legacy::source_events(b, store, cursor, max))?
            }
        };
        let batch = self.sandbox.returned("events", result)?;
        let bytes = batch
            .events
            .iter()
            .map(|event| {
                event.position.len() as u64
                    + match &event.change {
                        Change::Upsert(row) => row_bytes(row),
                        Change::Delete(key) => key.len() as u64,
                    }
            })
            .sum();
        self.sandbox.check_output("events", batch.events.len(), batch.columns.len(), bytes)?;
        if batch.events.len() > max as usize {
            return Err(self
                .sandbox
                .contract("events", format!("returned {} events, asked for at most {max}", batch.events.len())));
        }
        for event in &batch.events {
            if let Change::Upsert(row) = &event.change {
                self.sandbox.check_rows("events", &batch.columns, std::slice::from_ref(row))?;
            }
        }
        self.event_paging
            .batch(cursor, batch.events.len(), &batch.cursor)
            .map_err(|detail| self.sandbox.contract("events", detail))?;
        Ok(batch)
    }
}

/// A transform plugin's bindings: this host's WIT, or 0.1.x's.
enum TransformBindings {
    Now(TransformPlugin),
    Legacy(legacy::TransformPlugin),
}

/// A transform plugin, instantiated for one tenant.
pub struct TransformInstance {
    sandbox: Sandbox,
    bindings: TransformBindings,
}

impl TransformInstance {
    pub fn new(engine: &PluginEngine, compiled: &CompiledPlugin, setup: &PluginSetup) -> Result<Self, PluginError> {
        let mut sandbox = Sandbox::new(engine, setup)?;
        let bindings = match &compiled.pre {
            WorldPre::Transform(pre) => {
                TransformBindings::Now(sandbox.call("instantiate", |store| pre.instantiate(store))?)
            }
            WorldPre::LegacyTransform(pre) => {
                TransformBindings::Legacy(sandbox.call("instantiate", |store| pre.instantiate(store))?)
            }
            _ => return Err(wrong_kind(setup, compiled, PluginKind::Transform)),
        };
        Ok(TransformInstance { sandbox, bindings })
    }

    pub fn info(&mut self) -> Result<PluginInfo, PluginError> {
        match &self.bindings {
            TransformBindings::Now(b) => {
                self.sandbox.call("info", |store| b.synchost_plugin_transform().call_info(store))
            }
            TransformBindings::Legacy(b) => self.sandbox.call("info", |store| legacy::transform_info(b, store)),
        }
    }

    pub fn transform(&mut self, input: &Table) -> Result<Transformed, PluginError> {
        let result = match &self.bindings {
            TransformBindings::Now(b) => {
                self.sandbox.call("transform", |store| b.synchost_plugin_transform().call_transform(store, input))?
            }
            TransformBindings::Legacy(b) => {
                let converted = self.sandbox.call("transform", |store| legacy::transform(b, store, input))?;
                converted.map_err(|breach| self.sandbox.contract("transform", breach.0))?
            }
        };
        let out = self.sandbox.returned("transform", result)?;
        self.sandbox.check_page("transform", &out.rows)?;
        if out.origins.len() != out.rows.len() {
            return Err(self
                .sandbox
                .contract("transform", format!("returned {} rows but {} origins", out.rows.len(), out.origins.len())));
        }
        if let Some(origin) = out.origins.iter().find(|&&o| o as usize >= input.len()) {
            return Err(self
                .sandbox
                .contract("transform", format!("origin {origin} is past the {} input rows", input.len())));
        }
        Ok(out)
    }
}

/// A destination plugin's bindings: this host's WIT, or 0.1.x's.
enum DestinationBindings {
    Now(DestinationPlugin),
    Legacy(legacy::DestinationPlugin),
}

/// A destination plugin, instantiated for one tenant.
pub struct DestinationInstance {
    sandbox: Sandbox,
    bindings: DestinationBindings,
    paging: Paging,
}

impl DestinationInstance {
    pub fn new(engine: &PluginEngine, compiled: &CompiledPlugin, setup: &PluginSetup) -> Result<Self, PluginError> {
        let mut sandbox = Sandbox::new(engine, setup)?;
        let bindings = match &compiled.pre {
            WorldPre::Destination(pre) => {
                DestinationBindings::Now(sandbox.call("instantiate", |store| pre.instantiate(store))?)
            }
            WorldPre::LegacyDestination(pre) => {
                DestinationBindings::Legacy(sandbox.call("instantiate", |store| pre.instantiate(store))?)
            }
            _ => return Err(wrong_kind(setup, compiled, PluginKind::Destination)),
        };
        Ok(DestinationInstance { sandbox, bindings, paging: Paging::default() })
    }

    pub fn info(&mut self) -> Result<PluginInfo, PluginError> {
        match &self.bindings {
            DestinationBindings::Now(b) => {
                self.sandbox.call("info", |store| b.synchost_plugin_destination().call_info(store))
            }
            DestinationBindings::Legacy(b) => self.sandbox.call("info", |store| legacy::destination_info(b, store)),
        }
    }

    pub fn snapshot(&mut self, token: Option<&str>) -> Result<Page, PluginError> {
        let result = match &self.bindings {
            DestinationBindings::Now(b) => {
                self.sandbox.call("snapshot", |store| b.synchost_plugin_destination().call_snapshot(store, token))?
            }
            DestinationBindings::Legacy(b) => {
                let converted = self.sandbox.call("snapshot", |store| legacy::destination_snapshot(b, store, token))?;
                converted.map_err(|breach| self.sandbox.contract("snapshot", breach.0))?
            }
        };
        let page = self.sandbox.returned("snapshot", result)?;
        self.sandbox.check_page("snapshot", &page.rows)?;
        self.paging
            .page(token, page.rows.len(), page.next.as_deref())
            .map_err(|detail| self.sandbox.contract("snapshot", detail))?;
        Ok(page)
    }

    /// Applies a batch: one outcome per operation, or an error for the whole batch.
    pub fn apply(&mut self, batch: &OperationBatch) -> Result<Vec<Result<(), WitError>>, PluginError> {
        let result = match &self.bindings {
            DestinationBindings::Now(b) => {
                self.sandbox.call("apply", |store| b.synchost_plugin_destination().call_apply(store, batch))?
            }
            DestinationBindings::Legacy(b) => {
                self.sandbox.call("apply", |store| legacy::destination_apply(b, store, batch))?
            }
        };
        let outcomes = self.sandbox.returned("apply", result)?;
        if outcomes.len() != batch.operations.len() {
            return Err(self.sandbox.contract(
                "apply",
                format!("returned {} outcomes for {} operations", outcomes.len(), batch.operations.len()),
            ));
        }
        Ok(outcomes)
    }
}

/// What wasmtime may copy between guest and host in one call, counted in the
/// bytes of the host's data structures: a backstop well above what
/// `max_rows` and `max_output` allow (a row costs its values' text plus some
/// hundred bytes of structure), so that those precise checks decide first.
fn hostcall_fuel(limits: &Limits) -> usize {
    const PER_ROW: u64 = 512;
    let fuel = limits.max_output_bytes.saturating_mul(2).saturating_add(limits.max_rows.saturating_mul(PER_ROW));
    usize::try_from(fuel).unwrap_or(usize::MAX)
}

/// The bytes of a row's key and values, as `max_output` counts them (see
/// [`Table::payload_bytes`]).
fn row_bytes(row: &Row) -> u64 {
    let values: usize = row
        .values
        .iter()
        .map(|value| match value {
            Value::Null | Value::Boolean(_) => 1,
            Value::Integer(_) | Value::Float(_) => 8,
            Value::Text(text) | Value::Json(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
        })
        .sum();
    (row.key.len() + values) as u64
}

/// Instantiates a plugin on its own and asks for the JSON Schema of its
/// `config` table: `None` if it declares none (it was built against WIT
/// 0.2.0 or earlier, or answers `none`).
pub fn config_schema(
    engine: &PluginEngine,
    compiled: &CompiledPlugin,
    setup: &PluginSetup,
) -> Result<Option<String>, PluginError> {
    let Some((pre, indices)) = &compiled.config_schema else { return Ok(None) };
    let mut sandbox = Sandbox::new(engine, setup)?;
    let instance = sandbox.call("instantiate", |store| pre.instantiate(store))?;
    let schema = sandbox.call("schema", |store| indices.load(&mut *store, &instance)?.call_schema(store))?;
    if let Some(schema) = &schema {
        sandbox.check_output("schema", 0, 0, schema.len() as u64)?;
    }
    Ok(schema)
}

/// Instantiates any compiled plugin and asks for its `info()`.
pub fn plugin_info(
    engine: &PluginEngine,
    compiled: &CompiledPlugin,
    setup: &PluginSetup,
) -> Result<PluginInfo, PluginError> {
    match compiled.kind {
        PluginKind::Source => SourceInstance::new(engine, compiled, setup)?.info(),
        PluginKind::Destination => DestinationInstance::new(engine, compiled, setup)?.info(),
        PluginKind::Transform => TransformInstance::new(engine, compiled, setup)?.info(),
    }
}

#[cfg(test)]
mod paging_tests {
    use super::{MAX_EMPTY_BATCHES, MAX_EMPTY_PAGES, Paging, Seen};

    #[test]
    fn paging_remembers_a_window_of_tokens_not_every_token_of_the_run() {
        let mut paging = Paging::default();
        let token = |i: usize| format!("{i}-{}", "x".repeat(1000));
        assert!(paging.page(None, 1, Some(&token(0))).is_ok());
        for i in 1..3 * Seen::WINDOW {
            assert!(paging.page(Some(&token(i - 1)), 1, Some(&token(i))).is_ok());
        }
        // Hashes only, and no more than the window.
        assert!(paging.seen.hashes.len() <= Seen::WINDOW && paging.seen.order.len() <= Seen::WINDOW);
        // A recent token coming back is still caught.
        let last = 3 * Seen::WINDOW - 1;
        assert!(paging.page(Some(&token(last)), 1, Some(&token(last - 10))).is_err());
    }

    #[test]
    fn a_page_token_handed_back_again_is_refused() {
        let mut paging = Paging::default();
        assert!(paging.page(None, 10, Some("a")).is_ok());
        assert!(paging.page(Some("a"), 10, Some("b")).is_ok());
        assert!(paging.page(Some("b"), 0, Some("b")).unwrap_err().contains("page token `b` again"));
        // A cycle is caught as well as a token that stands still.
        assert!(paging.page(Some("b"), 10, Some("a")).unwrap_err().contains("page token `a` again"));
        // A new snapshot starts afresh.
        assert!(paging.page(None, 10, Some("a")).is_ok());
    }

    #[test]
    fn empty_pages_in_a_row_end_at_the_limit() {
        let mut paging = Paging::default();
        let mut result = paging.page(None, 0, Some("0"));
        for i in 1..MAX_EMPTY_PAGES {
            assert!(result.is_ok(), "page {i}");
            result = paging.page(Some(&(i - 1).to_string()), 0, Some(&i.to_string()));
        }
        assert!(result.unwrap_err().contains("empty pages in a row"));
        // The last page of a snapshot may be empty.
        assert!(Paging::default().page(None, 0, None).is_ok());
    }

    #[test]
    fn an_event_cursor_must_move_with_its_events_and_never_go_back() {
        let mut paging = Paging::default();
        assert!(paging.batch(None, 0, "").is_ok(), "an empty stream is caught up");
        assert!(paging.batch(None, 5, "5").is_ok());
        assert!(paging.batch(Some("5"), 0, "5").is_ok(), "caught up at 5");
        assert!(paging.batch(Some("5"), 3, "5").unwrap_err().contains("left its cursor at `5`"));
        assert!(paging.batch(Some("5"), 2, "7").is_ok());
        assert!(paging.batch(Some("7"), 1, "5").unwrap_err().contains("went back to cursor `5`"));
        let mut moving = Paging::default();
        let mut result = Ok(());
        for i in 0..MAX_EMPTY_BATCHES {
            result = moving.batch(Some(&i.to_string()), 0, &(i + 1).to_string());
        }
        assert!(result.unwrap_err().contains("without returning an event"));
    }
}
