//! A data set in a directory: `layout.json` fixes its shard count, and each
//! key lives in the shard its hash picks (see [`crate::shard`]). Snapshots
//! read the shards in order; `apply` appends each batch's changes to the logs
//! of the shards it touches, each under its lock (see [`crate::files`]), so
//! that applying costs what the operations do, not what the data set holds,
//! and only under the newest lease the shard has seen (see [`crate::fence`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use synchost_plugin_sdk::{self as sdk, Action, Error, JsonFields, OperationBatch, Page, Row, TableBuilder};

use crate::files::{ShardLock, write_atomically};
use crate::shard::{Readers, Record, Shard};

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

/// A record line as a snapshot reads it: the fields in the order the line
/// has them, names and text borrowed from the line rather than allocated, for
/// every record of a large data set (see [`JsonFields`]).
#[derive(Deserialize)]
struct RecordView<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    fields: JsonFields<'a>,
}

thread_local! {
    /// The shards this instance has read, by records file, with their
    /// indexes: kept between calls (a run's calls go to one instance), and
    /// checked against the files at every use.
    static SHARDS: RefCell<HashMap<String, Shard>> = RefCell::new(HashMap::new());
}

pub(crate) struct DataSet {
    dir: String,
    shards: u32,
    lock_stale_ms: u64,
}

/// Where a snapshot goes on from: a byte of a shard's records file or log.
#[derive(Default)]
struct Position {
    shard: u32,
    in_log: bool,
    offset: u64,
}

impl Position {
    /// `shard/offset` in the records file, `shard/log/offset` in the log.
    fn parse(token: &str) -> Option<Position> {
        let (shard, rest) = token.split_once('/')?;
        let (in_log, offset) = match rest.strip_prefix("log/") {
            Some(offset) => (true, offset),
            None => (false, rest),
        };
        Some(Position { shard: shard.parse().ok()?, in_log, offset: offset.parse().ok()? })
    }

    fn token(&self) -> String {
        let log = if self.in_log { "log/" } else { "" };
        format!("{}/{log}{}", self.shard, self.offset)
    }
}

impl DataSet {
    /// Opens an existing data set; a directory without one reads as empty.
    pub(crate) fn open(config: &Config) -> Result<DataSet, Error> {
        let layout_path = format!("{}/{LAYOUT_FILE}", config.dir);
        let shards = match std::fs::read_to_string(&layout_path) {
            Ok(text) => {
                let layout: Layout = serde_json::from_str(&text)
                    .map_err(|e| Error::Config(format!("`{layout_path}` is damaged: {e}")))?;
                layout.shards
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::metadata(&config.dir)
                    .map_err(|e| sdk::io_error(&format!("cannot open `{}`", config.dir), e))?;
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

    fn shard_of(&self, key: &str) -> u32 {
        // The host's lane hash: a key's shard follows from its lane.
        (sdk::lanes::key_hash(key) % self.shards as u64) as u32
    }

    /// Runs `f` on shard `shard`, as its files are now.
    fn with_shard<T>(&self, shard: u32, f: impl FnOnce(&mut Shard) -> Result<T, Error>) -> Result<T, Error> {
        let records = format!("{}/shard-{shard:03}.jsonl", self.dir);
        SHARDS.with_borrow_mut(|shards| {
            let shard = match shards.entry(records) {
                Entry::Occupied(entry) => {
                    let shard = entry.into_mut();
                    shard.refresh()?;
                    shard
                }
                Entry::Vacant(entry) => {
                    let log = format!("{}/shard-{shard:03}.log", self.dir);
                    let loaded = Shard::load(entry.key().clone(), log)?;
                    entry.insert(loaded)
                }
            };
            f(shard)
        })
    }

    /// One page of records: each shard's records file, then its log, each
    /// key's newest line only.
    pub(crate) fn page(&self, token: Option<String>, page_size: usize) -> Result<Page, Error> {
        let mut at = match token.as_deref() {
            None => Position::default(),
            Some(t) => {
                Position::parse(t).ok_or_else(|| Error::Config(format!("page token `{t}` is not `shard/offset`")))?
            }
        };
        // The columns are the union of the records' fields, in the order first
        // seen; a field a record lacks is null.
        let mut page = TableBuilder::new(Vec::new());
        while at.shard < self.shards && page.len() < page_size {
            let room = page_size - page.len();
            let next = self.with_shard(at.shard, |shard| {
                shard.read_current(at.in_log, at.offset, room, |line| {
                    let record: RecordView = serde_json::from_slice(line)
                        .map_err(|e| Error::Config(format!("shard {:03}: not a record: {e}", at.shard)))?;
                    page.push_fields(&record.key, &record.fields.0);
                    Ok(())
                })
            })?;
            at = match next {
                Some(offset) => Position { offset, ..at },
                None if !at.in_log => Position { in_log: true, offset: 0, ..at },
                None => Position { shard: at.shard + 1, ..Position::default() },
            };
        }
        let next = (at.shard < self.shards).then(|| at.token());
        Ok(Page { rows: page.finish(), next })
    }

    /// Applies the operations shard by shard: one synced append to each
    /// shard's log, under the run's lease (see [`crate::fence`]).
    pub(crate) fn apply(&self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        self.apply_with(batch, |_| Ok(()))
    }

    /// The same, calling `written` with the indexes of each shard's
    /// operations that applied, while the shard's lock is still held: what it
    /// does (a test fixture's log of every write) is ordered with the writes.
    pub(crate) fn apply_with(
        &self,
        batch: OperationBatch,
        mut written: impl FnMut(&[usize]) -> Result<(), Error>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let fence = sdk::host::run_fence();
        let OperationBatch { columns, operations } = batch;
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, op) in operations.iter().enumerate() {
            by_shard.entry(self.shard_of(op.action.key())).or_default().push(i);
        }
        let mut results: Vec<Result<(), Error>> = (0..operations.len()).map(|_| Ok(())).collect();
        for (shard, indexes) in by_shard {
            let lock = ShardLock::take(&format!("{}/shard-{shard:03}.lock", self.dir), self.lock_stale_ms);
            let applied = lock.and_then(|_lock| {
                if let Some(fence) = &fence {
                    crate::fence::admit(&format!("{}/fence-{shard:03}.json", self.dir), fence)?;
                }
                self.with_shard(shard, |shard| {
                    // Each key's state as this batch leaves it, in the order
                    // first changed.
                    let mut changed: Vec<Record> = Vec::new();
                    let mut changed_at: HashMap<String, usize> = HashMap::new();
                    let mut readers = Readers::default();
                    for &i in &indexes {
                        let op = &operations[i];
                        let key = op.action.key();
                        let current = match changed_at.get(key) {
                            Some(&at) => Some(changed[at].clone()).filter(|r| !r.deleted),
                            None => shard.get(&mut readers, key)?,
                        };
                        match apply_one(current, &columns, &op.idempotency_key, &op.action) {
                            Ok(Some(record)) => match changed_at.entry(record.key.clone()) {
                                Entry::Occupied(at) => changed[*at.get()] = record,
                                Entry::Vacant(at) => {
                                    at.insert(changed.len());
                                    changed.push(record);
                                }
                            },
                            Ok(None) => {}
                            Err(e) => results[i] = Err(e),
                        }
                    }
                    shard.append(&changed)
                })?;
                let applied: Vec<usize> = indexes.iter().copied().filter(|&i| results[i].is_ok()).collect();
                written(&applied)
            });
            if let Err(e) = applied {
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

/// What `action` makes of the record `current`: its new state (`deleted`
/// for a removal), or `None` when it changes nothing (a redelivered
/// operation, or a delete of a key that is not there).
fn apply_one(
    current: Option<Record>,
    columns: &[String],
    idempotency_key: &str,
    action: &Action,
) -> Result<Option<Record>, Error> {
    let set_fields = |mut record: Record, row: &Row, only: Option<&[String]>| -> Result<Record, Error> {
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
                record.fields.insert(name.clone(), value);
            }
        }
        record.last_op = Some(idempotency_key.to_string());
        Ok(record)
    };
    if current.as_ref().is_some_and(|record| record.last_op.as_deref() == Some(idempotency_key)) {
        return Ok(None);
    }
    let new =
        |key: &str| Record { key: key.to_string(), fields: serde_json::Map::new(), last_op: None, deleted: false };
    match action {
        // A create that finds the record (a replay after a crash, or a record
        // made by hand meanwhile) sets the fields all the same: the outcome is
        // what the sync asked for. Fields the row does not carry are kept.
        Action::Create(row) | Action::Upsert(row) => {
            set_fields(current.unwrap_or_else(|| new(&row.key)), row, None).map(Some)
        }
        Action::Update(update) => match current {
            Some(record) => set_fields(record, &update.row, Some(&update.changed)).map(Some),
            None => Err(Error::Rejected(format!("no record with key `{}` to update", update.row.key))),
        },
        Action::Delete(key) => {
            Ok(current.map(|_| Record { deleted: true, last_op: Some(idempotency_key.to_string()), ..new(key) }))
        }
    }
}
