//! The on-disk layout: a `layout.json` that fixes the shard count, and the shard
//! files themselves.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};
use synchost_plugin_sdk::{self as sdk, Action, Error, OperationBatch, Page, Row, Value};

use crate::Config;

const LAYOUT_FILE: &str = "layout.json";

#[derive(Serialize, Deserialize)]
struct Layout {
    shards: u32,
}

/// One line of a shard file.
#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    fields: serde_json::Map<String, serde_json::Value>,
    /// The idempotency key of the last operation applied to this record: the
    /// same operation delivered again is recognised and not applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_op: Option<String>,
}

pub(crate) struct DataSet {
    dir: String,
    shards: u32,
}

impl DataSet {
    /// Opens an existing data set; a directory without one reads as empty.
    pub(crate) fn open(config: &Config) -> Result<DataSet, Error> {
        let layout_path = format!("{}/{LAYOUT_FILE}", config.dir);
        let shards = match fs::read_to_string(&layout_path) {
            Ok(text) => {
                let layout: Layout = serde_json::from_str(&text)
                    .map_err(|e| Error::Config(format!("`{layout_path}` is damaged: {e}")))?;
                layout.shards
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::metadata(&config.dir).map_err(|e| sdk::io_error(&format!("cannot open `{}`", config.dir), e))?;
                0
            }
            Err(e) => return Err(sdk::io_error(&format!("cannot read `{layout_path}`"), e)),
        };
        Ok(DataSet { dir: config.dir.clone(), shards })
    }

    pub(crate) fn open_or_create(config: &Config) -> Result<DataSet, Error> {
        let mut data_set = DataSet::open(config)?;
        if data_set.shards == 0 {
            if config.shards == 0 {
                return Err(Error::Config("`shards` must be at least 1".into()));
            }
            let layout = serde_json::to_string(&Layout { shards: config.shards }).expect("layout serialises");
            write_atomically(&format!("{}/{LAYOUT_FILE}", data_set.dir), layout.as_bytes())?;
            data_set.shards = config.shards;
        }
        Ok(data_set)
    }

    fn shard_path(&self, shard: u32) -> String {
        format!("{}/shard-{shard:03}.jsonl", self.dir)
    }

    fn shard_of(&self, key: &str) -> u32 {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        (hash % self.shards as u64) as u32
    }

    /// One page of records; the token is "shard/byte offset".
    pub(crate) fn page(&self, token: Option<String>, page_size: usize) -> Result<Page, Error> {
        let (mut shard, mut offset) = match token.as_deref() {
            None => (0, 0),
            Some(t) => t
                .split_once('/')
                .and_then(|(s, o)| Some((s.parse().ok()?, o.parse().ok()?)))
                .ok_or_else(|| Error::Config(format!("page token `{t}` is not `shard/offset`")))?,
        };
        let mut records = Vec::new();
        while shard < self.shards && records.len() < page_size {
            let path = self.shard_path(shard);
            match fs::File::open(&path) {
                Ok(mut file) => {
                    file.seek(SeekFrom::Start(offset)).map_err(|e| sdk::io_error(&path, e))?;
                    let mut reader = BufReader::new(file);
                    let mut line = String::new();
                    loop {
                        if records.len() == page_size {
                            break;
                        }
                        line.clear();
                        let read = reader.read_line(&mut line).map_err(|e| sdk::io_error(&path, e))?;
                        if read == 0 {
                            break;
                        }
                        let line_start = offset;
                        offset += read as u64;
                        if line.trim().is_empty() {
                            continue;
                        }
                        let record: Record = serde_json::from_str(&line)
                            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: not a record: {e}")))?;
                        records.push(record);
                    }
                    if records.len() == page_size {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(sdk::io_error(&format!("cannot open `{path}`"), e)),
            }
            shard += 1;
            offset = 0;
        }
        let next = (shard < self.shards).then(|| format!("{shard}/{offset}"));
        let mut columns: Vec<String> = Vec::new();
        for record in &records {
            for name in record.fields.keys() {
                if !columns.contains(name) {
                    columns.push(name.clone());
                }
            }
        }
        let rows = records
            .into_iter()
            .map(|mut record| Row {
                values: columns
                    .iter()
                    .map(|c| record.fields.remove(c).map_or(Value::Null, sdk::value_from_json))
                    .collect(),
                key: record.key,
            })
            .collect();
        Ok(Page { columns, rows, next })
    }

    /// Applies the operations shard by shard, each shard rewritten once.
    pub(crate) fn apply(&self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        let OperationBatch { columns, operations } = batch;
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, op) in operations.iter().enumerate() {
            by_shard.entry(self.shard_of(action_key(&op.action))).or_default().push(i);
        }
        let mut results: Vec<Result<(), Error>> = (0..operations.len()).map(|_| Ok(())).collect();
        for (shard, indexes) in by_shard {
            let path = self.shard_path(shard);
            let mut records = match read_shard(&path) {
                Ok(records) => records,
                Err(e) => {
                    for &i in &indexes {
                        results[i] = Err(e.clone());
                    }
                    continue;
                }
            };
            for &i in &indexes {
                let op = &operations[i];
                results[i] = apply_one(&mut records, &columns, &op.idempotency_key, &op.action);
            }
            let mut text = Vec::new();
            for record in records.values() {
                serde_json::to_writer(&mut text, record).expect("records serialise");
                text.push(b'\n');
            }
            if let Err(e) = write_atomically(&path, &text) {
                for &i in &indexes {
                    if results[i].is_ok() {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
        Ok(results)
    }
}

fn action_key(action: &Action) -> &str {
    match action {
        Action::Create(row) | Action::Upsert(row) => &row.key,
        Action::Update(update) => &update.row.key,
        Action::Delete(key) => key,
    }
}

fn apply_one(
    records: &mut BTreeMap<String, Record>,
    columns: &[String],
    idempotency_key: &str,
    action: &Action,
) -> Result<(), Error> {
    let set_fields = |record: &mut Record, row: &Row, only: Option<&[String]>| {
        for (name, value) in columns.iter().zip(&row.values) {
            if only.is_none_or(|names| names.contains(name)) {
                record.fields.insert(name.clone(), sdk::value_to_json(value));
            }
        }
        record.last_op = Some(idempotency_key.to_string());
    };
    if let Some(existing) = records.get(action_key(action))
        && existing.last_op.as_deref() == Some(idempotency_key)
    {
        return Ok(());
    }
    match action {
        // A create that finds the record (a replay after a crash, or a record
        // made by hand meanwhile) sets the fields all the same: the outcome is
        // what the sync asked for.
        Action::Create(row) | Action::Upsert(row) => {
            let record = records.entry(row.key.clone()).or_insert_with(|| Record {
                key: row.key.clone(),
                fields: serde_json::Map::new(),
                last_op: None,
            });
            set_fields(record, row, None);
            Ok(())
        }
        Action::Update(update) => match records.get_mut(&update.row.key) {
            Some(record) => {
                set_fields(record, &update.row, Some(&update.changed));
                Ok(())
            }
            None => Err(Error::Rejected(format!("no record with key `{}` to update", update.row.key))),
        },
        Action::Delete(key) => {
            records.remove(key);
            Ok(())
        }
    }
}

fn read_shard(path: &str) -> Result<BTreeMap<String, Record>, Error> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(sdk::io_error(&format!("cannot read `{path}`"), e)),
    };
    let mut records = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("`{path}` line {}: not a record: {e}", n + 1)))?;
        records.insert(record.key.clone(), record);
    }
    Ok(records)
}

/// Writes a file so that readers see the old or the new content, never half.
fn write_atomically(path: &str, content: &[u8]) -> Result<(), Error> {
    let temporary = format!("{path}.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().map_err(|e| sdk::io_error(&format!("cannot write `{path}`"), e))
}
