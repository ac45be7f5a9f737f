//! A source that reads a table of a PostgreSQL, MySQL/MariaDB or SQLite
//! database through the host's `sql` interface: snapshots in key order, a
//! page at a time, and events from a column whose value only ever grows
//! (a sequence, a version counter, an update timestamp) used as the cursor.
//!
//! Config (the plugin's `config` table; the tenant grants the connection with
//! `connections = ["NAME"]`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `connection` | required | the connection's name in the tenant file |
//! | `table` | required | e.g. `"customers"` or `"crm.customers"` |
//! | `key` | required | the key column, or a list of them (a primary or unique key) |
//! | `columns` | every column | the columns to read; key columns are added if left out |
//! | `cursor` | none | events: the ever-growing column; required for event syncs |
//! | `deleted` | none | a boolean column: rows where it is true are left out of snapshots and read as delete events |
//! | `page_size` | `5000` | rows per snapshot page and per database round trip |
//!
//! Events are every row whose cursor column is past the stored cursor, in
//! cursor order (ties broken by key), each as the row's full state. The
//! cursor column must grow with every change a sync should see, and rows must
//! not become visible with a value below one already read (a sequence
//! assigned at commit, or a timestamp with a safety lag, rather than a
//! value assigned early by a long transaction). A hard `DELETE` leaves no
//! row to read: mark rows with the `deleted` column instead, or use a diff sync.

use serde::Deserialize;
use sql_common::{Names, Table, read_all, token, token_values};
use synchost_plugin_sdk::{self as sdk, Change, Error, Event, EventBatch, Page, PluginInfo, Row, Value, ValueRef};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The connection's name in the tenant file; the plugin must be granted it
    /// with `connections = ["NAME"]`.
    connection: String,
    /// The table, e.g. "customers" or, with its schema, "crm.customers".
    table: String,
    /// The key column, or a list of them (a primary or unique key); with
    /// several, a row's key is the JSON array of their values.
    key: Names,
    /// The columns to read, key columns added if left out. Default: every
    /// column of the table.
    columns: Option<Vec<String>>,
    /// For event syncs (and required by them): a column whose value grows
    /// with every change; events are the rows past the stored cursor.
    cursor: Option<String>,
    /// A boolean column: rows where it is true are left out of snapshots and
    /// read as delete events.
    deleted: Option<String>,
    /// Rows per snapshot page and per database round trip.
    #[serde(default = "default_page_size")]
    #[schemars(range(min = 1))]
    page_size: u32,
}

fn default_page_size() -> u32 {
    5000
}

/// The config and the open table, kept for the instance's life: the host
/// calls one instance page after page.
struct SqlSource {
    config: Config,
    table: Table,
    /// How many of `table.columns` a row carries: the cursor and deleted
    /// columns are read for the plugin's own use when the config's `columns`
    /// leave them out, and are not synced.
    emitted: usize,
}

impl sdk::Plugin for SqlSource {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "sql-source",
            env!("CARGO_PKG_VERSION"),
            "Reads a PostgreSQL, MySQL/MariaDB or SQLite table: snapshots in key order, events by a cursor column",
        )
    }

    fn new(config: Config) -> Result<Self, Error> {
        if config.page_size == 0 {
            return Err(Error::Config("`page_size` must be at least 1".into()));
        }
        let mut columns = config.columns.clone();
        let mut extras = 0;
        // The cursor and deleted columns are read with the row, last.
        if let Some(columns) = &mut columns {
            let key = config.key.to_vec();
            for extra in config.cursor.iter().chain(&config.deleted) {
                if !columns.contains(extra) && !key.contains(extra) {
                    columns.push(extra.clone());
                    extras += 1;
                }
            }
        }
        let table = Table::open(&config.connection, &config.table, &config.key, columns.as_deref())?;
        let emitted = table.columns.len() - extras;
        Ok(SqlSource { config, table, emitted })
    }
}

/// Whether a `deleted` column's value marks its row deleted: true, or an
/// integer other than 0.
fn marks_deleted(value: ValueRef<'_>) -> bool {
    matches!(value, ValueRef::Boolean(true)) || matches!(value, ValueRef::Integer(n) if n != 0)
}

impl SqlSource {
    /// The index of `column` among the columns read.
    fn position(&self, column: &str) -> usize {
        self.table.columns.iter().position(|c| c == column).expect("added when the table was opened")
    }

    fn is_deleted(&self, values: &[Value]) -> bool {
        self.config.deleted.as_ref().is_some_and(|column| marks_deleted(ValueRef::from(&values[self.position(column)])))
    }
}

impl sdk::Source for SqlSource {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        let (mut rows, next) = self.table.page(token.as_deref(), self.config.page_size)?;
        if let Some(deleted) = &self.config.deleted {
            let column = &rows.values[self.position(deleted)];
            let kept: Vec<u32> =
                (0..rows.len() as u32).filter(|&row| !marks_deleted(column.get(row as usize))).collect();
            if kept.len() < rows.len() {
                rows = rows.select(&kept);
            }
        }
        // The columns read only to page or filter by are not the data set's.
        rows.columns.truncate(self.emitted);
        rows.values.truncate(self.emitted);
        Ok(Page { rows, next })
    }

    fn events(&mut self, cursor: Option<String>, max: u32) -> Result<EventBatch, Error> {
        // "[]" is the cursor of an empty table read from the start.
        let cursor = cursor.as_deref().filter(|c| *c != "[]");
        let table = &self.table;
        let Some(cursor_column) = &self.config.cursor else {
            return Err(Error::Config(format!(
                "plugin `sql-source` does not support `events` here: table `{}` has no `cursor` column configured, \
                 which event syncs need",
                self.config.table
            )));
        };
        // Cursor order, ties broken by key, so a page boundary never splits
        // or skips rows that share a cursor value.
        let mut order = vec![cursor_column.clone()];
        order.extend(table.key.iter().filter(|k| *k != cursor_column).cloned());
        let (condition, params) = match cursor {
            None => (String::new(), Vec::new()),
            Some(text) => {
                let after = token_values(text, order.len(), "cursor")?;
                (format!(" WHERE {}", table.after(&order, 1)), table.after_params(&after))
            }
        };
        let limit = max.max(1);
        let sql = format!(
            "SELECT {} FROM {}{condition} ORDER BY {} LIMIT {limit}",
            table.column_list(&table.columns),
            table.sql_name,
            table.column_list(&order),
        );
        let rows = read_all(&table.connection, &sql, &params, self.config.page_size)?;
        let positions: Vec<usize> = order.iter().map(|c| self.position(c)).collect();
        let next_cursor = match rows.last() {
            Some(last) => token(&positions.iter().map(|&i| &last[i]).collect::<Vec<_>>()),
            None => cursor.map(str::to_string).unwrap_or_else(|| "[]".to_string()),
        };
        let cursor_at = self.position(cursor_column);
        let mut events = Vec::with_capacity(rows.len());
        for mut values in rows {
            let key = table.key_of(&values)?;
            let position = sdk::value_to_text(&values[cursor_at]);
            let change = if self.is_deleted(&values) {
                Change::Delete(key)
            } else {
                values.truncate(self.emitted);
                Change::Upsert(Row { key, values })
            };
            events.push(Event { position, change });
        }
        Ok(EventBatch { columns: table.columns[..self.emitted].to_vec(), events, cursor: next_cursor })
    }
}

sdk::export_source!(SqlSource);
