//! Snapshot pages from a CSV or JSON-lines data set.
//!
//! A page is laid out by column as it is read: each cell goes straight into
//! its column's buffer, with no string or row of its own (see
//! [`sdk::table`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

use synchost_plugin_sdk::{self as sdk, Error, JsonFields, Page, Table, TableBuilder, ValueRef};

use crate::{Config, Format};

/// Reads up to `page_size` rows starting at byte `offset` (0: the start).
pub(crate) fn read_page(path: &str, format: Format, config: &Config, offset: u64) -> Result<Page, Error> {
    let file = File::open(path).map_err(|e| sdk::io_error(&format!("cannot open `{path}`"), e))?;
    match format {
        Format::Csv => csv_page(path, file, config, offset),
        Format::Jsonl => jsonl_page(path, file, config, offset),
    }
}

/// A CSV cell's value: an empty cell is null.
fn cell(text: &str) -> ValueRef<'_> {
    if text.is_empty() { ValueRef::Null } else { ValueRef::Text(text) }
}

fn csv_page(path: &str, mut file: File, config: &Config, offset: u64) -> Result<Page, Error> {
    let bad = |e: csv::Error| Error::Config(format!("`{path}`: {e}"));
    // The header names the columns of every page; read it again each time so
    // that paging stays stateless.
    let mut header_reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&mut file);
    let mut header = csv::StringRecord::new();
    if !header_reader.read_record(&mut header).map_err(bad)? {
        return Ok(Page { rows: Table::empty(Vec::new()), next: None });
    }
    let header_end = header_reader.position().byte();
    drop(header_reader);
    let columns: Vec<String> = header.iter().map(|c| c.trim().to_string()).collect();
    // Where each key field is among the columns (`None`: the header lacks it,
    // which the first record reports).
    let key_at: Vec<Option<usize>> =
        config.key.names().iter().map(|name| columns.iter().position(|c| c == name)).collect();
    let width = columns.len();

    let start = offset.max(header_end);
    file.seek(SeekFrom::Start(start)).map_err(|e| sdk::io_error(path, e))?;
    // The page's reader counts from the page: errors name the place in the
    // file, by byte and line, as a person opening it would look for it.
    let place = |byte_in_page: u64| {
        let byte = start + byte_in_page;
        match line_at(path, byte) {
            Some(line) => format!("line {line} (byte {byte})"),
            None => format!("byte {byte}"),
        }
    };
    let bad = |e: csv::Error| match e.position() {
        Some(p) => Error::Config(format!("`{path}` at {}: {}", place(p.byte()), csv_error_kind(&e))),
        None => bad(e),
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(BufReader::new(file));
    let mut table = TableBuilder::new(columns);
    let mut record = csv::StringRecord::new();
    let mut key = String::new();
    while table.len() < config.page_size {
        if !reader.read_record(&mut record).map_err(bad)? {
            return Ok(Page { rows: table.finish(), next: None });
        }
        let at = || place(record.position().map_or(0, |p| p.byte()));
        if record.len() != width {
            return Err(Error::Config(format!(
                "`{path}` at {}: the record has {} fields, the header has {width}",
                at(),
                record.len(),
            )));
        }
        config
            .key
            .write_key(&mut key, |i, _| key_at[i].map(|at| cell(&record[at])))
            .map_err(|e| Error::Config(format!("`{path}` at {}: {e}", at())))?;
        table.push_key(&key);
        for (i, text) in record.iter().enumerate() {
            table.column(i).push(cell(text));
        }
    }
    let next = start + reader.position().byte();
    Ok(Page { rows: table.finish(), next: Some(next.to_string()) })
}

/// The 1-based line of the file at `path` that byte `byte` is on; read only
/// when an error needs it.
fn line_at(path: &str, byte: u64) -> Option<u64> {
    use std::io::Read;
    let mut prefix = File::open(path).ok()?.take(byte);
    let mut newlines = 0u64;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match prefix.read(&mut buffer).ok()? {
            0 => return Some(newlines + 1),
            n => newlines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64,
        }
    }
}

/// What went wrong in a CSV record, without the reader's page-relative place.
fn csv_error_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 (field {})", err.field() + 1),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("the record has {len} fields, the one before it {expected_len}")
        }
        _ => e.to_string(),
    }
}

fn jsonl_page(path: &str, mut file: File, config: &Config, offset: u64) -> Result<Page, Error> {
    file.seek(SeekFrom::Start(offset)).map_err(|e| sdk::io_error(path, e))?;
    let mut reader = BufReader::new(file);
    let mut position = offset;
    let mut table = TableBuilder::new(Vec::new());
    let mut line = String::new();
    let mut key = String::new();
    let mut at_end = false;
    while table.len() < config.page_size {
        line.clear();
        let read = reader.read_line(&mut line).map_err(|e| sdk::io_error(path, e))?;
        if read == 0 {
            at_end = true;
            break;
        }
        let line_start = position;
        position += read as u64;
        if line.trim().is_empty() {
            continue;
        }
        let mut object: JsonFields = serde_json::from_str(&line)
            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: not a JSON object: {e}")))?;
        // Fields in name order, as a JSON map holds them: the columns are
        // their union in the order first seen. (The sort is stable, so of a
        // name given twice the last value still counts.)
        object.0.sort_by(|(a, _), (b, _)| a.cmp(b));
        config
            .key
            .write_key(&mut key, |_, name| object.get(name).map(ValueRef::from))
            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: {e}")))?;
        table.push_fields(&key, &object.0);
    }
    Ok(Page { rows: table.finish(), next: (!at_end).then(|| position.to_string()) })
}
