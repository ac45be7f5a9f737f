//! MySQL and MariaDB sessions for the `sql` interface, through mysql_async.
//!
//! Statements with parameters, and every query, use the binary protocol:
//! parameters travel with their own types (MySQL converts a string to the
//! column's type as it would a literal) and results come back typed, so only
//! strings need their column to tell text from bytes. A session is one pooled
//! connection behind a lock: a query's producer holds the lock while it
//! streams rows, so the next statement waits until those rows are closed
//! (which the connection does first).

use std::sync::Arc;

use mysql_async::consts::ColumnType as T;
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Params};
use tokio::sync::{Mutex, oneshot};

use super::pool::{Pool, pool};
use super::{ChunkSender, DATE_FORMAT, DATETIME_FORMAT, Query, RowsChannel};
use crate::config::ConnectionConfig;
use crate::plugin::capability::services::{Elapsed, HostServices};
use crate::plugin::types::{Error as WitError, Value};

/// The character set MySQL reports for binary strings and blobs.
const BINARY_CHARSET: u16 = 63;

pub(in crate::plugin) struct Session {
    /// `None` once the session was given up after a timeout.
    connection: Arc<Mutex<Option<Conn>>>,
    services: Arc<HostServices>,
}

impl Session {
    pub(super) fn open(
        config: &Arc<ConnectionConfig>,
        tenant: &str,
        services: &Arc<HostServices>,
    ) -> Result<Session, WitError> {
        let Pool::Mysql(pool) = pool(services, tenant, config)? else {
            unreachable!("a mysql connection has a mysql pool")
        };
        let connection = match services.block_on(config.connect_timeout, pool.get_conn()) {
            Ok(connection) => connection.map_err(|e| error(config, &e))?,
            Err(Elapsed) => {
                return Err(WitError::Transient(format!(
                    "connection `{}` (mysql): no connection could be opened within the connect timeout of {}",
                    config.name,
                    humantime::format_duration(config.connect_timeout)
                )));
            }
        };
        Ok(Session { connection: Arc::new(Mutex::new(Some(connection))), services: services.clone() })
    }

    /// Gives the session up: it will not be used, nor go back to the pool.
    pub(super) fn discard(&mut self) {
        let abandoned = std::mem::replace(&mut self.connection, Arc::new(Mutex::new(None)));
        // A producer may still hold it; whoever drops it last closes it.
        self.services.io().spawn(async move {
            if let Some(connection) = abandoned.lock().await.take() {
                let _ = connection.disconnect().await;
            }
        });
    }

    pub(super) fn execute(
        &mut self,
        config: &Arc<ConnectionConfig>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, WitError> {
        let params = parameters(params);
        let connection = self.connection.clone();
        let outcome = self.services.block_on(config.statement_timeout, async move {
            let mut guard = connection.lock().await;
            let Some(connection) = guard.as_mut() else { return Ok(None) };
            match params {
                // Without parameters: the text protocol, which runs scripts too.
                Params::Empty => connection.query_drop(sql).await?,
                params => connection.exec_drop(sql, params).await?,
            }
            Ok(Some(connection.affected_rows()))
        });
        match outcome {
            Ok(Ok(Some(affected))) => Ok(affected),
            Ok(Ok(None)) => Err(lost(config)),
            Ok(Err(e)) => Err(error(config, &e)),
            Err(Elapsed) => {
                // The statement may still run: the session is not reused.
                self.discard();
                Err(super::timed_out(config, "the statement"))
            }
        }
    }

    pub(super) fn query(
        &mut self,
        config: &Arc<ConnectionConfig>,
        sql: &str,
        params: &[Value],
    ) -> Result<Query, WitError> {
        let params = parameters(params);
        let (channel, sender) = RowsChannel::new();
        let (columns_sent, columns) = oneshot::channel::<Result<Arc<[Column]>, WitError>>();
        let (connection, producer_config, sql) = (self.connection.clone(), config.clone(), sql.to_string());
        // The producer runs the query and streams its rows, holding the
        // session until they are read or closed; it reports the columns first.
        self.services.io().spawn(async move {
            let config = producer_config;
            let mut guard = connection.lock_owned().await;
            let Some(connection) = guard.as_mut() else {
                let _ = columns_sent.send(Err(lost(&config)));
                return;
            };
            let mut result = match connection.exec_iter(sql, params).await {
                Ok(result) => result,
                Err(e) => {
                    let _ = columns_sent.send(Err(error(&config, &e)));
                    return;
                }
            };
            let columns = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
            if columns_sent.send(Ok(columns.clone())).is_err() {
                return;
            }
            let mut out = ChunkSender::new(sender);
            let outcome = loop {
                match result.next().await {
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(error(&config, &e)),
                    Ok(Some(row)) => match decode_row(&config, &columns, row.unwrap()) {
                        Ok(values) => {
                            if !out.push(values).await {
                                // Closed: the rest of the result is dropped
                                // before the session's next statement.
                                return;
                            }
                        }
                        Err(e) => break Err(e),
                    },
                }
            };
            out.finish(outcome).await;
        });
        match self.services.block_on(config.statement_timeout, columns) {
            Ok(Ok(Ok(columns))) => {
                Ok(Query { columns: columns.iter().map(|c| c.name_str().into_owned()).collect(), channel })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(lost(config)),
            Err(Elapsed) => {
                channel.close();
                self.discard();
                Err(super::timed_out(config, "the query"))
            }
        }
    }
}

fn lost(config: &ConnectionConfig) -> WitError {
    WitError::Transient(format!(
        "connection `{}` (mysql): the session was given up after a timeout; open the connection again",
        config.name
    ))
}

/// The parameters, bound with their own types.
fn parameters(params: &[Value]) -> Params {
    if params.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        params
            .iter()
            .map(|value| match value {
                Value::Null => mysql_async::Value::NULL,
                Value::Boolean(b) => mysql_async::Value::Int((*b).into()),
                Value::Integer(n) => mysql_async::Value::Int(*n),
                Value::Float(f) => mysql_async::Value::Double(*f),
                Value::Text(text) | Value::Json(text) => mysql_async::Value::Bytes(text.clone().into_bytes()),
                Value::Bytes(bytes) => mysql_async::Value::Bytes(bytes.clone()),
            })
            .collect(),
    )
}

fn decode_row(
    config: &ConnectionConfig,
    columns: &[Column],
    values: Vec<mysql_async::Value>,
) -> Result<Vec<Value>, WitError> {
    columns
        .iter()
        .zip(values)
        .map(|(column, value)| {
            decode(column, value).map_err(|detail| {
                WitError::Config(format!(
                    "connection `{}` (mysql): column `{}`: {detail}",
                    config.name,
                    column.name_str()
                ))
            })
        })
        .collect()
}

/// One value of `column`, as the binary protocol sent it.
fn decode(column: &Column, value: mysql_async::Value) -> Result<Value, String> {
    use mysql_async::Value as M;
    Ok(match value {
        M::NULL => Value::Null,
        // TINYINT(1) is how MySQL spells BOOLEAN.
        M::Int(n) if column.column_type() == T::MYSQL_TYPE_TINY && column.column_length() == 1 => {
            Value::Boolean(n != 0)
        }
        M::Int(n) => Value::Integer(n),
        M::UInt(n) => i64::try_from(n).map_or_else(|_| Value::Text(n.to_string()), Value::Integer),
        M::Float(f) => Value::Float(f.into()),
        M::Double(f) => Value::Float(f),
        M::Date(year, month, day, hour, minute, second, micros) => {
            let date = chrono::NaiveDate::from_ymd_opt(year.into(), month.into(), day.into())
                .ok_or_else(|| format!("`{year:04}-{month:02}-{day:02}` is not a date (a zero date?)"))?;
            if column.column_type() == T::MYSQL_TYPE_DATE {
                Value::Text(date.format(DATE_FORMAT).to_string())
            } else {
                let at = date
                    .and_hms_micro_opt(hour.into(), minute.into(), second.into(), micros)
                    .ok_or_else(|| format!("`{hour}:{minute}:{second}.{micros}` is not a time of day"))?;
                // The same notation as PostgreSQL timestamps, so they compare.
                Value::Text(at.format(DATETIME_FORMAT).to_string())
            }
        }
        // A TIME may be negative or past 24 hours: MySQL's own notation.
        M::Time(negative, days, hours, minutes, seconds, micros) => {
            let sign = if negative { "-" } else { "" };
            let hours = u64::from(days) * 24 + u64::from(hours);
            let fraction = if micros == 0 { String::new() } else { format!(".{micros:06}") };
            Value::Text(format!("{sign}{hours:02}:{minutes:02}:{seconds:02}{fraction}"))
        }
        M::Bytes(bytes) => match column.column_type() {
            T::MYSQL_TYPE_JSON => Value::Json(text(bytes)?),
            T::MYSQL_TYPE_BIT | T::MYSQL_TYPE_GEOMETRY => Value::Bytes(bytes),
            T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
                if column.character_set() == BINARY_CHARSET =>
            {
                Value::Bytes(bytes)
            }
            // Text, and decimals, which are sent as text to stay exact.
            _ => Value::Text(text(bytes)?),
        },
    })
}

fn text(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| format!("a text value is not UTF-8: {e}"))
}

/// Maps a MySQL or MariaDB failure onto the WIT error: by error number where
/// it is telling, else by SQLSTATE class.
fn error(config: &ConnectionConfig, e: &mysql_async::Error) -> WitError {
    let name = &config.name;
    match e {
        mysql_async::Error::Server(server) => {
            let text = format!(
                "connection `{name}` (mysql): {} (error {}, SQLSTATE {})",
                server.message, server.code, server.state
            );
            match server.code {
                // Lock wait timeout, deadlock, too many connections, server
                // shutting down or gone, statement interrupted or timed out.
                1205 | 1213 | 1040 | 1053 | 1317 | 1927 | 1969 | 2006 | 2013 | 3024 | 4031 => WitError::Transient(text),
                // Duplicate key, foreign key, NOT NULL, no default, bad or
                // too long or out-of-range values, CHECK constraints.
                1062 | 1586 | 1216 | 1217 | 1451 | 1452 | 1048 | 1364 | 1264 | 1265 | 1292 | 1366 | 1406 | 1690
                | 3819 | 4025 => WitError::Rejected(text),
                // Access denied, unknown database, table or column, bad SQL.
                1044 | 1045 | 1049 | 1051 | 1054 | 1064 | 1109 | 1142 | 1143 | 1146 | 1227 => WitError::Config(text),
                _ => match server.state.get(..2) {
                    Some("08" | "40") => WitError::Transient(text),
                    Some("22" | "23") => WitError::Rejected(text),
                    _ => WitError::Config(text),
                },
            }
        }
        // The plugin's own mistakes with parameters.
        mysql_async::Error::Driver(
            mysql_async::DriverError::StmtParamsMismatch { .. }
            | mysql_async::DriverError::MixedParams
            | mysql_async::DriverError::Params(_),
        )
        | mysql_async::Error::Url(_) => WitError::Config(format!("connection `{name}` (mysql): {e}")),
        // I/O, a closed connection, a disconnected pool: the connection, not
        // the data.
        _ => WitError::Transient(format!("connection `{name}` (mysql): {e}")),
    }
}
