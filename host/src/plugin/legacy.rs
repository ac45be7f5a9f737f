//! Plugins built against WIT 0.1.x, whose pages and transforms carry
//! `list<row>` where 0.2 carries tables, keep working on this host.
//!
//! They get bindings of their own, generated from the frozen copy of the 0.1.1
//! package in `wit/frozen/0.1.1` (0.1.0 plugins link to it as well, as
//! wasmtime matches 0.1.x names). The host interfaces they import are the
//! same as 0.2's and are served by the same code; the values that cross are
//! converted between the two sets of bindings here, and so are the pages and
//! batches (rows to tables and back). The conversions cost an old plugin
//! some speed, never a feature.

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::bindings::{Transformed, host as host_now, jetstream as jetstream_now, sql as sql_now, types as now};
use super::capability::sql::{SqlConnection, SqlRows};
use super::ctx::PluginCtx;

mod source_world {
    wasmtime::component::bindgen!({
        path: "../wit/frozen/0.1.1",
        world: "synchost:plugin/source-plugin",
        with: {
            "synchost:plugin/sql.connection": crate::plugin::capability::sql::SqlConnection,
            "synchost:plugin/sql.rows": crate::plugin::capability::sql::SqlRows,
        },
    });
}

mod destination_world {
    wasmtime::component::bindgen!({
        path: "../wit/frozen/0.1.1",
        world: "synchost:plugin/destination-plugin",
        with: {
            "synchost:plugin/types": super::source_world::synchost::plugin::types,
            "synchost:plugin/host": super::source_world::synchost::plugin::host,
            "synchost:plugin/sql": super::source_world::synchost::plugin::sql,
        },
    });
}

mod transform_world {
    wasmtime::component::bindgen!({
        path: "../wit/frozen/0.1.1",
        world: "synchost:plugin/transform-plugin",
        with: {
            "synchost:plugin/types": super::source_world::synchost::plugin::types,
            "synchost:plugin/host": super::source_world::synchost::plugin::host,
            "synchost:plugin/sql": super::source_world::synchost::plugin::sql,
        },
    });
}

pub(super) use destination_world::{DestinationPlugin, DestinationPluginPre};
use source_world::synchost::plugin::{host, jetstream, sql, types as old};
pub(super) use source_world::{SourcePlugin, SourcePluginPre};
pub(super) use transform_world::{TransformPlugin, TransformPluginPre};

/// The version of the frozen package these bindings come from.
pub const LEGACY_WIT_VERSION: &str = "0.1.1";

/// Adds the 0.1.x host interfaces to the linker (beside 0.2's).
pub(super) fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    SourcePlugin::add_to_linker::<_, HasSelf<PluginCtx>>(linker, |ctx| ctx)
}

/// What a call into a legacy plugin returns, in 0.2 terms.
type Outcome<T> = wasmtime::Result<Result<T, now::Error>>;

/// A row whose values do not match its columns, found while laying 0.1 rows
/// out as a table: the plugin broke the contract, and the instance reports it
/// as it reports a 0.2 plugin's malformed table.
pub(super) struct Breach(pub String);

/// What a call returns whose answer is converted to a table.
type Converted<T> = wasmtime::Result<Result<Result<T, now::Error>, Breach>>;

/// The plugin's error, or its answer converted (which may find a breach).
fn converted<A, T>(
    result: Result<A, old::Error>,
    convert: impl FnOnce(A) -> Result<T, Breach>,
) -> Result<Result<T, now::Error>, Breach> {
    match result {
        Err(e) => Ok(Err(error(e))),
        Ok(answer) => convert(answer).map(Ok),
    }
}

pub(super) fn source_info(plugin: &SourcePlugin, store: &mut Store<PluginCtx>) -> wasmtime::Result<now::PluginInfo> {
    plugin.synchost_plugin_source().call_info(store).map(info)
}

pub(super) fn source_snapshot(
    plugin: &SourcePlugin,
    store: &mut Store<PluginCtx>,
    token: Option<&str>,
) -> Converted<now::Page> {
    let result = plugin.synchost_plugin_source().call_snapshot(store, token)?;
    Ok(converted(result, page))
}

pub(super) fn source_events(
    plugin: &SourcePlugin,
    store: &mut Store<PluginCtx>,
    cursor: Option<&str>,
    max: u32,
) -> Outcome<now::EventBatch> {
    let result = plugin.synchost_plugin_source().call_events(store, cursor, max)?;
    Ok(result.map_err(error).map(|batch| now::EventBatch {
        columns: batch.columns,
        events: batch
            .events
            .into_iter()
            .map(|e| now::Event {
                position: e.position,
                change: match e.change {
                    old::Change::Upsert(r) => now::Change::Upsert(row(r)),
                    old::Change::Delete(key) => now::Change::Delete(key),
                },
            })
            .collect(),
        cursor: batch.cursor,
    }))
}

pub(super) fn transform_info(
    plugin: &TransformPlugin,
    store: &mut Store<PluginCtx>,
) -> wasmtime::Result<now::PluginInfo> {
    plugin.synchost_plugin_transform().call_info(store).map(info)
}

pub(super) fn transform(
    plugin: &TransformPlugin,
    store: &mut Store<PluginCtx>,
    input: &now::Table,
) -> Converted<Transformed> {
    let batch =
        old::RowBatch { columns: input.columns.clone(), rows: input.to_rows().into_iter().map(old_row).collect() };
    let result = plugin.synchost_plugin_transform().call_transform(store, &batch)?;
    Ok(converted(result, |out| {
        let rows: Vec<now::Row> = out.rows.into_iter().map(row).collect();
        Ok(Transformed { rows: table(out.columns, &rows)?, origins: out.origins })
    }))
}

pub(super) fn destination_info(
    plugin: &DestinationPlugin,
    store: &mut Store<PluginCtx>,
) -> wasmtime::Result<now::PluginInfo> {
    plugin.synchost_plugin_destination().call_info(store).map(info)
}

pub(super) fn destination_snapshot(
    plugin: &DestinationPlugin,
    store: &mut Store<PluginCtx>,
    token: Option<&str>,
) -> Converted<now::Page> {
    let result = plugin.synchost_plugin_destination().call_snapshot(store, token)?;
    Ok(converted(result, page))
}

pub(super) fn destination_apply(
    plugin: &DestinationPlugin,
    store: &mut Store<PluginCtx>,
    batch: &now::OperationBatch,
) -> Outcome<Vec<Result<(), now::Error>>> {
    let batch = old::OperationBatch {
        columns: batch.columns.clone(),
        operations: batch
            .operations
            .iter()
            .map(|op| old::Operation {
                idempotency_key: op.idempotency_key.clone(),
                action: match &op.action {
                    now::Action::Create(r) => old::Action::Create(old_row(r.clone())),
                    now::Action::Update(u) => {
                        old::Action::Update(old::RowUpdate { row: old_row(u.row.clone()), changed: u.changed.clone() })
                    }
                    now::Action::Upsert(r) => old::Action::Upsert(old_row(r.clone())),
                    now::Action::Delete(key) => old::Action::Delete(key.clone()),
                },
            })
            .collect(),
    };
    let result = plugin.synchost_plugin_destination().call_apply(store, &batch)?;
    Ok(result.map_err(error).map(|outcomes| outcomes.into_iter().map(|o| o.map_err(error)).collect()))
}

fn info(info: old::PluginInfo) -> now::PluginInfo {
    now::PluginInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        wit_version: info.wit_version,
    }
}

fn page(page: old::Page) -> Result<now::Page, Breach> {
    let rows: Vec<now::Row> = page.rows.into_iter().map(row).collect();
    Ok(now::Page { rows: table(page.columns, &rows)?, next: page.next })
}

/// Rows to a table, refusing a row whose values do not match the columns
/// (a 0.2 table with a column too short breaks the contract the same way).
fn table(columns: Vec<String>, rows: &[now::Row]) -> Result<now::Table, Breach> {
    match rows.iter().find(|r| r.values.len() != columns.len()) {
        None => Ok(now::Table::from_rows(columns, rows)),
        Some(bad) => Err(Breach(format!(
            "malformed table: row `{}` has {} values for {} columns",
            bad.key,
            bad.values.len(),
            columns.len()
        ))),
    }
}

fn row(row: old::Row) -> now::Row {
    now::Row { key: row.key, values: row.values.into_iter().map(value).collect() }
}

fn old_row(row: now::Row) -> old::Row {
    old::Row { key: row.key, values: row.values.into_iter().map(old_value).collect() }
}

fn value(value: old::Value) -> now::Value {
    match value {
        old::Value::Null => now::Value::Null,
        old::Value::Boolean(b) => now::Value::Boolean(b),
        old::Value::Integer(i) => now::Value::Integer(i),
        old::Value::Float(f) => now::Value::Float(f),
        old::Value::Text(s) => now::Value::Text(s),
        old::Value::Bytes(b) => now::Value::Bytes(b),
        old::Value::Json(s) => now::Value::Json(s),
    }
}

fn old_value(value: now::Value) -> old::Value {
    match value {
        now::Value::Null => old::Value::Null,
        now::Value::Boolean(b) => old::Value::Boolean(b),
        now::Value::Integer(i) => old::Value::Integer(i),
        now::Value::Float(f) => old::Value::Float(f),
        now::Value::Text(s) => old::Value::Text(s),
        now::Value::Bytes(b) => old::Value::Bytes(b),
        now::Value::Json(s) => old::Value::Json(s),
    }
}

fn error(error: old::Error) -> now::Error {
    match error {
        old::Error::Config(m) => now::Error::Config(m),
        old::Error::Transient(m) => now::Error::Transient(m),
        old::Error::Rejected(m) => now::Error::Rejected(m),
    }
}

fn old_error(error: now::Error) -> old::Error {
    match error {
        now::Error::Config(m) => old::Error::Config(m),
        now::Error::Transient(m) => old::Error::Transient(m),
        now::Error::Rejected(m) => old::Error::Rejected(m),
    }
}

// The host interfaces of 0.1.x, served by the 0.2 implementations.

impl old::Host for PluginCtx {}

impl host::Host for PluginCtx {
    fn log(&mut self, level: host::Level, message: String) {
        let level = match level {
            host::Level::Trace => host_now::Level::Trace,
            host::Level::Debug => host_now::Level::Debug,
            host::Level::Info => host_now::Level::Info,
            host::Level::Warn => host_now::Level::Warn,
            host::Level::Error => host_now::Level::Error,
        };
        host_now::Host::log(self, level, message)
    }

    fn config(&mut self) -> String {
        host_now::Host::config(self)
    }

    fn secret(&mut self, name: String) -> Option<String> {
        host_now::Host::secret(self, name)
    }
}

impl sql::Host for PluginCtx {}

impl sql::HostConnection for PluginCtx {
    fn open(&mut self, name: String) -> Result<Resource<SqlConnection>, old::Error> {
        sql_now::HostConnection::open(self, name).map_err(old_error)
    }

    fn dialect(&mut self, connection: Resource<SqlConnection>) -> sql::Dialect {
        match sql_now::HostConnection::dialect(self, connection) {
            sql_now::Dialect::Postgres => sql::Dialect::Postgres,
            sql_now::Dialect::Mysql => sql::Dialect::Mysql,
            sql_now::Dialect::Sqlite => sql::Dialect::Sqlite,
        }
    }

    fn query(
        &mut self,
        connection: Resource<SqlConnection>,
        sql: String,
        params: Vec<old::Value>,
    ) -> Result<Resource<SqlRows>, old::Error> {
        let params = params.into_iter().map(value).collect();
        sql_now::HostConnection::query(self, connection, sql, params).map_err(old_error)
    }

    fn execute(
        &mut self,
        connection: Resource<SqlConnection>,
        sql: String,
        params: Vec<old::Value>,
    ) -> Result<u64, old::Error> {
        let params = params.into_iter().map(value).collect();
        sql_now::HostConnection::execute(self, connection, sql, params).map_err(old_error)
    }

    fn begin(&mut self, connection: Resource<SqlConnection>) -> Result<(), old::Error> {
        sql_now::HostConnection::begin(self, connection).map_err(old_error)
    }

    fn commit(&mut self, connection: Resource<SqlConnection>) -> Result<(), old::Error> {
        sql_now::HostConnection::commit(self, connection).map_err(old_error)
    }

    fn rollback(&mut self, connection: Resource<SqlConnection>) -> Result<(), old::Error> {
        sql_now::HostConnection::rollback(self, connection).map_err(old_error)
    }

    fn drop(&mut self, connection: Resource<SqlConnection>) -> wasmtime::Result<()> {
        sql_now::HostConnection::drop(self, connection)
    }
}

impl sql::HostRows for PluginCtx {
    fn columns(&mut self, rows: Resource<SqlRows>) -> Vec<String> {
        sql_now::HostRows::columns(self, rows)
    }

    fn next(&mut self, rows: Resource<SqlRows>, max: u32) -> Result<Vec<Vec<old::Value>>, old::Error> {
        let rows = sql_now::HostRows::next(self, rows, max).map_err(old_error)?;
        Ok(rows.into_iter().map(|r| r.into_iter().map(old_value).collect()).collect())
    }

    fn drop(&mut self, rows: Resource<SqlRows>) -> wasmtime::Result<()> {
        sql_now::HostRows::drop(self, rows)
    }
}

impl jetstream::Host for PluginCtx {
    fn fetch(&mut self, stream: String, after: Option<u64>, max: u32) -> Result<Vec<jetstream::Message>, old::Error> {
        let messages = jetstream_now::Host::fetch(self, stream, after, max).map_err(old_error)?;
        Ok(messages
            .into_iter()
            .map(|m| jetstream::Message {
                sequence: m.sequence,
                subject: m.subject,
                headers: m.headers,
                payload: m.payload,
                published_ms: m.published_ms,
            })
            .collect())
    }
}
