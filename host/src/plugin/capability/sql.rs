//! The `synchost:plugin/sql` interface: plugins run parameterised queries and
//! statements on the SQL connections their tenant granted them.
//!
//! The tenant file declares connections (`[connections.NAME]`) and grants them
//! per plugin; a plugin names a connection, never sees its URL or password,
//! and is refused any name not granted to it. The host keeps one pool per
//! tenant connection ([`pool`], kept with the engine's services) and lends a plugin's `connection` resource one
//! database session for as long as it lives.
//!
//! Every wait on a database is bounded by the connection's
//! `statement_timeout`; every failure becomes the WIT `error` variant the sync
//! engines act on (lost connection, timeout, deadlock, serialisation failure:
//! `transient`; constraint violation or bad value: `rejected`; failed login,
//! missing table, bad SQL: `config`), prefixed with the connection's name.
//!
//! Query results stream: a producer task reads rows from the database into a
//! bounded channel while the plugin takes them a page at a time with
//! `rows.next`, so a large result is never held whole by the host.
//!
//! `bulk-upsert` writes a table of rows by key at once ([`bulk`]): `COPY`
//! into a temporary table on PostgreSQL, multi-row upserts elsewhere.
//!
//! Plugin calls run on threads of their own, outside any async runtime, so
//! the host functions here block on the engine's I/O runtime
//! ([`super::services`]).

mod bulk;
mod mysql;
pub(in crate::plugin) mod pool;
mod postgres;
mod sqlite;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use wasmtime::component::Resource;

use self::bulk::{BulkUpsert, Flavour};
use super::grants::Grants;
use super::services::{Elapsed, HostServices};
use crate::config::{ConnectionConfig, SqlDialect};
use crate::plugin::bindings::sql::{Dialect, Host, HostConnection, HostRows};
use crate::plugin::ctx::PluginCtx;
use crate::plugin::types::{Error as WitError, Value};

/// Rows a producer sends at once, and chunks it may run ahead of the plugin.
const CHUNK_ROWS: usize = 256;
const CHUNKS_AHEAD: usize = 16;

/// Links the `sql` interface, served by [`PluginCtx`]'s grants.
pub(in crate::plugin) fn add_to_linker(linker: &mut wasmtime::component::Linker<PluginCtx>) -> wasmtime::Result<()> {
    crate::plugin::bindings::sql::add_to_linker::<_, wasmtime::component::HasSelf<PluginCtx>>(linker, |ctx| ctx)
}

/// What one plugin instance may reach: the connections its tenant granted it.
pub(in crate::plugin) struct SqlGrants {
    connections: Grants<ConnectionConfig>,
    services: Arc<HostServices>,
}

impl SqlGrants {
    pub(in crate::plugin) fn new(
        tenant: &str,
        plugin: &str,
        connections: &[Arc<ConnectionConfig>],
        services: Arc<HostServices>,
    ) -> SqlGrants {
        let connections = Grants::new(tenant, plugin, ("connection", "connections"), connections, |c| &c.name);
        SqlGrants { connections, services }
    }

    /// The granted connection `name`, or the error that refuses it.
    fn grant(&self, name: &str) -> Result<Arc<ConnectionConfig>, WitError> {
        self.connections.get(name)
    }
}

/// A database session lent to a plugin: the `connection` resource.
pub struct SqlConnection {
    config: Arc<ConnectionConfig>,
    session: Session,
    in_transaction: bool,
    /// The rows of the last query, while they may still be streaming.
    streaming: Option<Arc<RowsChannel>>,
}

/// One session, by database. (Few live at once: their size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Session {
    Postgres(postgres::Session),
    Mysql(mysql::Session),
    Sqlite(sqlite::Session),
}

/// The rows of one query: the `rows` resource.
pub struct SqlRows {
    connection: String,
    columns: Vec<String>,
    channel: Arc<RowsChannel>,
    /// Rows received but not yet handed out.
    buffered: VecDeque<Vec<Value>>,
    /// The producer sent everything: once `buffered` is empty, the rows are done.
    finished: bool,
    timeout: Duration,
    services: Arc<HostServices>,
}

/// Chunks of rows from a producer, or the error that ended it.
type RowChunk = Result<Vec<Vec<Value>>, WitError>;

/// The receiving end of a query's rows. The connection can take the receiver
/// away to close the rows: the producer's next send then fails, and it stops
/// and gives the session back.
struct RowsChannel {
    receiver: Mutex<Option<mpsc::Receiver<RowChunk>>>,
}

impl RowsChannel {
    /// A channel for a producer to fill, and the producer's end.
    fn new() -> (Arc<RowsChannel>, mpsc::Sender<RowChunk>) {
        let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
        (Arc::new(RowsChannel { receiver: Mutex::new(Some(receiver)) }), sender)
    }

    fn close(&self) {
        self.receiver.lock().expect("rows channel poisoned").take();
    }
}

/// Sends rows in chunks from a producer; `false` once the rows were closed.
struct ChunkSender {
    sender: mpsc::Sender<RowChunk>,
    chunk: Vec<Vec<Value>>,
}

impl ChunkSender {
    fn new(sender: mpsc::Sender<RowChunk>) -> ChunkSender {
        ChunkSender { sender, chunk: Vec::with_capacity(CHUNK_ROWS) }
    }

    async fn push(&mut self, row: Vec<Value>) -> bool {
        self.chunk.push(row);
        if self.chunk.len() < CHUNK_ROWS {
            return true;
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_ROWS));
        self.sender.send(Ok(chunk)).await.is_ok()
    }

    fn blocking_push(&mut self, row: Vec<Value>) -> bool {
        self.chunk.push(row);
        if self.chunk.len() < CHUNK_ROWS {
            return true;
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_ROWS));
        self.sender.blocking_send(Ok(chunk)).is_ok()
    }

    /// Sends what is left, or the error that stopped the rows.
    async fn finish(mut self, outcome: Result<(), WitError>) {
        let chunk = std::mem::take(&mut self.chunk);
        if !chunk.is_empty() && self.sender.send(Ok(chunk)).await.is_err() {
            return;
        }
        if let Err(error) = outcome {
            let _ = self.sender.send(Err(error)).await;
        }
    }

    fn blocking_finish(mut self, outcome: Result<(), WitError>) {
        let chunk = std::mem::take(&mut self.chunk);
        if !chunk.is_empty() && self.sender.blocking_send(Ok(chunk)).is_err() {
            return;
        }
        if let Err(error) = outcome {
            let _ = self.sender.blocking_send(Err(error));
        }
    }
}

/// What a backend hands back for a query: column names and the channel its
/// producer fills.
struct Query {
    columns: Vec<String>,
    channel: Arc<RowsChannel>,
}

fn timed_out(config: &ConnectionConfig, what: &str) -> WitError {
    WitError::Transient(format!(
        "connection `{}` ({}): {what} took longer than the statement timeout of {}",
        config.name,
        config.dialect,
        humantime::format_duration(config.statement_timeout)
    ))
}

/// A handle the guest holds but the table no longer has: wasmtime checks
/// handles before a call reaches the host, so this is the host's own bug.
fn stale_handle(what: &str, e: wasmtime::component::ResourceTableError) -> WitError {
    WitError::Config(format!("invalid {what} handle: {e}"))
}

impl SqlConnection {
    fn open(
        config: Arc<ConnectionConfig>,
        tenant: &str,
        services: &Arc<HostServices>,
    ) -> Result<SqlConnection, WitError> {
        let session = match config.dialect {
            SqlDialect::Postgres => Session::Postgres(postgres::Session::open(&config, tenant, services)?),
            SqlDialect::Mysql => Session::Mysql(mysql::Session::open(&config, tenant, services)?),
            SqlDialect::Sqlite => Session::Sqlite(sqlite::Session::open(&config, services)?),
        };
        Ok(SqlConnection { config, session, in_transaction: false, streaming: None })
    }

    /// Closes rows still streaming: the session does one thing at a time.
    fn settle(&mut self) {
        if let Some(channel) = self.streaming.take() {
            channel.close();
        }
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, WitError> {
        self.settle();
        let config = &self.config;
        match &mut self.session {
            Session::Postgres(session) => session.execute(config, sql, params),
            Session::Mysql(session) => session.execute(config, sql, params),
            Session::Sqlite(session) => session.execute(config, sql, params),
        }
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Query, WitError> {
        self.settle();
        let config = &self.config;
        let query = match &mut self.session {
            Session::Postgres(session) => session.query(config, sql, params),
            Session::Mysql(session) => session.query(config, sql, params),
            Session::Sqlite(session) => session.query(config, sql, params),
        }?;
        self.streaming = Some(query.channel.clone());
        Ok(query)
    }

    /// Writes `rows` into `table` by `key` at once (see [`bulk`]): in the
    /// open transaction, or all in one of its own.
    fn bulk_upsert(&mut self, table: &str, key: &[String], rows: &synchost_model::Table) -> Result<u64, WitError> {
        self.settle();
        let bulk = BulkUpsert::new(&self.config.name, table, key, rows)?;
        let flavour = match &mut self.session {
            Session::Postgres(session) => return session.bulk_upsert(&self.config, &bulk, self.in_transaction),
            Session::Mysql(_) => Flavour::Mysql,
            Session::Sqlite(_) => Flavour::Sqlite,
        };
        let statements = bulk.insert_statements(flavour);
        let own_transaction = !self.in_transaction && statements.len() > 1;
        if own_transaction {
            self.transaction("BEGIN")?;
        }
        let written = statements.iter().try_for_each(|(sql, params)| self.execute(sql, params).map(drop));
        if own_transaction {
            match &written {
                Ok(()) => self.transaction("COMMIT")?,
                Err(_) => {
                    let _ = self.transaction("ROLLBACK");
                }
            }
        }
        written.map(|()| rows.len() as u64)
    }

    /// `BEGIN`, `COMMIT` or `ROLLBACK`, keeping track of the transaction.
    fn transaction(&mut self, statement: &str) -> Result<(), WitError> {
        let opening = statement != "COMMIT" && statement != "ROLLBACK";
        if opening == self.in_transaction {
            return Err(WitError::Config(format!(
                "connection `{}`: `{}` called {}",
                self.config.name,
                statement.to_lowercase(),
                if opening { "while a transaction is already open" } else { "with no transaction open" }
            )));
        }
        let outcome = self.execute(statement, &[]);
        // A failed COMMIT or ROLLBACK still ends the transaction on the server.
        if outcome.is_ok() || !opening {
            self.in_transaction = opening;
        }
        outcome.map(|_| ())
    }
}

impl Drop for SqlConnection {
    fn drop(&mut self) {
        self.settle();
        // A pooled session goes back to the pool: never with a transaction open.
        if self.in_transaction
            && let Err(e) = self.execute("ROLLBACK", &[])
        {
            tracing::warn!(connection = %self.config.name, "rolling back a transaction left open failed: {}", e.message());
            match &mut self.session {
                Session::Postgres(session) => session.discard(),
                Session::Mysql(session) => session.discard(),
                Session::Sqlite(_) => {}
            }
        }
    }
}

impl SqlRows {
    fn next(&mut self, max: usize) -> Result<Vec<Vec<Value>>, WitError> {
        let max = max.max(1);
        let mut page = Vec::with_capacity(max.min(self.buffered.len().max(CHUNK_ROWS)));
        while page.len() < max {
            if let Some(row) = self.buffered.pop_front() {
                page.push(row);
                continue;
            }
            if self.finished {
                break;
            }
            let mut guard = self.channel.receiver.lock().expect("rows channel poisoned");
            let Some(receiver) = guard.as_mut() else {
                if page.is_empty() {
                    return Err(WitError::Config(format!(
                        "connection `{}`: these rows were closed because another statement ran on the connection \
                         before they were read to the end",
                        self.connection
                    )));
                }
                break;
            };
            let received = self.services.block_on(self.timeout, receiver.recv()).map_err(|Elapsed| {
                WitError::Transient(format!(
                    "connection `{}`: waiting for rows took longer than the statement timeout of {}",
                    self.connection,
                    humantime::format_duration(self.timeout)
                ))
            })?;
            match received {
                Some(Ok(chunk)) => self.buffered.extend(chunk),
                Some(Err(error)) => {
                    // The producer stopped: nothing more will come.
                    self.finished = true;
                    return Err(error);
                }
                // The producer is done and sent everything.
                None => self.finished = true,
            }
        }
        Ok(page)
    }
}

impl HostConnection for PluginCtx {
    fn open(&mut self, name: String) -> Result<Resource<SqlConnection>, WitError> {
        let config = self.sql.grant(&name)?;
        let connection = SqlConnection::open(config, &self.sql.connections.tenant, &self.sql.services)?;
        self.table().push(connection).map_err(|e| {
            WitError::Config(format!(
                "connection `{name}`: plugin `{}` holds too many resources: {e}",
                self.sql.connections.plugin
            ))
        })
    }

    fn dialect(&mut self, connection: Resource<SqlConnection>) -> Dialect {
        match self.table().get(&connection).map(|c| c.config.dialect) {
            Ok(SqlDialect::Postgres) | Err(_) => Dialect::Postgres,
            Ok(SqlDialect::Mysql) => Dialect::Mysql,
            Ok(SqlDialect::Sqlite) => Dialect::Sqlite,
        }
    }

    fn query(
        &mut self,
        connection: Resource<SqlConnection>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Resource<SqlRows>, WitError> {
        let services = self.sql.services.clone();
        let table = self.table();
        let connection = table.get_mut(&connection).map_err(|e| stale_handle("connection", e))?;
        let Query { columns, channel } = connection.query(&sql, &params)?;
        let rows = SqlRows {
            connection: connection.config.name.clone(),
            columns,
            channel,
            buffered: VecDeque::new(),
            finished: false,
            timeout: connection.config.statement_timeout,
            services,
        };
        table.push(rows).map_err(|e| WitError::Config(format!("too many open rows: {e}")))
    }

    fn execute(
        &mut self,
        connection: Resource<SqlConnection>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<u64, WitError> {
        let connection = self.table().get_mut(&connection).map_err(|e| stale_handle("connection", e))?;
        connection.execute(&sql, &params)
    }

    fn bulk_upsert(
        &mut self,
        connection: Resource<SqlConnection>,
        table: String,
        key: Vec<String>,
        rows: synchost_model::Table,
    ) -> Result<u64, WitError> {
        self.table().get_mut(&connection).map_err(|e| stale_handle("connection", e))?.bulk_upsert(&table, &key, &rows)
    }

    fn begin(&mut self, connection: Resource<SqlConnection>) -> Result<(), WitError> {
        let connection = self.table().get_mut(&connection).map_err(|e| stale_handle("connection", e))?;
        let begin = if connection.config.dialect == SqlDialect::Mysql { "START TRANSACTION" } else { "BEGIN" };
        connection.transaction(begin)
    }

    fn commit(&mut self, connection: Resource<SqlConnection>) -> Result<(), WitError> {
        let connection = self.table().get_mut(&connection).map_err(|e| stale_handle("connection", e))?;
        connection.transaction("COMMIT")
    }

    fn rollback(&mut self, connection: Resource<SqlConnection>) -> Result<(), WitError> {
        let connection = self.table().get_mut(&connection).map_err(|e| stale_handle("connection", e))?;
        connection.transaction("ROLLBACK")
    }

    fn drop(&mut self, connection: Resource<SqlConnection>) -> wasmtime::Result<()> {
        self.table().delete(connection)?;
        Ok(())
    }
}

impl HostRows for PluginCtx {
    fn columns(&mut self, rows: Resource<SqlRows>) -> Vec<String> {
        self.table().get(&rows).map(|r| r.columns.clone()).unwrap_or_default()
    }

    fn next(&mut self, rows: Resource<SqlRows>, max: u32) -> Result<Vec<Vec<Value>>, WitError> {
        let rows = self.table().get_mut(&rows).map_err(|e| stale_handle("rows", e))?;
        rows.next(max as usize)
    }

    fn next_table(&mut self, rows: Resource<SqlRows>, max: u32) -> Result<synchost_model::Table, WitError> {
        let rows = self.table().get_mut(&rows).map_err(|e| stale_handle("rows", e))?;
        let page = rows.next(max as usize)?;
        let mut table = synchost_model::TableBuilder::with_capacity(rows.columns.clone(), page.len());
        for values in &page {
            table.push_row("", values.iter().map(synchost_model::ValueRef::from));
        }
        Ok(table.finish())
    }

    fn drop(&mut self, rows: Resource<SqlRows>) -> wasmtime::Result<()> {
        let rows = self.table().delete(rows)?;
        // Rows dropped before their end stop the query on the database too.
        rows.channel.close();
        Ok(())
    }
}

impl Host for PluginCtx {}

/// Text for a float the way databases parse it back exactly (Rust's shortest
/// round-trip form; infinities spelled as SQL spells them).
fn float_text(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else if value.is_nan() {
        "NaN".into()
    } else {
        format!("{value:?}")
    }
}

/// Timestamp and time notation shared by every backend, so that the same
/// instant read from two databases compares equal in a diff.
const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";
const TIME_FORMAT: &str = "%H:%M:%S%.f";
const DATE_FORMAT: &str = "%Y-%m-%d";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_so_that_they_parse_back_exactly() {
        for value in [0.1, 1.0 / 3.0, 1e300, -2.5e-300, 12.5] {
            assert_eq!(float_text(value).parse::<f64>().unwrap(), value);
        }
        assert_eq!(float_text(f64::INFINITY), "Infinity");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float_text(f64::NAN), "NaN");
    }

    #[test]
    fn a_connection_not_granted_is_refused_by_name() {
        let grants = SqlGrants::new("acme", "reader", &[], HostServices::new().unwrap());
        let error = grants.grant("crm").unwrap_err();
        assert_eq!(error.class(), "config");
        assert!(error.message().contains("connection `crm` is not granted to plugin `reader` of tenant `acme`"));
        assert!(error.message().contains("none"), "{}", error.message());
    }

    #[test]
    fn host_functions_can_block_on_the_io_runtime_from_the_daemons_blocking_threads() {
        // `synchost run` calls plugins from `spawn_blocking` threads of its own
        // runtime; the sql host functions block on the I/O runtime from there.
        let daemon = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let services = HostServices::new().unwrap();
        let answer = daemon
            .block_on(async {
                tokio::task::spawn_blocking(move || services.block_on(Duration::from_secs(5), async { 42 })).await
            })
            .expect("the blocking task ran");
        assert!(matches!(answer, Ok(42)));
    }
}
