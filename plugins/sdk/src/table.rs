//! Tables: rows laid out by column, as snapshot pages and transforms carry
//! them across the boundary (see `types.wit`).
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

    fn bytes(&self, row: usize) -> &[u8] {
        let start = if row == 0 { 0 } else { self.ends[row - 1] as usize };
        &self.data[start..self.ends[row] as usize]
    }

    /// Row `row`'s value. Panics past the end; the host sends only tables it checked.
    pub fn get(&self, row: usize) -> ValueRef<'_> {
        let bytes = self.bytes(row);
        let eight = || <[u8; 8]>::try_from(bytes).unwrap_or_default();
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

    /// Row `row`'s key.
    pub fn key(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.key_ends[row - 1] as usize };
        &self.key_data[start..self.key_ends[row] as usize]
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
