//! `connection.bulk-upsert` (WIT 0.2.2): many rows written by key at once,
//! the fastest way each database has. PostgreSQL loads them with `COPY …
//! FROM STDIN` into a temporary table and merges that into the target with
//! one `INSERT … SELECT … ON CONFLICT`; MySQL/MariaDB and SQLite take
//! multi-row `INSERT`s with their upsert clause, as many rows per statement
//! as their parameter limits allow.
//!
//! This module checks a request and writes its SQL and COPY data; the
//! sessions run them.

use std::fmt::Write as _;

use synchost_model::{Table, ValueRef};

use crate::plugin::types::{Error as WitError, Value};

/// Parameters one statement may carry on every supported database (SQLite's
/// default limit is 32,766; MySQL's 65,535).
const MAX_PARAMS: usize = 32_000;

/// A checked request: which table, which key, which columns.
pub(super) struct BulkUpsert<'a> {
    /// The table as SQL names it (the plugin's text, quoted as it needs).
    pub table: &'a str,
    pub key: &'a [String],
    pub rows: &'a Table,
}

/// How identifiers are quoted, and which upsert clause applies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    Postgres,
    Mysql,
    Sqlite,
}

impl<'a> BulkUpsert<'a> {
    /// The request, or a `config` error naming what is wrong with it.
    pub fn new(connection: &str, table: &'a str, key: &'a [String], rows: &'a Table) -> Result<Self, WitError> {
        let fail = |what: String| Err(WitError::Config(format!("connection `{connection}`: bulk-upsert: {what}")));
        if table.trim().is_empty() {
            return fail("no table named".into());
        }
        if key.is_empty() {
            return fail("no key column named".into());
        }
        if rows.columns.is_empty() {
            return fail("the rows have no columns".into());
        }
        for (i, column) in rows.columns.iter().enumerate() {
            if rows.columns[..i].contains(column) {
                return fail(format!("column `{column}` is named twice"));
            }
        }
        if let Some(missing) = key.iter().find(|k| !rows.columns.contains(k)) {
            return fail(format!("key column `{missing}` is not among the rows' columns"));
        }
        if let Err(problem) = rows.check() {
            return fail(format!("the rows are malformed: {problem}"));
        }
        Ok(BulkUpsert { table, key, rows })
    }

    fn quote(flavour: Flavour, name: &str) -> String {
        match flavour {
            Flavour::Mysql => format!("`{}`", name.replace('`', "``")),
            Flavour::Postgres | Flavour::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    fn column_list(&self, flavour: Flavour) -> String {
        self.rows.columns.iter().map(|c| Self::quote(flavour, c)).collect::<Vec<_>>().join(", ")
    }

    /// What follows the row values: the upsert clause of `flavour`, setting
    /// every column that is not part of the key.
    fn on_conflict(&self, flavour: Flavour) -> String {
        let others: Vec<String> =
            self.rows.columns.iter().filter(|c| !self.key.contains(c)).map(|c| Self::quote(flavour, c)).collect();
        match flavour {
            Flavour::Mysql if others.is_empty() => {
                let first = Self::quote(flavour, &self.key[0]);
                format!(" ON DUPLICATE KEY UPDATE {first} = {first}")
            }
            Flavour::Mysql => format!(
                " ON DUPLICATE KEY UPDATE {}",
                others.iter().map(|c| format!("{c} = VALUES({c})")).collect::<Vec<_>>().join(", ")
            ),
            Flavour::Postgres | Flavour::Sqlite => {
                let key = self.key.iter().map(|c| Self::quote(flavour, c)).collect::<Vec<_>>().join(", ");
                if others.is_empty() {
                    format!(" ON CONFLICT ({key}) DO NOTHING")
                } else {
                    let set = others.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ");
                    format!(" ON CONFLICT ({key}) DO UPDATE SET {set}")
                }
            }
        }
    }

    /// PostgreSQL: the statements around the COPY — make the staging table,
    /// the COPY itself, merge, and drop the staging table.
    pub fn postgres_statements(&self) -> [String; 4] {
        let columns = self.column_list(Flavour::Postgres);
        let stage = "pg_temp.synchost_bulk_upsert";
        [
            // Only the written columns, with their types and no constraints:
            // the target's constraints are checked when the rows reach it.
            format!("CREATE TEMP TABLE synchost_bulk_upsert AS SELECT {columns} FROM {} WITH NO DATA", self.table),
            format!("COPY {stage} ({columns}) FROM STDIN"),
            format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {stage}{}",
                self.table,
                self.on_conflict(Flavour::Postgres)
            ),
            format!("DROP TABLE {stage}"),
        ]
    }

    /// PostgreSQL: the rows in COPY's text format, one line each.
    pub fn copy_text(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.rows.payload_bytes() as usize + self.rows.len() * 8);
        for row in 0..self.rows.len() {
            for (i, column) in self.rows.values.iter().enumerate() {
                if i > 0 {
                    out.push('\t');
                }
                copy_value(&mut out, column.get(row));
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    /// MySQL/MariaDB and SQLite: multi-row upserts, each with its values as
    /// parameters, as many rows to a statement as the parameter limit allows.
    pub fn insert_statements(&self, flavour: Flavour) -> Vec<(String, Vec<Value>)> {
        let width = self.rows.columns.len();
        let per_statement = (MAX_PARAMS / width).max(1);
        let head = format!("INSERT INTO {} ({}) VALUES ", self.table, self.column_list(flavour));
        let tail = self.on_conflict(flavour);
        let tuple = format!("({})", vec!["?"; width].join(", "));
        let mut statements = Vec::new();
        let mut start = 0;
        while start < self.rows.len() {
            let end = (start + per_statement).min(self.rows.len());
            let mut sql = head.clone();
            let mut params = Vec::with_capacity((end - start) * width);
            for row in start..end {
                if row > start {
                    sql.push_str(", ");
                }
                sql.push_str(&tuple);
                params.extend(self.rows.values.iter().map(|column| column.get(row).to_value()));
            }
            sql.push_str(&tail);
            statements.push((sql, params));
            start = end;
        }
        statements
    }
}

/// One value in COPY's text format: `\N` for null; text escaped so that a
/// backslash, tab, newline or carriage return inside it reads back as itself;
/// bytes as `bytea`'s hex input; everything else as a parameter is sent.
fn copy_value(out: &mut String, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.push_str("\\N"),
        ValueRef::Boolean(b) => out.push_str(if b { "true" } else { "false" }),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Float(f) => out.push_str(&super::float_text(f)),
        ValueRef::Text(text) | ValueRef::Json(text) => {
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    other => out.push(other),
                }
            }
        }
        ValueRef::Bytes(bytes) => {
            // `\x…` is bytea's hex input; the backslash itself is escaped for COPY.
            out.push_str("\\\\x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchost_model::Row;

    fn rows() -> Table {
        Table::from_rows(
            vec!["id".into(), "name".into(), "photo".into()],
            &[
                Row { key: "1".into(), values: vec![Value::Integer(1), Value::Text("a\tb\\c\nd".into()), Value::Null] },
                Row { key: "2".into(), values: vec![Value::Integer(2), Value::Null, Value::Bytes(vec![0, 255])] },
            ],
        )
    }

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let rows = rows();
        let key = vec!["id".to_string()];
        let bulk = BulkUpsert::new("db", "people", &key, &rows).unwrap();
        assert_eq!(String::from_utf8(bulk.copy_text()).unwrap(), "1\ta\\tb\\\\c\\nd\t\\N\n2\t\\N\t\\\\x00ff\n");
    }

    #[test]
    fn statements_set_every_column_but_the_key_and_split_at_the_parameter_limit() {
        let rows = rows();
        let key = vec!["id".to_string()];
        let bulk = BulkUpsert::new("db", "`people`", &key, &rows).unwrap();
        let statements = bulk.insert_statements(Flavour::Mysql);
        assert_eq!(statements.len(), 1);
        assert_eq!(
            statements[0].0,
            "INSERT INTO `people` (`id`, `name`, `photo`) VALUES (?, ?, ?), (?, ?, ?) \
             ON DUPLICATE KEY UPDATE `name` = VALUES(`name`), `photo` = VALUES(`photo`)"
        );
        assert_eq!(statements[0].1.len(), 6);
        let [_, _, merge, _] = bulk.postgres_statements();
        assert!(merge.ends_with(
            "ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\", \"photo\" = excluded.\"photo\""
        ));

        let wide: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
        let many = Table::from_rows(
            wide.clone(),
            &(0..7).map(|i| Row { key: i.to_string(), values: vec![Value::Integer(i); 10_000] }).collect::<Vec<_>>(),
        );
        let key = vec!["c0".to_string()];
        let bulk = BulkUpsert::new("db", "t", &key, &many).unwrap();
        let statements = bulk.insert_statements(Flavour::Sqlite);
        assert_eq!(statements.iter().map(|(_, p)| p.len() / 10_000).collect::<Vec<_>>(), vec![3, 3, 1]);
    }

    #[test]
    fn a_request_without_its_key_columns_is_refused_naming_them() {
        let rows = rows();
        let key = vec!["email".to_string()];
        let Err(WitError::Config(message)) = BulkUpsert::new("db", "people", &key, &rows) else {
            panic!("accepted a key the rows lack")
        };
        assert!(message.contains("key column `email`"), "{message}");
    }
}
