//! Fencing out stale writers in the database itself (`fence_table`). Each
//! pipeline is run by one host at a time, under a lease whose token grows
//! with every new holder (`host.run-fence`); a host that stalled mid-apply
//! may lose its lease to another and still commit, when it resumes, the batch
//! it had begun, over the new holder's. With a fence table, each batch's
//! transaction first raises its scope's token to the batch's (if lower), then
//! reads it under a shared lock held until commit, and refuses the batch if a
//! newer holder's token is recorded. Batches under one token (the lanes of a
//! run) share the lock and run side by side; a newer holder's raise waits for
//! the batches in flight under the old token, and every batch of the old
//! holder after it is refused.

use sql_common::{placeholder, quote, read_all};
use synchost_plugin_sdk::host::Fence;
use synchost_plugin_sdk::sql::{Connection, Dialect};
use synchost_plugin_sdk::{Error, Value};

pub(crate) struct FenceTable {
    /// The table's name as written in SQL (quoted, schema-qualified if given).
    sql_name: String,
    dialect: Dialect,
}

impl FenceTable {
    /// The fence table `name` on `connection`, made if it is not there yet.
    pub(crate) fn open(connection: &Connection, name: &str) -> Result<FenceTable, Error> {
        let dialect = connection.dialect();
        let sql_name = name.split('.').map(|part| quote(dialect, part)).collect::<Vec<_>>().join(".");
        let exists = || connection.query(&format!("SELECT scope, token FROM {sql_name} WHERE 1 = 0"), &[]);
        if exists().is_err() {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {sql_name} (scope VARCHAR(500) PRIMARY KEY, token BIGINT NOT NULL)"
            );
            // Lanes opening at once may race to make it (PostgreSQL can then
            // refuse one with a duplicate type): made by either is as good.
            if let Err(e) = connection.execute(&create, &[]) {
                exists().map_err(|_| e)?;
            }
        }
        Ok(FenceTable { sql_name, dialect })
    }

    /// Admits the batch of the transaction open on `connection`, written
    /// under `fence`, or refuses it (`transient`: the stale run is stopping
    /// anyway, and the new holder applies these operations itself).
    pub(crate) fn admit(&self, connection: &Connection, fence: &Fence) -> Result<(), Error> {
        let t = &self.sql_name;
        let (p1, p2) = (placeholder(self.dialect, 1), placeholder(self.dialect, 2));
        let scope = Value::Text(fence.scope.clone());
        let token = fence.token as i64;
        if self.recorded(connection, &scope, "")?.is_none_or(|recorded| recorded < token) {
            // Locks the row until commit.
            let raise = match self.dialect {
                Dialect::Postgres => format!(
                    "INSERT INTO {t} AS f (scope, token) VALUES ({p1}, {p2}) \
                     ON CONFLICT (scope) DO UPDATE SET token = excluded.token WHERE f.token < excluded.token"
                ),
                Dialect::Sqlite => format!(
                    "INSERT INTO {t} (scope, token) VALUES ({p1}, {p2}) \
                     ON CONFLICT (scope) DO UPDATE SET token = excluded.token WHERE token < excluded.token"
                ),
                Dialect::Mysql => format!(
                    "INSERT INTO {t} (scope, token) VALUES ({p1}, {p2}) \
                     ON DUPLICATE KEY UPDATE token = GREATEST(token, VALUES(token))"
                ),
            };
            connection.execute(&raise, &[scope.clone(), Value::Integer(token)])?;
        }
        let shared = match self.dialect {
            Dialect::Postgres => " FOR SHARE",
            Dialect::Mysql => " LOCK IN SHARE MODE",
            // A write transaction excludes every other writer already.
            Dialect::Sqlite => "",
        };
        match self.recorded(connection, &scope, shared)? {
            Some(newest) if newest > token => Err(Error::Transient(format!(
                "this run's lease (token {token}) has passed to another holder, which wrote here under token \
                 {newest} (see {t}): this batch is refused"
            ))),
            _ => Ok(()),
        }
    }

    /// The token recorded for `scope`, read with `lock` (a locking clause).
    fn recorded(&self, connection: &Connection, scope: &Value, lock: &str) -> Result<Option<i64>, Error> {
        let p1 = placeholder(self.dialect, 1);
        let sql = format!("SELECT token FROM {} WHERE scope = {p1}{lock}", self.sql_name);
        let rows = read_all(connection, &sql, std::slice::from_ref(scope), 1)?;
        rows.first()
            .map(|row| match row.first() {
                Some(Value::Integer(token)) => Ok(*token),
                Some(Value::Text(text)) => text
                    .parse()
                    .map_err(|_| Error::Config(format!("{}: token `{text}` is not a number", self.sql_name))),
                other => Err(Error::Config(format!("{}: token {other:?} is not a number", self.sql_name))),
            })
            .transpose()
    }
}
