//! SQLite sessions for the `sql` interface, through rusqlite (the same SQLite
//! the state store links). A session opens the database file itself: SQLite
//! connections are cheap, and a pool would only hold file locks longer.
//!
//! Statements run on the plugin's own thread; a query's rows are produced on
//! a blocking thread of the I/O runtime, which SQLite interrupts once the rows
//! are closed. A statement's time is bounded by a progress handler.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::{ChunkSender, Query, RowsChannel};
use crate::config::ConnectionConfig;
use crate::plugin::capability::services::HostServices;
use crate::plugin::types::{Error as WitError, Value};

/// SQLite virtual-machine steps between two checks of the deadline.
const PROGRESS_STEPS: std::ffi::c_int = 10_000;

pub(in crate::plugin) struct Session {
    connection: Arc<Mutex<Connection>>,
    services: Arc<HostServices>,
}

impl Session {
    pub(super) fn open(config: &Arc<ConnectionConfig>, services: &Arc<HostServices>) -> Result<Session, WitError> {
        let path = config.sqlite_path.as_ref().expect("a sqlite connection has a path");
        // No CREATE: a mistyped path is an error, not a new empty database.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(|e| error(config, &e))?;
        connection.busy_timeout(config.statement_timeout).map_err(|e| error(config, &e))?;
        Ok(Session { connection: Arc::new(Mutex::new(connection)), services: services.clone() })
    }

    pub(super) fn execute(
        &mut self,
        config: &Arc<ConnectionConfig>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, WitError> {
        let mut connection = self.connection.lock().expect("sqlite session poisoned");
        let deadline = Instant::now() + crate::plugin::deadline::bounded(config.statement_timeout);
        connection
            .progress_handler(PROGRESS_STEPS, Some(move || Instant::now() > deadline))
            .map_err(|e| error(config, &e))?;
        let outcome = if params.is_empty() {
            // Without parameters: a script of several statements may run.
            let before = connection.total_changes();
            connection.execute_batch(sql).map(|()| connection.total_changes() - before)
        } else {
            connection.execute(sql, rusqlite::params_from_iter(params.iter().map(Param))).map(|n| n as u64)
        };
        let removed = connection.progress_handler(0, None::<fn() -> bool>);
        outcome.and_then(|n| removed.map(|()| n)).map_err(|e| error(config, &e))
    }

    pub(super) fn query(
        &mut self,
        config: &Arc<ConnectionConfig>,
        sql: &str,
        params: &[Value],
    ) -> Result<Query, WitError> {
        // Prepared here, for the column names and so that bad SQL fails the
        // call itself; the producer prepares it again from the cache.
        let columns: Vec<String> = {
            let connection = self.connection.lock().expect("sqlite session poisoned");
            let statement = connection.prepare_cached(sql).map_err(|e| error(config, &e))?;
            statement.column_names().map(str::to_string).collect()
        };
        let (channel, sender) = RowsChannel::new();
        let (connection, config, sql, params) =
            (self.connection.clone(), config.clone(), sql.to_string(), params.to_vec());
        self.services.io().spawn_blocking(move || {
            let watched = sender.clone();
            let mut out = ChunkSender::new(sender);
            let mut connection = connection.lock().expect("sqlite session poisoned");
            let outcome = (|| {
                // Once the rows are closed, SQLite interrupts the statement.
                connection.progress_handler(PROGRESS_STEPS, Some(move || watched.is_closed()))?;
                let mut statement = connection.prepare_cached(&sql)?;
                let width = statement.column_count();
                let mut rows = statement.query(rusqlite::params_from_iter(params.iter().map(Param)))?;
                while let Some(row) = rows.next()? {
                    let values = (0..width).map(|i| row.get_ref(i).map(value)).collect::<Result<Vec<_>, _>>()?;
                    if !out.blocking_push(values) {
                        return Ok(());
                    }
                }
                Ok(())
            })();
            let outcome = outcome.and(connection.progress_handler(0, None::<fn() -> bool>));
            drop(connection);
            out.blocking_finish(outcome.map_err(|e: rusqlite::Error| error(&config, &e)));
        });
        Ok(Query { columns, channel })
    }
}

struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Boolean(b) => ToSqlOutput::Owned(rusqlite::types::Value::Integer((*b).into())),
            Value::Integer(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(text) | Value::Json(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Bytes(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
        })
    }
}

/// A stored value as it is: SQLite types values, not columns.
fn value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
    }
}

/// Maps a SQLite failure onto the WIT error, by result code.
fn error(config: &ConnectionConfig, e: &rusqlite::Error) -> WitError {
    use rusqlite::ErrorCode as C;
    let text = format!("connection `{}` (sqlite): {e}", config.name);
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked | C::OperationInterrupted | C::SystemIoFailure | C::OutOfMemory) => {
            if e.sqlite_error_code() == Some(C::OperationInterrupted) {
                super::timed_out(config, "the statement")
            } else {
                WitError::Transient(text)
            }
        }
        Some(C::ConstraintViolation | C::TypeMismatch | C::TooBig) => WitError::Rejected(text),
        // Cannot open, read-only, not a database, no such table, bad SQL.
        _ => WitError::Config(text),
    }
}
