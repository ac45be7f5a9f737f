//! What the SQL source and destination plugins share: the table they work on
//! (connection, name, key columns, columns), SQL written for the connection's
//! dialect, the encoding of keys and paging tokens, and reading query rows.
//!
//! Keys: a table with one key column keys each row by that column's value as
//! text (`42`, `ada@example.com`); with several, by the JSON array of their
//! values (`[42,"eu"]`), which the destination can take apart again for a
//! delete. Snapshots are read in key order, a page at a time, resuming after
//! the last key of the page before (keyset paging: no long transaction, no
//! OFFSET that slows down as it goes).

use serde::Deserialize;
use synchost_plugin_sdk::sql::{Connection, Dialect};
use synchost_plugin_sdk::{self as sdk, Error, Value};

/// One column name, or several.
#[derive(Deserialize, Clone, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Names {
    /// One column.
    One(String),
    /// A list of columns (at least one), in key order.
    Several(Vec<String>),
}

impl Names {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Names::One(name) => vec![name.clone()],
            Names::Several(names) => names.clone(),
        }
    }
}

/// A table as a plugin's config names it, opened on its connection.
pub struct Table {
    pub connection: Connection,
    pub dialect: Dialect,
    /// The table's name as written in SQL (quoted, schema-qualified if given).
    pub sql_name: String,
    /// The key columns, in key order.
    pub key: Vec<String>,
    /// The columns to read: the configured ones, else every column of the
    /// table; key columns first if the config left them out.
    pub columns: Vec<String>,
}

impl Table {
    /// Opens `connection` and checks `table`: a missing table or column is a
    /// config error naming it (the database's own message says which).
    pub fn open(connection: &str, table: &str, key: &Names, columns: Option<&[String]>) -> Result<Table, Error> {
        let key = key.to_vec();
        if key.is_empty() || key.iter().any(String::is_empty) {
            return Err(Error::Config("`key` must name at least one column".into()));
        }
        let connection = Connection::open(connection)?;
        let dialect = connection.dialect();
        let sql_name = table.split('.').map(|part| quote(dialect, part)).collect::<Vec<_>>().join(".");
        let mut table = Table { connection, dialect, sql_name, key, columns: Vec::new() };
        let wanted: Vec<String> = match columns {
            Some(columns) => columns.to_vec(),
            None => {
                // Every column, as the database lists them.
                let rows = table.connection.query(&format!("SELECT * FROM {} WHERE 1 = 0", table.sql_name), &[])?;
                rows.columns()
            }
        };
        let mut all = table.key.clone();
        all.extend(wanted.into_iter().filter(|c| !table.key.contains(c)));
        table.columns = all;
        // Names every configured column, so a typo is reported here, once.
        table
            .connection
            .query(&format!("SELECT {} FROM {} WHERE 1 = 0", table.column_list(&table.columns), table.sql_name), &[])?;
        Ok(table)
    }

    pub fn quote(&self, name: &str) -> String {
        quote(self.dialect, name)
    }

    /// `"a", "b"`.
    pub fn column_list(&self, columns: &[String]) -> String {
        columns.iter().map(|c| self.quote(c)).collect::<Vec<_>>().join(", ")
    }

    /// The placeholder for parameter `n` (1-based).
    pub fn placeholder(&self, n: usize) -> String {
        placeholder(self.dialect, n)
    }

    /// A condition that holds for rows whose `columns` come after `values`
    /// in `ORDER BY columns`, with parameters numbered from `first`.
    pub fn after(&self, columns: &[String], first: usize) -> String {
        let param = |i: usize| self.placeholder(first + i);
        if columns.len() == 1 {
            return format!("{} > {}", self.quote(&columns[0]), param(0));
        }
        match self.dialect {
            // A row comparison, which PostgreSQL answers from the index.
            Dialect::Postgres => format!(
                "({}) > ({})",
                self.column_list(columns),
                (0..columns.len()).map(param).collect::<Vec<_>>().join(", ")
            ),
            // Spelled out, which MySQL and MariaDB turn into index ranges:
            // (a > ?) OR (a = ? AND b > ?) ... with each value bound again.
            Dialect::Mysql | Dialect::Sqlite => {
                let mut terms = Vec::new();
                for last in 0..columns.len() {
                    let mut parts: Vec<String> =
                        columns[..last].iter().map(|c| format!("{} = {}", self.quote(c), "?")).collect();
                    parts.push(format!("{} > ?", self.quote(&columns[last])));
                    terms.push(format!("({})", parts.join(" AND ")));
                }
                terms.join(" OR ")
            }
        }
    }

    /// The parameters for [`Table::after`]: MySQL and SQLite repeat them.
    pub fn after_params(&self, values: &[Value]) -> Vec<Value> {
        match self.dialect {
            Dialect::Postgres => values.to_vec(),
            Dialect::Mysql | Dialect::Sqlite => {
                if values.len() == 1 {
                    return values.to_vec();
                }
                (0..values.len()).flat_map(|last| values[..=last].iter().cloned()).collect()
            }
        }
    }

    /// One page of the table in key order, after the key in `token` (a token
    /// this made), as a table of `self.columns` keyed by the key columns, and
    /// the token for the next page if there may be one. The rows cross from
    /// the host laid out by column (`rows.next-table`), a few buffers per
    /// column instead of a value each.
    pub fn page(&self, token_text: Option<&str>, page_size: u32) -> Result<(sdk::Table, Option<String>), Error> {
        let (condition, params) = match token_text {
            None => (String::new(), Vec::new()),
            Some(text) => {
                let after = token_values(text, self.key.len(), "page token")?;
                (format!(" WHERE {}", self.after(&self.key, 1)), self.after_params(&after))
            }
        };
        let sql = format!(
            "SELECT {} FROM {}{condition} ORDER BY {} LIMIT {page_size}",
            self.column_list(&self.columns),
            self.sql_name,
            self.column_list(&self.key),
        );
        // `next-table` waits for up to `page_size` rows: the LIMIT's worth.
        let mut page = self.connection.query(&sql, &params)?.next_table(page_size)?;
        let mut last_key = Vec::new();
        for row in 0..page.len() {
            last_key = (0..self.key.len()).map(|i| page.values[i].value(row)).collect();
            page.key_data.push_str(&key_text(&self.key, &last_key.iter().collect::<Vec<_>>())?);
            page.key_ends[row] =
                u32::try_from(page.key_data.len()).map_err(|_| Error::Rejected("a page's keys exceed 4 GiB".into()))?;
        }
        let next =
            (page.len() as u32 == page_size && page_size > 0).then(|| token(&last_key.iter().collect::<Vec<_>>()));
        Ok((page, next))
    }

    /// The key of a row given as values of `self.columns`.
    pub fn key_of(&self, values: &[Value]) -> Result<String, Error> {
        let parts: Vec<&Value> = (0..self.key.len()).map(|i| &values[i]).collect();
        key_text(&self.key, &parts)
    }
}

/// The placeholder for parameter `n` (1-based) in `dialect`.
pub fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${n}"),
        Dialect::Mysql | Dialect::Sqlite => "?".to_string(),
    }
}

/// Quotes an identifier for `dialect`, doubling any quote inside it.
pub fn quote(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
        Dialect::Postgres | Dialect::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// A row's key from its key columns' values (see the module doc).
pub fn key_text(columns: &[String], values: &[&Value]) -> Result<String, Error> {
    if let Some((column, _)) = columns.iter().zip(values).find(|(_, v)| matches!(v, Value::Null)) {
        return Err(Error::Rejected(format!("key column `{column}` is null")));
    }
    Ok(match values {
        [one] => sdk::value_to_text(one),
        several => serde_json::Value::Array(several.iter().map(|v| sdk::value_to_json(v)).collect()).to_string(),
    })
}

/// The values of a key made by [`key_text`] for `columns` key columns.
pub fn key_values(key: &str, columns: usize) -> Result<Vec<Value>, Error> {
    if columns == 1 {
        return Ok(vec![Value::Text(key.to_string())]);
    }
    let parts: Vec<serde_json::Value> = serde_json::from_str(key)
        .map_err(|e| Error::Rejected(format!("key `{key}` is not a JSON array of {columns} key values: {e}")))?;
    if parts.len() != columns {
        return Err(Error::Rejected(format!("key `{key}` has {} values for {columns} key columns", parts.len())));
    }
    Ok(parts.into_iter().map(sdk::value_from_json).collect())
}

/// A paging token or cursor: the values to resume after, as JSON.
pub fn token(values: &[&Value]) -> String {
    serde_json::Value::Array(values.iter().map(|v| sdk::value_to_json(v)).collect()).to_string()
}

/// The values of a [`token`], checked to be `count` of them.
pub fn token_values(token: &str, count: usize, what: &str) -> Result<Vec<Value>, Error> {
    let parts: Vec<serde_json::Value> = serde_json::from_str(token)
        .map_err(|e| Error::Config(format!("{what} `{token}` is not one this plugin made: {e}")))?;
    if parts.len() != count {
        return Err(Error::Config(format!(
            "{what} `{token}` holds {} values, but {count} are needed (did the key or cursor columns change?)",
            parts.len()
        )));
    }
    Ok(parts.into_iter().map(sdk::value_from_json).collect())
}

/// Every row of a query, read `page` at a time.
pub fn read_all(connection: &Connection, sql: &str, params: &[Value], page: u32) -> Result<Vec<Vec<Value>>, Error> {
    let rows = connection.query(sql, params)?;
    let mut all = Vec::new();
    loop {
        let next = rows.next(page)?;
        if next.is_empty() {
            return Ok(all);
        }
        all.extend(next);
    }
}
