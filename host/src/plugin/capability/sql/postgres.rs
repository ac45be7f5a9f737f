//! PostgreSQL sessions for the `sql` interface, through tokio-postgres.
//!
//! Parameters are sent in text format with their types left to the server,
//! as libpq does: the server parses each one as the statement needs it, so
//! `text("2024-05-01")` binds to a date column and `integer(7)` to a numeric
//! one without the plugin writing casts. (Bytes go in binary, to `bytea`.)
//! Results arrive in binary format and are decoded by column type.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{Row, SimpleQueryMessage};

use super::bulk::BulkUpsert;
use super::pool::{Pool, pool};
use super::{ChunkSender, DATE_FORMAT, DATETIME_FORMAT, Query, RowsChannel, TIME_FORMAT};
use crate::config::ConnectionConfig;
use crate::plugin::capability::services::{Elapsed, HostServices};
use crate::plugin::types::{Error as WitError, Value};

pub(in crate::plugin) struct Session {
    client: Option<deadpool_postgres::Object>,
    services: Arc<HostServices>,
}

impl Session {
    pub(super) fn open(
        config: &Arc<ConnectionConfig>,
        tenant: &str,
        services: &Arc<HostServices>,
    ) -> Result<Session, WitError> {
        let Pool::Postgres(pool) = pool(services, tenant, config)? else {
            unreachable!("a postgres connection has a postgres pool")
        };
        let client = services.io().block_on(pool.get()).map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => error(config, &e),
            deadpool_postgres::PoolError::Timeout(_) => WitError::Transient(format!(
                "connection `{}` (postgres): no connection could be opened within the connect timeout of {}",
                config.name,
                humantime::format_duration(config.connect_timeout)
            )),
            other => WitError::Transient(format!("connection `{}` (postgres): {other}", config.name)),
        })?;
        Ok(Session { client: Some(client), services: services.clone() })
    }

    /// Keeps the session from going back to the pool: its state is unknown.
    pub(super) fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    fn client(&self, config: &ConnectionConfig) -> Result<&deadpool_postgres::Object, WitError> {
        self.client.as_ref().ok_or_else(|| {
            WitError::Transient(format!("connection `{}` (postgres): the session was lost; open it again", config.name))
        })
    }

    /// Waits for `future` at most the statement timeout; past it, asks the
    /// server to cancel what the session runs.
    fn wait<T>(
        &self,
        config: &ConnectionConfig,
        what: &str,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, WitError> {
        match self.services.block_on(config.statement_timeout, future) {
            Ok(result) => result.map_err(|e| error(config, &e)),
            Err(Elapsed) => {
                if let Some(client) = &self.client {
                    let cancel = client.cancel_token();
                    self.services.io().spawn(async move { cancel.cancel_query(tokio_postgres::NoTls).await });
                }
                Err(super::timed_out(config, what))
            }
        }
    }

    pub(super) fn execute(
        &mut self,
        config: &Arc<ConnectionConfig>,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, WitError> {
        let client = self.client(config)?;
        if params.is_empty() {
            // The simple protocol: several statements (a script) may run at once.
            let messages = self.wait(config, "the statement", client.simple_query(sql))?;
            return Ok(messages
                .iter()
                .map(|m| match m {
                    SimpleQueryMessage::CommandComplete(n) => *n,
                    _ => 0,
                })
                .sum());
        }
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        self.wait(config, "the statement", async {
            let statement = client.prepare_cached(sql).await?;
            client.execute_raw(&statement, params.iter().map(|p| p as &dyn ToSql)).await
        })
    }

    /// Loads the rows with `COPY` into a temporary table and merges them
    /// into the target with one `INSERT … ON CONFLICT`, in the open
    /// transaction or, with none open, in one of its own.
    pub(super) fn bulk_upsert(
        &mut self,
        config: &Arc<ConnectionConfig>,
        bulk: &BulkUpsert<'_>,
        in_transaction: bool,
    ) -> Result<u64, WitError> {
        let client = self.client(config)?;
        let [stage, copy, merge, drop_stage] = bulk.postgres_statements();
        let data = bytes::Bytes::from(bulk.copy_text());
        let outcome = self.wait(config, "the bulk upsert", async {
            if !in_transaction {
                client.batch_execute("BEGIN").await?;
            }
            client.batch_execute(&stage).await?;
            let sink = client.copy_in::<_, bytes::Bytes>(copy.as_str()).await?;
            futures_util::pin_mut!(sink);
            futures_util::SinkExt::send(&mut sink, data).await?;
            sink.finish().await?;
            let written = client.execute(merge.as_str(), &[]).await?;
            client.batch_execute(&drop_stage).await?;
            if !in_transaction {
                client.batch_execute("COMMIT").await?;
            }
            Ok(written)
        });
        if outcome.is_err() && !in_transaction {
            // Ours to end: the session goes back to the pool with none open.
            let _ = self.execute(config, "ROLLBACK", &[]);
        }
        outcome
    }

    pub(super) fn query(
        &mut self,
        config: &Arc<ConnectionConfig>,
        sql: &str,
        params: &[Value],
    ) -> Result<Query, WitError> {
        let client = self.client(config)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let (statement, stream) = self.wait(config, "the query", async {
            let statement = client.prepare_cached(sql).await?;
            let stream = client.query_raw(&statement, params.iter().map(|p| p as &dyn ToSql)).await?;
            Ok((statement, stream))
        })?;
        let columns: Vec<(String, Type)> =
            statement.columns().iter().map(|c| (c.name().to_string(), c.type_().clone())).collect();
        let (channel, sender) = RowsChannel::new();
        let producer_config = config.clone();
        let types = columns.clone();
        self.services.io().spawn(async move {
            let mut out = ChunkSender::new(sender);
            let mut stream = std::pin::pin!(stream);
            let outcome = loop {
                match stream.next().await {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(error(&producer_config, &e)),
                    Some(Ok(row)) => match decode_row(&producer_config, &types, &row) {
                        Ok(values) => {
                            if !out.push(values).await {
                                return;
                            }
                        }
                        Err(e) => break Err(e),
                    },
                }
            };
            out.finish(outcome).await;
        });
        Ok(Query { columns: columns.into_iter().map(|(name, _)| name).collect(), channel })
    }
}

/// A parameter, bound the way libpq binds one (see the module doc).
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Value::Float(f) => out.extend_from_slice(super::float_text(*f).as_bytes()),
            Value::Text(text) | Value::Json(text) => out.extend_from_slice(text.as_bytes()),
            Value::Bytes(bytes) if *ty == Type::BYTEA => out.extend_from_slice(bytes),
            Value::Bytes(_) => return Err(format!("a bytes value cannot bind to a parameter of type `{ty}`").into()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> tokio_postgres::types::Format {
        match self.0 {
            Value::Bytes(_) if *ty == Type::BYTEA => tokio_postgres::types::Format::Binary,
            _ => tokio_postgres::types::Format::Text,
        }
    }

    to_sql_checked!();
}

/// A column's value as the server sent it, for decoding by type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn decode_row(config: &ConnectionConfig, columns: &[(String, Type)], row: &Row) -> Result<Vec<Value>, WitError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let raw: Option<Raw<'_>> = row.try_get(i).map_err(|e| error(config, &e))?;
            match raw {
                None => Ok(Value::Null),
                Some(Raw(raw)) => decode(ty, raw).map_err(|detail| {
                    WitError::Config(format!("connection `{}` (postgres): column `{name}`: {detail}", config.name))
                }),
            }
        })
        .collect()
}

/// One non-null value of type `ty`, from its binary form.
fn decode(ty: &Type, raw: &[u8]) -> Result<Value, String> {
    let bad = |e: Box<dyn StdError + Sync + Send>| format!("cannot read a `{ty}` value: {e}");
    let text = |raw: &[u8]| String::from_utf8(raw.to_vec()).map_err(|e| format!("a `{ty}` value is not UTF-8: {e}"));
    Ok(match *ty {
        Type::BOOL => Value::Boolean(bool::from_sql(ty, raw).map_err(bad)?),
        Type::INT2 => Value::Integer(i16::from_sql(ty, raw).map_err(bad)?.into()),
        Type::INT4 => Value::Integer(i32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::INT8 => Value::Integer(i64::from_sql(ty, raw).map_err(bad)?),
        Type::OID => Value::Integer(u32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw).map_err(bad)?),
        Type::NUMERIC => Value::Text(numeric_text(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Value::Text(text(raw)?),
        Type::BYTEA => Value::Bytes(raw.to_vec()),
        Type::JSON => Value::Json(text(raw)?),
        // jsonb's binary form is a version byte, then the text.
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => Value::Json(text(rest)?),
            _ => return Err("unknown jsonb format version".into()),
        },
        Type::UUID => Value::Text(uuid::Uuid::from_sql(ty, raw).map_err(bad)?.to_string()),
        Type::DATE => Value::Text(chrono::NaiveDate::from_sql(ty, raw).map_err(bad)?.format(DATE_FORMAT).to_string()),
        Type::TIME => Value::Text(chrono::NaiveTime::from_sql(ty, raw).map_err(bad)?.format(TIME_FORMAT).to_string()),
        Type::TIMESTAMP => {
            Value::Text(chrono::NaiveDateTime::from_sql(ty, raw).map_err(bad)?.format(DATETIME_FORMAT).to_string())
        }
        Type::TIMESTAMPTZ => {
            let at = chrono::DateTime::<chrono::Utc>::from_sql(ty, raw).map_err(bad)?;
            Value::Text(format!("{}+00:00", at.format(DATETIME_FORMAT)))
        }
        _ => match ty.kind() {
            // An enum's binary form is its label.
            Kind::Enum(_) => Value::Text(text(raw)?),
            Kind::Domain(base) => return decode(base, raw),
            _ if ty.name() == "citext" => Value::Text(text(raw)?),
            _ => {
                return Err(format!(
                    "has type `{ty}`, which the sql interface cannot read; cast it in the query (e.g. `::text`)"
                ));
            }
        },
    })
}

/// A `numeric` in its binary form (base-10000 digits, a weight, a sign and
/// a display scale) as PostgreSQL itself prints it, e.g. `-12.50`.
fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "a truncated numeric".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    let digits = (0..ndigits).map(|i| word(8 + 2 * i)).collect::<Result<Vec<u16>, _>>()?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        other => return Err(format!("a numeric with an unknown sign {other:#x}")),
    }
    let digit = |index: i64| if index < 0 { 0 } else { digits.get(index as usize).copied().unwrap_or(0) };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for index in 0..=weight {
            if index == 0 {
                write!(out, "{}", digit(index)).expect("writing to a String");
            } else {
                write!(out, "{:04}", digit(index)).expect("writing to a String");
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut index = weight + 1;
        while fraction.len() < dscale {
            write!(fraction, "{:04}", digit(index)).expect("writing to a String");
            index += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

/// Maps a PostgreSQL failure onto the WIT error, by SQLSTATE class.
fn error(config: &ConnectionConfig, e: &tokio_postgres::Error) -> WitError {
    let name = &config.name;
    let Some(db) = e.as_db_error() else {
        // No answer from the server: the connection, or our own parameters.
        let detail = match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        };
        let text = format!("connection `{name}` (postgres): {detail}");
        return if detail.starts_with("error serializing parameter") {
            WitError::Rejected(text)
        } else {
            WitError::Transient(text)
        };
    };
    let code = db.code().code();
    let mut text = format!("connection `{name}` (postgres): {} (SQLSTATE {code}", db.message());
    if let Some(detail) = db.detail() {
        write!(text, "; {detail}").expect("writing to a String");
    }
    text.push(')');
    match &code[..2] {
        // Connection exceptions, transaction rollbacks (serialisation
        // failures, deadlocks), insufficient resources, operator
        // intervention (a cancelled statement, a shutdown), system errors.
        "08" | "40" | "53" | "57" | "58" => WitError::Transient(text),
        // Integrity constraints, bad data, cardinality, check options, and
        // exceptions raised by triggers: this row can never apply as it is.
        "23" | "22" | "21" | "44" | "P0" => WitError::Rejected(text),
        // Authorisation, missing objects, bad SQL, unsupported features,
        // and anything unknown: an operator has to look.
        _ => WitError::Config(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for word in [digits.len() as u16, weight as u16, sign, dscale].into_iter().chain(digits.iter().copied()) {
            raw.extend_from_slice(&word.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_print_as_postgres_prints_them() {
        assert_eq!(numeric_text(&numeric(0, 0, 2, &[12, 5000])).unwrap(), "12.50");
        assert_eq!(numeric_text(&numeric(0, 0x4000, 2, &[12, 5000])).unwrap(), "-12.50");
        assert_eq!(numeric_text(&numeric(-1, 0, 3, &[10])).unwrap(), "0.001");
        assert_eq!(numeric_text(&numeric(1, 0, 0, &[1])).unwrap(), "10000");
        assert_eq!(numeric_text(&numeric(2, 0, 4, &[1, 2, 3, 4567])).unwrap(), "100020003.4567");
        assert_eq!(numeric_text(&numeric(-2, 0, 8, &[1234])).unwrap(), "0.00001234");
        assert_eq!(numeric_text(&numeric(0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_text(&numeric(0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
    }
}
