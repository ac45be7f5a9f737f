//! A destination that keeps a table of a PostgreSQL, MySQL/MariaDB or SQLite
//! database in step, through the host's `sql` interface.
//!
//! Each `apply` batch is one transaction: creates, updates and upserts go
//! through the host's `bulk-upsert` (on PostgreSQL a `COPY` into a temporary
//! table merged with one `INSERT … ON CONFLICT (key) DO UPDATE`; on MySQL,
//! MariaDB and SQLite multi-row `INSERT … ON DUPLICATE KEY UPDATE` / `ON
//! CONFLICT`), setting only the columns the batch carries, so columns the
//! sync does not own keep their hand edits; an update of a row the table no
//! longer holds is rejected rather than upserted; deletes become `DELETE …
//! WHERE key IN (…)`. Upserts and deletes set a state rather than change one,
//! so a batch replayed after a crash leaves the table as one delivery would. If the database rejects a
//! row (a constraint, a bad value), the batch is rolled back and applied again
//! one operation at a time, each in a savepoint: the rejected operations are
//! reported with the database's message, the rest commit (each a multi-row
//! statement of one row: a COPY per row would cost four round trips).
//!
//! Config (the tenant grants the connection with `connections = ["NAME"]`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `connection` | required | the connection's name in the tenant file |
//! | `table` | required | e.g. `"customers"` or `"crm.customers"` |
//! | `key` | required | the key column, or a list of them: a primary key or unique index, which the upsert conflicts on |
//! | `columns` | every column | the columns the snapshot reads (what a diff compares is the pipeline's owned fields) |
//! | `page_size` | `5000` | rows per snapshot page |
//! | `statement_rows` | `500` | rows per delete statement |
//! | `fence_table` | none | a table (made if missing) recording each pipeline's newest lease, so that a host whose lease passed on while it stalled cannot commit a batch over the new holder's (see [`fence`]) |
//!
//! Columns the table has but a batch does not carry must be nullable or have
//! a default, since a new row is inserted with the batch's columns only.

mod fence;

use std::collections::HashSet;

use serde::Deserialize;
use sql_common::{Names, Table, key_values, read_all};
use synchost_plugin_sdk::sql::Dialect;
use synchost_plugin_sdk::{
    self as sdk, Action, Error, Operation, OperationBatch, Page, PluginInfo, Row, TableBuilder, Value, ValueRef,
};

/// Parameters one statement may carry on every supported database.
const MAX_PARAMS: usize = 32_000;

/// Rows one `bulk-upsert` call may carry (a batch is rarely larger).
const BULK_ROWS: usize = 100_000;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The connection's name in the tenant file; the plugin must be granted it
    /// with `connections = ["NAME"]`.
    connection: String,
    /// The table, e.g. "customers" or, with its schema, "crm.customers".
    table: String,
    /// The key column, or a list of them: a primary key or unique index,
    /// which the upsert conflicts on.
    key: Names,
    /// The columns the snapshot reads, key columns first if left out. Default:
    /// every column of the table.
    columns: Option<Vec<String>>,
    /// Rows per snapshot page.
    #[serde(default = "default_page_size")]
    #[schemars(range(min = 1))]
    page_size: u32,
    /// Rows per delete statement (upserts go in bulk).
    #[serde(default = "default_statement_rows")]
    #[schemars(range(min = 1))]
    statement_rows: usize,
    /// A table, e.g. "synchost_fences" or "crm.synchost_fences", made if
    /// missing, where each batch records the lease it was written under, in
    /// its own transaction: a batch under an older lease of its pipeline than
    /// one recorded (a host that stalled and lost its lease) is refused. Set
    /// it when several hosts share pipelines.
    fence_table: Option<String>,
}

fn default_page_size() -> u32 {
    5000
}

fn default_statement_rows() -> usize {
    500
}

/// The config and the open table, kept for the instance's life: the host
/// calls one instance page after page and batch after batch.
struct SqlDestination {
    config: Config,
    table: Table,
    fences: Option<fence::FenceTable>,
}

impl sdk::Plugin for SqlDestination {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "sql-destination",
            env!("CARGO_PKG_VERSION"),
            "Keeps a PostgreSQL, MySQL/MariaDB or SQLite table in step: batched upserts and deletes, a transaction per batch",
        )
    }

    fn new(config: Config) -> Result<Self, Error> {
        if config.page_size == 0 || config.statement_rows == 0 {
            return Err(Error::Config("`page_size` and `statement_rows` must be at least 1".into()));
        }
        let table = Table::open(&config.connection, &config.table, &config.key, config.columns.as_deref())?;
        let fences = match &config.fence_table {
            Some(name) => Some(fence::FenceTable::open(&table.connection, name)?),
            None => None,
        };
        Ok(SqlDestination { config, table, fences })
    }
}

/// Operations that go into one statement.
enum Group {
    Upserts(Vec<usize>),
    Deletes(Vec<usize>),
}

/// How one batch's rows map onto the table's columns.
struct Shape {
    /// Key columns, then the batch's other columns: what an upsert inserts.
    insert_columns: Vec<String>,
    /// For each insert column, its index among the batch's columns (`None`:
    /// a key column the batch does not carry, taken from the key).
    sources: Vec<Option<usize>>,
}

impl SqlDestination {
    fn shape(&self, columns: &[String]) -> Shape {
        let key = &self.table.key;
        let mut insert_columns = key.clone();
        insert_columns.extend(columns.iter().filter(|c| !key.contains(c)).cloned());
        let sources = insert_columns.iter().map(|c| columns.iter().position(|b| b == c)).collect();
        Shape { insert_columns, sources }
    }

    /// Splits the batch into statements: a run of one kind of operation, a
    /// key at most once (a statement cannot change one row twice), and at
    /// most [`BULK_ROWS`] upserts, or `statement_rows` deletes within the
    /// parameters a statement of `width` values a row may carry.
    fn groups(&self, operations: &[Operation], width: usize) -> Vec<Group> {
        let per_delete = self.config.statement_rows.min(MAX_PARAMS / width.max(1)).max(1);
        let mut groups = Vec::new();
        let mut current: Option<(bool, Vec<usize>, HashSet<&str>)> = None;
        for (i, operation) in operations.iter().enumerate() {
            let (delete, key) = match &operation.action {
                Action::Create(row) | Action::Upsert(row) => (false, row.key.as_str()),
                Action::Update(update) => (false, update.row.key.as_str()),
                Action::Delete(key) => (true, key.as_str()),
            };
            let fits = current.as_ref().is_some_and(|(kind, members, keys)| {
                let most = if *kind { per_delete } else { BULK_ROWS };
                *kind == delete && members.len() < most && !keys.contains(key)
            });
            if !fits && let Some((kind, members, _)) = current.take() {
                groups.push(if kind { Group::Deletes(members) } else { Group::Upserts(members) });
            }
            let (_, members, keys) = current.get_or_insert_with(|| (delete, Vec::new(), HashSet::new()));
            members.push(i);
            keys.insert(key);
        }
        if let Some((kind, members, _)) = current {
            groups.push(if kind { Group::Deletes(members) } else { Group::Upserts(members) });
        }
        groups
    }

    /// The values an upsert of `row` inserts.
    fn upsert_values(&self, shape: &Shape, row: &Row) -> Result<Vec<Value>, Error> {
        let from_key = if shape.sources[..self.table.key.len()].iter().any(Option::is_none) {
            key_values(&row.key, self.table.key.len())?
        } else {
            Vec::new()
        };
        let mut values = Vec::with_capacity(shape.sources.len());
        for (i, source) in shape.sources.iter().enumerate() {
            let value = match source {
                Some(index) => row.values.get(*index).cloned().ok_or_else(|| {
                    Error::Rejected(format!("row `{}` has no value for `{}`", row.key, shape.insert_columns[i]))
                })?,
                None => from_key[i].clone(),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn upsert_sql(&self, shape: &Shape, rows: usize) -> String {
        let table = &self.table;
        let width = shape.insert_columns.len();
        let tuples = (0..rows)
            .map(|r| {
                format!("({})", (0..width).map(|c| table.placeholder(r * width + c + 1)).collect::<Vec<_>>().join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let others: Vec<&String> = shape.insert_columns[table.key.len()..].iter().collect();
        let on_conflict = match table.dialect {
            Dialect::Mysql if others.is_empty() => {
                let first = table.quote(&table.key[0]);
                format!(" ON DUPLICATE KEY UPDATE {first} = {first}")
            }
            Dialect::Mysql => format!(
                " ON DUPLICATE KEY UPDATE {}",
                others.iter().map(|c| format!("{0} = VALUES({0})", table.quote(c))).collect::<Vec<_>>().join(", ")
            ),
            Dialect::Postgres | Dialect::Sqlite if others.is_empty() => {
                format!(" ON CONFLICT ({}) DO NOTHING", table.column_list(&table.key))
            }
            Dialect::Postgres | Dialect::Sqlite => format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                table.column_list(&table.key),
                others.iter().map(|c| format!("{0} = excluded.{0}", table.quote(c))).collect::<Vec<_>>().join(", ")
            ),
        };
        format!(
            "INSERT INTO {} ({}) VALUES {tuples}{on_conflict}",
            table.sql_name,
            table.column_list(&shape.insert_columns)
        )
    }

    /// `WHERE key IN (…)` for `rows` keys, whose values are the parameters.
    fn key_in(&self, rows: usize) -> String {
        let table = &self.table;
        let width = table.key.len();
        let tuple = |r: usize| {
            let params: Vec<String> = (0..width).map(|c| table.placeholder(r * width + c + 1)).collect();
            if width == 1 { params[0].clone() } else { format!("({})", params.join(", ")) }
        };
        let target =
            if width == 1 { table.quote(&table.key[0]) } else { format!("({})", table.column_list(&table.key)) };
        format!("WHERE {target} IN ({})", (0..rows).map(tuple).collect::<Vec<_>>().join(", "))
    }

    fn delete_sql(&self, rows: usize) -> String {
        format!("DELETE FROM {} {}", self.table.sql_name, self.key_in(rows))
    }

    /// Rejects the group if one of its updates names a row the table does not
    /// hold. An update comes from a diff plan that saw the row; if it is gone
    /// (deleted since, by hand or by another writer), upserting would bring
    /// back a row with only the synced columns, so it is reported instead, as
    /// the file destination does. The rows found are locked (`FOR UPDATE`)
    /// until the batch commits, so none can vanish between check and write.
    fn check_updates_exist(&self, operations: &[Operation], members: &[usize]) -> Result<(), Error> {
        let updates: Vec<&str> = members
            .iter()
            .filter_map(|&i| match &operations[i].action {
                Action::Update(update) => Some(update.row.key.as_str()),
                _ => None,
            })
            .collect();
        if updates.is_empty() {
            return Ok(());
        }
        let table = &self.table;
        let lock = if table.dialect == Dialect::Sqlite { "" } else { " FOR UPDATE" };
        let mut found = HashSet::with_capacity(updates.len());
        for chunk in updates.chunks((MAX_PARAMS / table.key.len()).max(1)) {
            let mut params = Vec::with_capacity(chunk.len() * table.key.len());
            for key in chunk {
                params.extend(key_values(key, table.key.len())?);
            }
            let sql = format!(
                "SELECT {} FROM {} {}{lock}",
                table.column_list(&table.key),
                table.sql_name,
                self.key_in(chunk.len())
            );
            for values in read_all(&table.connection, &sql, &params, self.config.page_size)? {
                found.insert(table.key_of(&values)?);
            }
        }
        match updates.iter().find(|key| !found.contains(**key)) {
            Some(key) => Err(Error::Rejected(format!(
                "row `{key}` is not in {}: an update needs the row it changes (was it deleted since the plan?)",
                self.config.table
            ))),
            None => Ok(()),
        }
    }

    fn row_of(operation: &Operation) -> Option<&Row> {
        match &operation.action {
            Action::Create(row) | Action::Upsert(row) => Some(row),
            Action::Update(update) => Some(&update.row),
            Action::Delete(_) => None,
        }
    }

    /// Runs the statements for operations `members` (all of one kind):
    /// upserts in `bulk` through the host's `bulk-upsert` (COPY on
    /// PostgreSQL), else as one multi-row statement.
    fn run(&self, shape: &Shape, operations: &[Operation], group: &Group, bulk: bool) -> Result<(), Error> {
        let connection = &self.table.connection;
        match group {
            Group::Upserts(members) if bulk => {
                self.check_updates_exist(operations, members)?;
                let mut rows = TableBuilder::with_capacity(shape.insert_columns.clone(), members.len());
                for &i in members {
                    let row = Self::row_of(&operations[i]).expect("an upsert group holds rows");
                    rows.push_row(&row.key, self.upsert_values(shape, row)?.iter().map(ValueRef::from));
                }
                connection.bulk_upsert(&self.table.sql_name, &self.table.key, &rows.finish())?;
            }
            Group::Upserts(members) => {
                self.check_updates_exist(operations, members)?;
                let mut params = Vec::with_capacity(members.len() * shape.insert_columns.len());
                for &i in members {
                    let row = Self::row_of(&operations[i]).expect("an upsert group holds rows");
                    params.extend(self.upsert_values(shape, row)?);
                }
                connection.execute(&self.upsert_sql(shape, members.len()), &params)?;
            }
            Group::Deletes(members) => {
                let mut params = Vec::with_capacity(members.len() * self.table.key.len());
                for &i in members {
                    let Action::Delete(key) = &operations[i].action else {
                        unreachable!("a delete group holds deletes")
                    };
                    params.extend(key_values(key, self.table.key.len())?);
                }
                connection.execute(&self.delete_sql(members.len()), &params)?;
            }
        }
        Ok(())
    }
}

impl sdk::Destination for SqlDestination {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        let (rows, next) = self.table.page(token.as_deref(), self.config.page_size)?;
        Ok(Page { rows, next })
    }

    fn apply(&mut self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        let connection = &self.table.connection;
        let operations = &batch.operations;
        let shape = self.shape(&batch.columns);
        let fence = sdk::host::run_fence();
        // Admits the batch under the run's lease, in its transaction.
        let admit = || match (&self.fences, &fence) {
            (Some(fences), Some(fence)) => fences.admit(connection, fence),
            _ => Ok(()),
        };
        // Fast path: every statement of the batch in one transaction.
        connection.begin()?;
        let fast = admit().and_then(|()| {
            self.groups(operations, shape.insert_columns.len())
                .iter()
                .try_for_each(|g| self.run(&shape, operations, g, true))
        });
        match fast {
            Ok(()) => {
                connection.commit()?;
                return Ok(operations.iter().map(|_| Ok(())).collect());
            }
            Err(Error::Rejected(reason)) => {
                sdk::log::debug(&format!(
                    "a batch statement was rejected ({reason}); applying one operation at a time"
                ));
                connection.rollback()?;
            }
            Err(other) => {
                // The batch failed as a whole; the rollback's own error would
                // only hide why.
                let _ = connection.rollback();
                return Err(other);
            }
        }
        // Slow path: one operation at a time, each in a savepoint, so that a
        // rejected row is rolled back alone.
        connection.begin()?;
        if let Err(refused) = admit() {
            let _ = connection.rollback();
            return Err(refused);
        }
        let mut outcomes = Vec::with_capacity(operations.len());
        for i in 0..operations.len() {
            let group = match operations[i].action {
                Action::Delete(_) => Group::Deletes(vec![i]),
                _ => Group::Upserts(vec![i]),
            };
            let attempt = connection
                .execute("SAVEPOINT synchost_op", &[])
                .and_then(|_| self.run(&shape, operations, &group, false));
            match attempt {
                Ok(()) => {
                    connection.execute("RELEASE SAVEPOINT synchost_op", &[])?;
                    outcomes.push(Ok(()));
                }
                Err(Error::Rejected(reason)) => {
                    connection.execute("ROLLBACK TO SAVEPOINT synchost_op", &[])?;
                    outcomes.push(Err(Error::Rejected(reason)));
                }
                Err(other) => {
                    let _ = connection.rollback();
                    return Err(other);
                }
            }
        }
        connection.commit()?;
        Ok(outcomes)
    }
}

sdk::export_destination!(SqlDestination);
