//! Tables: rows laid out by column, as snapshot pages and transforms carry
//! them across the boundary (see `types.wit`).
//!
//! The host checks a table once when a plugin returns one ([`Table::check`]),
//! then reads it by row and column in place, so that the rows a diff finds
//! unchanged are never copied out. Plugins build tables with the builders.
//!
//! Build one row by row with [`TableBuilder`] (or column by column with
//! [`ColumnBuilder`]), read one with [`Table::key`] and [`Column::get`], and
//! convert to and from [`Row`]s where a plugin's logic is easier row by row.
//! Records given as named fields (JSON objects, see [`crate::json`]) are laid
//! out with [`TableBuilder::push_fields`]; [`Table::select`] and
//! [`Column::select`] keep some rows (a filter's), copying values undecoded.
//! A connector that appends its values straight into the builders never
//! allocates a string per value, which is where the speed of a large sync
//! comes from.

use std::borrow::Cow;
use std::fmt;

use crate::types::{Column, Kind, Page, Row, Table, Value};

/// Where row `row`'s bytes lie, given the ends of every row.
fn span(ends: &[u32], row: usize) -> std::ops::Range<usize> {
    let start = if row == 0 { 0 } else { ends[row - 1] as usize };
    start..ends[row] as usize
}

/// Checks that `ends` cut a buffer of `len` bytes into `rows` consecutive pieces.
fn check_ends(ends: &[u32], rows: usize, len: usize, what: &str) -> Result<(), String> {
    if ends.len() != rows {
        return Err(format!("{what} has {} entries for {rows} rows", ends.len()));
    }
    if let Some(i) = ends.windows(2).position(|w| w[0] > w[1]) {
        return Err(format!("{what} goes backwards at row {}", i + 1));
    }
    let last = ends.last().map_or(0, |&e| e as usize);
    if last != len {
        return Err(format!("{what} ends at byte {last} but the data holds {len} bytes"));
    }
    Ok(())
}

/// Whether every end falls on a character boundary of valid UTF-8 `data`.
fn on_char_boundaries(data: &[u8], ends: &[u32]) -> bool {
    // A UTF-8 continuation byte (0b10xx_xxxx) never starts a character.
    ends.iter().all(|&e| data.get(e as usize).is_none_or(|b| (b & 0xC0) != 0x80))
}

/// A value borrowed from a table (or from a [`Value`] or a [`crate::JsonValue`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Json(&'a str),
}

impl<'a> ValueRef<'a> {
    /// The value, owned.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Boolean(b) => Value::Boolean(b),
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Text(s) => Value::Text(s.to_string()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::Json(s) => Value::Json(s.to_string()),
        }
    }

    /// The value as plain text, as a template or a key shows it (see the
    /// [`fmt::Display`] impl): borrowed for text and JSON, which need no
    /// rendering.
    pub fn to_text(self) -> Cow<'a, str> {
        match self {
            ValueRef::Text(s) | ValueRef::Json(s) => Cow::Borrowed(s),
            other => Cow::Owned(other.to_string()),
        }
    }
}

/// The value as plain text, as a template or a key shows it: null as nothing,
/// text and JSON as they are, bytes in hex. Written straight into the output
/// (`write!(out, "{value}")`), it needs no string of its own.
impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Null => Ok(()),
            ValueRef::Boolean(b) => fmt::Display::fmt(b, f),
            ValueRef::Integer(i) => fmt::Display::fmt(i, f),
            ValueRef::Float(x) => fmt::Display::fmt(x, f),
            ValueRef::Text(s) | ValueRef::Json(s) => f.write_str(s),
            ValueRef::Bytes(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> ValueRef<'a> {
        match value {
            Value::Null => ValueRef::Null,
            Value::Boolean(b) => ValueRef::Boolean(*b),
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Text(s) => ValueRef::Text(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::Json(s) => ValueRef::Json(s),
        }
    }
}

impl Column {
    /// A column of `rows` rows that all hold `value`.
    pub fn repeat(value: ValueRef<'_>, rows: usize) -> Column {
        let mut column = ColumnBuilder::with_capacity(rows);
        for _ in 0..rows {
            column.push(value);
        }
        column.finish()
    }

    /// How many values (rows) the column holds.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Row `row`'s bytes as the column holds them (see `types.wit`).
    pub fn bytes(&self, row: usize) -> &[u8] {
        &self.data[span(&self.ends, row)]
    }

    /// Row `row`'s value. The column must have passed [`Table::check`]
    /// (the host checks every table a plugin sends, and sends only checked
    /// ones); panics past the end.
    pub fn get(&self, row: usize) -> ValueRef<'_> {
        let bytes = self.bytes(row);
        let eight = || <[u8; 8]>::try_from(bytes).unwrap_or_default();
        // Checked text is UTF-8; checking again costs little on the rows
        // that are read at all, and needs no `unsafe`.
        let text = || std::str::from_utf8(bytes).unwrap_or_default();
        match self.kinds[row] {
            Kind::Null => ValueRef::Null,
            Kind::Boolean => ValueRef::Boolean(bytes.first() == Some(&1)),
            Kind::Integer => ValueRef::Integer(i64::from_le_bytes(eight())),
            Kind::Float => ValueRef::Float(f64::from_bits(u64::from_le_bytes(eight()))),
            Kind::Text => ValueRef::Text(text()),
            Kind::Bytes => ValueRef::Bytes(bytes),
            Kind::Json => ValueRef::Json(text()),
        }
    }

    /// Row `row`'s value, owned.
    pub fn value(&self, row: usize) -> Value {
        self.get(row).to_value()
    }

    /// The values, in row order.
    pub fn iter(&self) -> impl Iterator<Item = ValueRef<'_>> {
        (0..self.len()).map(|row| self.get(row))
    }

    /// The values of rows `rows`, in that order: each value's bytes are
    /// copied as they are, without decoding it.
    pub fn select(&self, rows: &[u32]) -> Column {
        let mut column = ColumnBuilder::with_capacity(rows.len());
        for &row in rows {
            column.data.extend_from_slice(self.bytes(row as usize));
            column.end(self.kinds[row as usize]);
        }
        column.finish()
    }

    fn check(&self, rows: usize) -> Result<(), String> {
        if self.kinds.len() != rows {
            return Err(format!("{} kinds for {rows} rows", self.kinds.len()));
        }
        check_ends(&self.ends, rows, self.data.len(), "`ends`")?;
        // Text only, the usual case: one pass over the whole buffer.
        if self.kinds.iter().all(|k| *k == Kind::Text)
            && std::str::from_utf8(&self.data).is_ok()
            && on_char_boundaries(&self.data, &self.ends)
        {
            return Ok(());
        }
        for (row, kind) in self.kinds.iter().enumerate() {
            let bytes = self.bytes(row);
            let (fits, name) = match kind {
                Kind::Null => (bytes.is_empty(), "null"),
                Kind::Boolean => (bytes == [0] || bytes == [1], "boolean"),
                Kind::Integer => (bytes.len() == 8, "integer"),
                Kind::Float => (bytes.len() == 8, "float"),
                Kind::Text => (std::str::from_utf8(bytes).is_ok(), "text"),
                Kind::Json => (std::str::from_utf8(bytes).is_ok(), "json"),
                Kind::Bytes => (true, "bytes"),
            };
            if !fits {
                return Err(format!("row {row}: {} bytes are not a valid {name} value", bytes.len()));
            }
        }
        Ok(())
    }
}

/// Appends values to one column.
#[derive(Default)]
pub struct ColumnBuilder {
    kinds: Vec<Kind>,
    ends: Vec<u32>,
    data: Vec<u8>,
    /// Reused by [`Self::push_text_with`].
    scratch: String,
}

impl ColumnBuilder {
    /// A builder with room for `rows` values (their bytes still grow as needed).
    pub fn with_capacity(rows: usize) -> ColumnBuilder {
        ColumnBuilder { kinds: Vec::with_capacity(rows), ends: Vec::with_capacity(rows), ..ColumnBuilder::default() }
    }

    fn end(&mut self, kind: Kind) {
        self.kinds.push(kind);
        self.ends.push(u32::try_from(self.data.len()).expect("a column holds less than 4 GiB"));
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        self.end(Kind::Null);
    }

    /// Appends a text value.
    pub fn push_text(&mut self, text: &str) {
        self.data.extend_from_slice(text.as_bytes());
        self.end(Kind::Text);
    }

    /// Appends text written by `write` (a template rendering into the column, say).
    pub fn push_text_with(&mut self, write: impl FnOnce(&mut String)) {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        write(&mut text);
        self.data.extend_from_slice(text.as_bytes());
        self.scratch = text;
        self.end(Kind::Text);
    }

    /// Appends a value of any kind.
    pub fn push(&mut self, value: ValueRef<'_>) {
        let kind = match value {
            ValueRef::Null => Kind::Null,
            ValueRef::Boolean(b) => {
                self.data.push(b as u8);
                Kind::Boolean
            }
            ValueRef::Integer(i) => {
                self.data.extend_from_slice(&i.to_le_bytes());
                Kind::Integer
            }
            ValueRef::Float(f) => {
                self.data.extend_from_slice(&f.to_bits().to_le_bytes());
                Kind::Float
            }
            ValueRef::Text(s) => {
                self.data.extend_from_slice(s.as_bytes());
                Kind::Text
            }
            ValueRef::Bytes(b) => {
                self.data.extend_from_slice(b);
                Kind::Bytes
            }
            ValueRef::Json(s) => {
                self.data.extend_from_slice(s.as_bytes());
                Kind::Json
            }
        };
        self.end(kind);
    }

    /// How many values were pushed.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The column built.
    pub fn finish(self) -> Column {
        Column { kinds: self.kinds, ends: self.ends, data: self.data }
    }
}

impl Table {
    /// A table with these columns and no rows.
    pub fn empty(columns: Vec<String>) -> Table {
        let values = columns.iter().map(|_| ColumnBuilder::default().finish()).collect();
        Table { columns, key_data: String::new(), key_ends: Vec::new(), values }
    }

    /// How many rows the table holds.
    pub fn len(&self) -> usize {
        self.key_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.key_ends.is_empty()
    }

    /// Row `row`'s key. The table must have passed [`Table::check`].
    pub fn key(&self, row: usize) -> &str {
        self.key_data.get(span(&self.key_ends, row)).unwrap_or_default()
    }

    /// The position of the column named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Row `row` as a [`Row`].
    pub fn row(&self, row: usize) -> Row {
        Row { key: self.key(row).to_string(), values: self.values.iter().map(|c| c.get(row).to_value()).collect() }
    }

    /// Lays rows out by column; each row has one value per column.
    pub fn from_rows(columns: Vec<String>, rows: &[Row]) -> Table {
        let mut builder = TableBuilder::with_capacity(columns, rows.len());
        for row in rows {
            builder.push_row(&row.key, row.values.iter().map(ValueRef::from));
        }
        builder.finish()
    }

    /// The table as rows.
    pub fn to_rows(&self) -> Vec<Row> {
        (0..self.len()).map(|row| self.row(row)).collect()
    }

    /// The rows `rows` (indices, in the order given), with their keys and
    /// every column; values are copied without being decoded.
    pub fn select(&self, rows: &[u32]) -> Table {
        let mut key_data = String::new();
        let mut key_ends = Vec::with_capacity(rows.len());
        for &row in rows {
            key_data.push_str(self.key(row as usize));
            key_ends.push(u32::try_from(key_data.len()).expect("keys hold less than 4 GiB"));
        }
        Table {
            columns: self.columns.clone(),
            key_data,
            key_ends,
            values: self.values.iter().map(|column| column.select(rows)).collect(),
        }
    }

    /// Appends a column, which holds one value per row.
    pub fn push_column(&mut self, name: String, column: Column) {
        assert_eq!(column.len(), self.len(), "column `{name}` needs one value per row");
        self.columns.push(name);
        self.values.push(column);
    }

    /// The bytes of keys and values, as `max_output` counts them (one byte
    /// for a null or a boolean, eight for a number, the text or bytes else).
    pub fn payload_bytes(&self) -> u64 {
        let values: usize =
            self.values.iter().map(|c| c.data.len() + c.kinds.iter().filter(|k| **k == Kind::Null).count()).sum();
        (self.key_data.len() + values) as u64
    }

    /// Where each column is, by name: for looking up many columns at once
    /// in time linear in the table's width.
    pub fn column_positions(&self) -> std::collections::HashMap<&str, usize> {
        self.columns.iter().enumerate().map(|(i, name)| (name.as_str(), i)).collect()
    }

    /// Checks the layout: one column per name, names unique, every column one
    /// value per row, every value well formed (see `types.wit`).
    pub fn check(&self) -> Result<(), String> {
        if self.values.len() != self.columns.len() {
            return Err(format!("{} columns named but {} given", self.columns.len(), self.values.len()));
        }
        // A set, not a scan of the names before each: the check must stay
        // linear in the columns however many a plugin sends.
        let mut names = std::collections::HashSet::with_capacity(self.columns.len());
        if let Some(name) = self.columns.iter().find(|name| !names.insert(name.as_str())) {
            return Err(format!("column `{name}` appears twice"));
        }
        let rows = self.len();
        check_ends(&self.key_ends, rows, self.key_data.len(), "`key-ends`")?;
        if !on_char_boundaries(self.key_data.as_bytes(), &self.key_ends) {
            return Err("`key-ends` cuts a key inside a character".into());
        }
        for (name, column) in self.columns.iter().zip(&self.values) {
            column.check(rows).map_err(|e| format!("column `{name}`: {e}"))?;
        }
        Ok(())
    }
}

impl Page {
    /// A page of `rows` with these columns; `next` is the token for the page after it.
    pub fn from_rows(columns: Vec<String>, rows: &[Row], next: Option<String>) -> Page {
        Page { rows: Table::from_rows(columns, rows), next }
    }
}

/// Builds a table row by row.
pub struct TableBuilder {
    columns: Vec<String>,
    key_data: String,
    key_ends: Vec<u32>,
    values: Vec<ColumnBuilder>,
}

impl TableBuilder {
    /// A builder for a table with these columns (more may be added).
    pub fn new(columns: Vec<String>) -> TableBuilder {
        TableBuilder::with_capacity(columns, 0)
    }

    /// A builder with room for `rows` rows.
    pub fn with_capacity(columns: Vec<String>, rows: usize) -> TableBuilder {
        let values = columns.iter().map(|_| ColumnBuilder::with_capacity(rows)).collect();
        TableBuilder { columns, key_data: String::new(), key_ends: Vec::with_capacity(rows), values }
    }

    /// How many rows were pushed.
    pub fn len(&self) -> usize {
        self.key_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.key_ends.is_empty()
    }

    /// Starts a row: push its key, then one value to each column with
    /// [`Self::column`].
    pub fn push_key(&mut self, key: &str) {
        self.key_data.push_str(key);
        self.key_ends.push(u32::try_from(self.key_data.len()).expect("keys hold less than 4 GiB"));
    }

    /// The builder of column `index`.
    pub fn column(&mut self, index: usize) -> &mut ColumnBuilder {
        &mut self.values[index]
    }

    /// Adds a row of one value per column (missing values are null, extra ones dropped).
    pub fn push_row<'a>(&mut self, key: &str, values: impl IntoIterator<Item = ValueRef<'a>>) {
        self.push_key(key);
        let mut values = values.into_iter();
        for column in &mut self.values {
            column.push(values.next().unwrap_or(ValueRef::Null));
        }
    }

    /// Adds a row given as named fields, as a JSON object has them: a field
    /// with no column yet adds one (null in the rows before), a column the row
    /// lacks gets null, and of a name given twice the last value counts.
    pub fn push_fields<'v, N, V>(&mut self, key: &str, fields: &'v [(N, V)])
    where
        N: AsRef<str>,
        &'v V: Into<ValueRef<'v>>,
    {
        // The records of one data set mostly list the same fields in the same
        // order: then each value goes straight to its column, with no lookup
        // by name.
        if fields.len() == self.columns.len()
            && fields.iter().zip(&self.columns).all(|((name, _), column)| name.as_ref() == column)
        {
            self.push_row(key, fields.iter().map(|(_, value)| value.into()));
            return;
        }
        let mut values: Vec<Option<&V>> = vec![None; self.columns.len()];
        for (name, value) in fields {
            let name = name.as_ref();
            match self.columns.iter().position(|column| column == name) {
                Some(i) => values[i] = Some(value),
                None => {
                    self.add_column(name.to_string());
                    values.push(Some(value));
                }
            }
        }
        self.push_row(key, values.into_iter().map(|value| value.map_or(ValueRef::Null, Into::into)));
    }

    /// Adds a column (for rows to come; the rows so far get null in it).
    pub fn add_column(&mut self, name: String) -> usize {
        let mut column = ColumnBuilder::with_capacity(self.key_ends.capacity());
        for _ in 0..self.len() {
            column.push_null();
        }
        self.columns.push(name);
        self.values.push(column);
        self.values.len() - 1
    }

    /// The column names so far.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The table built.
    pub fn finish(self) -> Table {
        debug_assert!(self.values.iter().all(|c| c.len() == self.key_ends.len()), "one value per row in every column");
        Table {
            columns: self.columns,
            key_data: self.key_data,
            key_ends: self.key_ends,
            values: self.values.into_iter().map(ColumnBuilder::finish).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<String>, Vec<Row>) {
        let columns = vec!["a".to_string(), "b".to_string()];
        let rows = vec![
            Row { key: "k1".into(), values: vec![Value::Text("héllo".into()), Value::Null] },
            Row { key: "".into(), values: vec![Value::Integer(-7), Value::Float(1.5)] },
            Row { key: "ключ".into(), values: vec![Value::Boolean(true), Value::Bytes(vec![0, 255])] },
            Row { key: "k4".into(), values: vec![Value::Json("[1]".into()), Value::Text(String::new())] },
        ];
        (columns, rows)
    }

    #[test]
    fn rows_survive_the_table_layout_unchanged() {
        let (columns, rows) = sample();
        let table = Table::from_rows(columns, &rows);
        assert_eq!(table.check(), Ok(()));
        assert_eq!(table.len(), 4);
        assert_eq!(table.key(2), "ключ");
        assert_eq!(table.to_rows(), rows);
        assert_eq!(table.values[1].get(1), ValueRef::Float(1.5));
    }

    #[test]
    fn malformed_tables_are_refused_with_the_reason() {
        let (columns, rows) = sample();
        let good = Table::from_rows(columns, &rows);
        let broken = |f: fn(&mut Table)| {
            let mut table = good.clone();
            f(&mut table);
            table.check().unwrap_err()
        };
        assert!(broken(|t| t.values.pop().map(drop).unwrap_or(())).contains("2 columns named but 1 given"));
        assert!(broken(|t| t.columns[1] = "a".into()).contains("column `a` appears twice"));
        assert!(broken(|t| t.key_ends[0] = 9).contains("`key-ends` goes backwards"));
        assert!(broken(|t| t.key_ends[2] = 3).contains("inside a character"));
        assert!(broken(|t| t.values[0].kinds.pop().map(drop).unwrap_or(())).contains("column `a`: 3 kinds for 4 rows"));
        assert!(broken(|t| *t.values[0].ends.last_mut().unwrap() += 1).contains("column `a`: `ends` ends at byte"));
        assert!(broken(|t| t.values[0].data[1] = 0xFF).contains("row 0"));
        assert!(broken(|t| t.values[1].kinds[1] = Kind::Boolean).contains("row 1: 8 bytes are not a valid boolean"));
        // Text only: the fast path must still catch a cut inside a character.
        let text = Table::from_rows(
            vec!["t".into()],
            &[
                Row { key: "1".into(), values: vec![Value::Text("é".into())] },
                Row { key: "2".into(), values: vec![Value::Text("x".into())] },
            ],
        );
        let mut cut = text.clone();
        cut.values[0].ends[0] = 1;
        assert!(cut.check().is_err());
        assert_eq!(text.check(), Ok(()));
    }
}
