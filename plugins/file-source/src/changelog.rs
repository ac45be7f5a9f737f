//! Events from an append-only JSON-lines changelog.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

use serde::Deserialize;
use synchost_plugin_sdk::{self as sdk, Change, Error, Event, EventBatch, Row, Value, ValueRef};

use crate::KeyFields;

/// One line of the changelog.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Entry {
    /// The full new state of a record; its key comes from the key fields unless given.
    Upsert {
        key: Option<String>,
        row: BTreeMap<String, serde_json::Value>,
    },
    Delete {
        key: String,
    },
}

/// An event read, before its row is laid out with the batch's columns.
enum Pending {
    Upsert(String, BTreeMap<String, serde_json::Value>),
    Delete(String),
}

/// Reads up to `max` events that start at or after byte `offset`.
///
/// A last line without its newline is still being written: it is left for the
/// next call, so the cursor never passes a half-written event.
pub(crate) fn read_events(path: &str, key_fields: &KeyFields, offset: u64, max: usize) -> Result<EventBatch, Error> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        // No changelog yet means no events yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(EventBatch { columns: vec![], events: vec![], cursor: offset.to_string() });
        }
        Err(e) => return Err(sdk::io_error(&format!("cannot open `{path}`"), e)),
    };
    file.seek(SeekFrom::Start(offset)).map_err(|e| sdk::io_error(path, e))?;
    let mut reader = BufReader::new(file);
    let mut position = offset;
    let mut bytes = Vec::new();
    // Upserts are gathered first so that their rows can share one column list.
    let mut pending: Vec<(String, Pending)> = Vec::new();
    while pending.len() < max {
        bytes.clear();
        let read = reader.read_until(b'\n', &mut bytes).map_err(|e| sdk::io_error(path, e))?;
        if read == 0 || bytes.last() != Some(&b'\n') {
            break;
        }
        let line_start = position;
        position += read as u64;
        // Bad bytes are the changelog's fault, like bad JSON: the pipeline
        // pauses at them (an operator must act), naming where they are.
        let line = std::str::from_utf8(&bytes).map_err(|e| {
            Error::Config(format!(
                "`{path}` at byte {}: not valid UTF-8: a changelog is JSON lines in UTF-8",
                line_start + e.valid_up_to() as u64
            ))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: not a changelog entry: {e}")))?;
        let at = line_start.to_string();
        match entry {
            Entry::Delete { key } => pending.push((at, Pending::Delete(key))),
            Entry::Upsert { key, row } => {
                let key = match key {
                    Some(key) => key,
                    None => {
                        let parts: Vec<Option<Value>> = key_fields
                            .names()
                            .iter()
                            .map(|name| row.get(name).cloned().map(sdk::value_from_json))
                            .collect();
                        let mut key = String::new();
                        key_fields
                            .write_key(&mut key, |i, _| parts[i].as_ref().map(ValueRef::from))
                            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: {e}")))?;
                        key
                    }
                };
                pending.push((at, Pending::Upsert(key, row)));
            }
        }
    }

    let upserts: Vec<_> = pending
        .iter()
        .filter_map(|(_, p)| match p {
            Pending::Upsert(key, row) => Some((key.clone(), row.clone())),
            Pending::Delete(_) => None,
        })
        .collect();
    let (columns, rows) = to_rows(upserts);
    let mut rows = rows.into_iter();
    let events = pending
        .into_iter()
        .map(|(position, entry)| Event {
            position,
            change: match entry {
                Pending::Upsert(..) => Change::Upsert(rows.next().expect("one row per upsert")),
                Pending::Delete(key) => Change::Delete(key),
            },
        })
        .collect();
    Ok(EventBatch { columns, events, cursor: position.to_string() })
}

/// Lays out JSON objects positionally: the columns are the union of their
/// fields; a field an object lacks is null.
fn to_rows(objects: Vec<(String, BTreeMap<String, serde_json::Value>)>) -> (Vec<String>, Vec<Row>) {
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
