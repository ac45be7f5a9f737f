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
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(BufReader::new(file));
    let mut table = TableBuilder::new(columns);
    let mut record = csv::StringRecord::new();
    let mut key = String::new();
    while table.len() < config.page_size {
        if !reader.read_record(&mut record).map_err(bad)? {
            return Ok(Page { rows: table.finish(), next: None });
        }
        if record.len() != width {
            let line = record.position().map_or(0, |p| p.line());
            return Err(Error::Config(format!(
                "`{path}`: record {line} after byte {start} has {} fields, the header has {width}",
                record.len(),
            )));
        }
        config.key.write_key(&mut key, |i, _| key_at[i].map(|at| cell(&record[at]))).map_err(|e| {
            let line = record.position().map_or(0, |p| p.line());
            Error::Config(format!("`{path}`: record {line} after byte {start}: {e}"))
        })?;
        table.push_key(&key);
        for (i, text) in record.iter().enumerate() {
            table.column(i).push(cell(text));
        }
    }
    let next = start + reader.position().byte();
    Ok(Page { rows: table.finish(), next: Some(next.to_string()) })
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
