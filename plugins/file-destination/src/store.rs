//! The on-disk layout: a `layout.json` that fixes the shard count, and the shard
//! files themselves.
//!
//! Several writers may apply batches to one data set at once (the host runs an
//! event sync in parallel lanes, each with its own instance of this plugin).
//! A shard is rewritten whole (read, modify, write a temporary file, rename),
//! so two writers on one shard would lose each other's updates: each rewrite
//! holds the shard's lock file (`shard-NNN.lock`, made with `create_new`,
//! which fails if it exists). WASI has no advisory locks and no process ids,
//! so a lock left behind by a killed process is recognised by its age (its
//! modification time): one older than `lock_stale_ms` is broken. A rewrite
//! holds a lock for milliseconds, far below that.
//! The host spreads keys over lanes with the same hash as the shards here, so
//! with a shard count that is a multiple of the lane count the locks are never
//! contended; they are what keeps any other combination correct.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};
use synchost_plugin_sdk::{self as sdk, Action, Error, JsonFields, OperationBatch, Page, Row, TableBuilder};

/// The plugin's `config` table in the tenant file (the settings of the data
/// set; a plugin that embeds this store may take more keys of its own).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The directory that holds the data set, e.g. "/out".
    pub dir: String,
    /// How many shard files a new data set is spread over; an existing data set
    /// keeps the number it was created with.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Records per snapshot page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// A shard lock older than this many milliseconds was left by a writer
    /// that died, and is broken.
    #[serde(default = "default_lock_stale_ms")]
    pub lock_stale_ms: u64,
}

fn default_shards() -> u32 {
    16
}

fn default_page_size() -> usize {
    5000
}

fn default_lock_stale_ms() -> u64 {
    2000
}

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

/// A record as a snapshot reads it: the fields in the order the line has
/// them, names and text borrowed from the line rather than allocated, for
/// every record of a large data set (see [`JsonFields`]).
#[derive(Deserialize)]
struct RecordView<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    fields: JsonFields<'a>,
}

pub(crate) struct DataSet {
    dir: String,
    shards: u32,
    lock_stale_ms: u64,
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
        Ok(DataSet { dir: config.dir.clone(), shards, lock_stale_ms: config.lock_stale_ms })
    }

    pub(crate) fn open_or_create(config: &Config) -> Result<DataSet, Error> {
        let mut data_set = DataSet::open(config)?;
        if data_set.shards == 0 {
            if config.shards == 0 {
                return Err(Error::Config("`shards` must be at least 1".into()));
            }
            let layout = serde_json::to_string(&Layout { shards: config.shards }).expect("layout serialises");
            write_atomically(&format!("{}/{LAYOUT_FILE}", data_set.dir), layout.as_bytes(), true)?;
            data_set.shards = config.shards;
        }
        Ok(data_set)
    }

    fn shard_path(&self, shard: u32) -> String {
        format!("{}/shard-{shard:03}.jsonl", self.dir)
    }

    fn shard_of(&self, key: &str) -> u32 {
        // The host's lane hash: a key's shard follows from its lane.
        (sdk::lanes::key_hash(key) % self.shards as u64) as u32
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
        // The columns are the union of the records' fields, in the order first
        // seen; a field a record lacks is null.
        let mut page = TableBuilder::new(Vec::new());
        while shard < self.shards && page.len() < page_size {
            let path = self.shard_path(shard);
            match fs::File::open(&path) {
                Ok(mut file) => {
                    file.seek(SeekFrom::Start(offset)).map_err(|e| sdk::io_error(&path, e))?;
                    let mut reader = BufReader::new(file);
                    let mut line = String::new();
                    loop {
                        if page.len() == page_size {
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
                        let record: RecordView = serde_json::from_str(&line)
                            .map_err(|e| Error::Config(format!("`{path}` at byte {line_start}: not a record: {e}")))?;
                        page.push_fields(&record.key, &record.fields.0);
                    }
                    if page.len() == page_size {
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
        Ok(Page { rows: page.finish(), next })
    }

    /// Applies the operations shard by shard, each shard rewritten once.
    pub(crate) fn apply(&self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        let OperationBatch { columns, operations } = batch;
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, op) in operations.iter().enumerate() {
            by_shard.entry(self.shard_of(op.action.key())).or_default().push(i);
        }
        let mut results: Vec<Result<(), Error>> = (0..operations.len()).map(|_| Ok(())).collect();
        for (shard, indexes) in by_shard {
            let path = self.shard_path(shard);
            let _lock = match ShardLock::take(&format!("{}/shard-{shard:03}.lock", self.dir), self.lock_stale_ms) {
                Ok(lock) => lock,
                Err(e) => {
                    for &i in &indexes {
                        results[i] = Err(e.clone());
                    }
                    continue;
                }
            };
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
            if let Err(e) = write_atomically(&path, &text, false) {
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

/// How deep a field's JSON may nest. A shard line holds the value two levels
/// down (the record, its fields), and serde_json reads no deeper than 128: a
/// deeper value would make the whole shard unreadable, so it is refused.
const MAX_FIELD_DEPTH: usize = 125;

/// How deep `value` nests: 0 for a scalar, 1 for a flat array or object.
fn depth(value: &serde_json::Value) -> usize {
    // Iterative: a value that could be built can be measured.
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, at)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(at + 1);
        stack.extend(children.map(|child| (child, at + 1)));
    }
    deepest
}

fn apply_one(
    records: &mut BTreeMap<String, Record>,
    columns: &[String],
    idempotency_key: &str,
    action: &Action,
) -> Result<(), Error> {
    let set_fields = |record: &mut Record, row: &Row, only: Option<&[String]>| -> Result<(), Error> {
        let mut fields = Vec::new();
        for (name, value) in columns.iter().zip(&row.values) {
            if only.is_none_or(|names| names.contains(name)) {
                let value = sdk::value_to_json(value);
                let nested = depth(&value);
                if nested > MAX_FIELD_DEPTH {
                    return Err(Error::Rejected(format!(
                        "field `{name}` nests {nested} deep; this destination keeps JSON at most \
                         {MAX_FIELD_DEPTH} deep, so that its records stay readable"
                    )));
                }
                fields.push((name.clone(), value));
            }
        }
        record.fields.extend(fields);
        record.last_op = Some(idempotency_key.to_string());
        Ok(())
    };
    if let Some(existing) = records.get(action.key())
        && existing.last_op.as_deref() == Some(idempotency_key)
    {
        return Ok(());
    }
    match action {
        // A create that finds the record (a replay after a crash, or a record
        // made by hand meanwhile) sets the fields all the same: the outcome is
        // what the sync asked for.
        Action::Create(row) | Action::Upsert(row) => {
            match records.get_mut(&row.key) {
                Some(record) => set_fields(record, row, None),
                None => {
                    // Into the shard only once the whole row is accepted.
                    let mut record = Record { key: row.key.clone(), fields: serde_json::Map::new(), last_op: None };
                    set_fields(&mut record, row, None)?;
                    records.insert(row.key.clone(), record);
                    Ok(())
                }
            }
        }
        Action::Update(update) => match records.get_mut(&update.row.key) {
            Some(record) => set_fields(record, &update.row, Some(&update.changed)),
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

/// Milliseconds since the Unix epoch (WASI's wall clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A shard's lock, held while it is rewritten; released when dropped.
struct ShardLock {
    path: String,
}

impl ShardLock {
    /// How long a writer waits for a lock held by another live writer before
    /// giving up with a transient error (the host retries the operations).
    const MAX_WAIT_MS: u64 = 30_000;

    fn take(path: &str, stale_ms: u64) -> Result<ShardLock, Error> {
        let started = now_ms();
        loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    // The time it was taken tells others when it is stale.
                    let _ = file.write_all(now_ms().to_string().as_bytes());
                    return Ok(ShardLock { path: path.to_string() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // The lock's age comes from its modification time, not its
                    // content: a writer killed between creating the lock and
                    // writing into it leaves an empty one.
                    let age_ms = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                        .map(|d| d.as_millis() as u64);
                    if age_ms.is_some_and(|age| age > stale_ms) {
                        sdk::log::warn(&format!("breaking the stale lock `{path}` (older than {stale_ms} ms)"));
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if now_ms().saturating_sub(started) > Self::MAX_WAIT_MS {
                        return Err(Error::Transient(format!(
                            "`{path}` has been held by another writer for over {} ms",
                            Self::MAX_WAIT_MS
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(sdk::io_error(&format!("cannot create the lock `{path}`"), e)),
            }
        }
    }
}

impl Drop for ShardLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes a file so that readers see the old or the new content, never half.
/// A shard's temporary file is its own (`….tmp`, written under the shard's
/// lock, and left at most once by a killed writer); `layout.json` may be
/// written by several new lanes at once, so each writes its own temporary file.
fn write_atomically(path: &str, content: &[u8], shared: bool) -> Result<(), Error> {
    let temporary = if shared {
        // Unique to this writer: lanes writing the same file (a new data
        // set's layout, say) start in the same instant, so the clock alone
        // can give two of them one name, and one rename then finds no file.
        use std::hash::{BuildHasher, Hasher};
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        format!("{path}.{nanos:x}-{random:x}.tmp")
    } else {
        format!("{path}.tmp")
    };
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().map_err(|e| {
        // A write cut short (a full disk, say) leaves no half file behind.
        let _ = fs::remove_file(&temporary);
        sdk::io_error(&format!("cannot write `{path}`"), e)
    })
}
