//! Tables (rows laid out by column, see `types.wit`) on the host side:
//! checked once when a plugin returns one, then read by row and column in
//! place, so that the rows a diff finds unchanged are never copied out.
//!
//! The guest SDK has the same layout code for plugins (`plugins/sdk/src/table.rs`);
//! the two cannot share it, since each side's types come from its own bindings.

use super::types::{Column, Kind, Row, Table, Value};

/// A value borrowed from a table, or from a [`Value`].
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

impl ValueRef<'_> {
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

impl Column {
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

    /// Row `row`'s value. The column must have passed [`Table::check`].
    pub fn get(&self, row: usize) -> ValueRef<'_> {
        let bytes = self.bytes(row);
        let eight = || <[u8; 8]>::try_from(bytes).unwrap_or_default();
        // Checked text is UTF-8; checking again costs little on the rows
        // that are read at all (changes, archives), and needs no `unsafe`.
        let text = || std::str::from_utf8(bytes).unwrap_or_default();
        match self.kinds[row] {
            Kind::Null => ValueRef::Null,
            Kind::Boolean => ValueRef::Boolean(bytes == [1]),
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

impl Table {
    /// A table with these columns and no rows.
    pub fn empty(columns: Vec<String>) -> Table {
        TableBuilder::new(columns).finish()
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

    /// Row `row` as a [`Row`].
    pub fn row(&self, row: usize) -> Row {
        Row { key: self.key(row).to_string(), values: self.values.iter().map(|c| c.value(row)).collect() }
    }

    /// The table as rows.
    pub fn to_rows(&self) -> Vec<Row> {
        (0..self.len()).map(|row| self.row(row)).collect()
    }

    /// Lays rows out by column; each row has one value per column.
    pub fn from_rows(columns: Vec<String>, rows: &[Row]) -> Table {
        let mut builder = TableBuilder::new(columns);
        for row in rows {
            builder.push_row(&row.key, row.values.iter().map(ValueRef::from));
        }
        builder.finish()
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

/// Builds a table row by row.
pub struct TableBuilder {
    columns: Vec<String>,
    key_data: String,
    key_ends: Vec<u32>,
    values: Vec<Column>,
}

impl TableBuilder {
    pub fn new(columns: Vec<String>) -> TableBuilder {
        let values = columns.iter().map(|_| Column { kinds: vec![], ends: vec![], data: vec![] }).collect();
        TableBuilder { columns, key_data: String::new(), key_ends: Vec::new(), values }
    }

    /// How many rows were pushed.
    pub fn len(&self) -> usize {
        self.key_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.key_ends.is_empty()
    }

    /// Adds a row of one value per column.
    pub fn push_row<'a>(&mut self, key: &str, values: impl IntoIterator<Item = ValueRef<'a>>) {
        self.key_data.push_str(key);
        self.key_ends.push(offset(self.key_data.len()));
        let mut values = values.into_iter();
        for column in &mut self.values {
            let (kind, bytes): (Kind, &[u8]) = match values.next().unwrap_or(ValueRef::Null) {
                ValueRef::Null => (Kind::Null, &[]),
                ValueRef::Boolean(b) => (Kind::Boolean, if b { &[1] } else { &[0] }),
                ValueRef::Integer(i) => {
                    column.data.extend_from_slice(&i.to_le_bytes());
                    (Kind::Integer, &[])
                }
                ValueRef::Float(f) => {
                    column.data.extend_from_slice(&f.to_bits().to_le_bytes());
                    (Kind::Float, &[])
                }
                ValueRef::Text(s) => (Kind::Text, s.as_bytes()),
                ValueRef::Bytes(b) => (Kind::Bytes, b),
                ValueRef::Json(s) => (Kind::Json, s.as_bytes()),
            };
            column.data.extend_from_slice(bytes);
            column.kinds.push(kind);
            column.ends.push(offset(column.data.len()));
        }
    }

    pub fn finish(self) -> Table {
        Table { columns: self.columns, key_data: self.key_data, key_ends: self.key_ends, values: self.values }
    }
}

fn offset(len: usize) -> u32 {
    u32::try_from(len).expect("a table's buffers stay below 4 GiB (max_output caps them far lower)")
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
