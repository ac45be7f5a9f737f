//! Snapshot pages from a CSV or JSON-lines data set.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

use synchost_plugin_sdk::{self as sdk, Error, Page, Row, Value};

use crate::{Config, Format};

/// Reads up to `page_size` rows starting at byte `offset` (0: the start).
pub(crate) fn read_page(path: &str, format: Format, config: &Config, offset: u64) -> Result<Page, Error> {
    let file = File::open(path).map_err(|e| sdk::io_error(&format!("cannot open `{path}`"), e))?;
    match format {
        Format::Csv => csv_page(path, file, config, offset),
        Format::Jsonl => jsonl_page(path, file, config, offset),
    }
}

fn csv_page(path: &str, mut file: File, config: &Config, offset: u64) -> Result<Page, Error> {
    let bad = |e: csv::Error| Error::Config(format!("`{path}`: {e}"));
    // The header names the columns of every page; read it again each time so
    // that paging stays stateless.
    let mut header_reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&mut file);
    let mut header = csv::StringRecord::new();
    if !header_reader.read_record(&mut header).map_err(bad)? {
        return Ok(Page { columns: vec![], rows: vec![], next: None });
    }
    let header_end = header_reader.position().byte();
    drop(header_reader);
    let columns: Vec<String> = header.iter().map(|c| c.trim().to_string()).collect();

    let start = offset.max(header_end);
    file.seek(SeekFrom::Start(start)).map_err(|e| sdk::io_error(path, e))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(BufReader::new(file));
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    while rows.len() < config.page_size {
        if !reader.read_record(&mut record).map_err(bad)? {
            return Ok(Page { columns, rows, next: None });
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != columns.len() {
            return Err(Error::Config(format!(
                "`{path}`: record {line} after byte {start} has {} fields, the header has {}",
                record.len(),
                columns.len()
            )));
        }
        let values: Vec<Value> = record
            .iter()
            .map(|cell| if cell.is_empty() { Value::Null } else { Value::Text(cell.to_string()) })
            .collect();
        let key = config
            .key
            .key_of(|name| columns.iter().position(|c| c == name).map(|i| values[i].clone()))
            .map_err(|e| Error::Config(format!("`{path}`: record {line} after byte {start}: {e}")))?;
        rows.push(Row { key, values });
    }
    let next = start + reader.position().byte();
    Ok(Page { columns, rows, next: Some(next.to_string()) })
}

fn jsonl_page(path: &str, mut file: File, config: &Config, offset: u64) -> Result<Page, Error> {
    file.seek(SeekFrom::Start(offset)).map_err(|e| sdk::io_error(path, e))?;
    let mut reader = BufReader::new(file);
    let mut position = offset;
    let mut objects = Vec::new();
    let mut line = String::new();
    let mut at_end = false;
    while objects.len() < config.page_size {
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
        let object: BTreeMap<String, serde_json::Value> = serde_json::from_str(&line)
            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: not a JSON object: {e}")))?;
        let key = config
            .key
            .key_of(|name| object.get(name).cloned().map(sdk::value_from_json))
            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: {e}")))?;
        objects.push((key, object));
    }
    let (columns, rows) = to_rows(objects);
    Ok(Page { columns, rows, next: (!at_end).then(|| position.to_string()) })
}

/// Lays out JSON objects positionally: the columns are the union of their
/// fields; a field an object lacks is null.
pub(crate) fn to_rows(objects: Vec<(String, BTreeMap<String, serde_json::Value>)>) -> (Vec<String>, Vec<Row>) {
    let mut columns: Vec<String> = Vec::new();
    for (_, object) in &objects {
        for name in object.keys() {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    let rows = objects
        .into_iter()
        .map(|(key, mut object)| Row {
            key,
            values: columns.iter().map(|c| object.remove(c).map_or(Value::Null, sdk::value_from_json)).collect(),
        })
        .collect();
    (columns, rows)
}
