//! One shard of a data set: its records (`shard-NNN.jsonl`), the log of the
//! changes made since they were last written (`shard-NNN.log`), and an index
//! of where each key's newest line is, kept between calls.
//!
//! A key's record is its last line, in the records file and then the log; a
//! log line with `"deleted": true` removes it. Every line is a whole record,
//! so reading a log again over the records it was folded into changes
//! nothing: that is what makes folding crash-safe (the new records file is in
//! place, atomically, before the log is removed).
//!
//! A log line counts once its newline is written: a crash in the middle of an
//! append leaves a tail that readers ignore and the next writer cuts off
//! before it appends. An append is synced before `apply` returns.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use synchost_plugin_sdk::{self as sdk, Error};

use crate::files::write_atomically;

/// A log is folded into its records once it holds more bytes than they do
/// (so the disk and every read stay within twice the data), and at least this
/// many: a small data set is not rewritten for every batch.
const FOLD_AT_LEAST: u64 = 1 << 20;

/// One line of a shard's records or log.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Record {
    pub key: String,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The idempotency key of the last operation applied to this record: the
    /// same operation delivered again is recognised and not applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_op: Option<String>,
    /// A log line that removes the key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// What indexing needs of a line: its key, and whether it removes it.
#[derive(Deserialize)]
struct LineKey<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default)]
    deleted: bool,
}

/// A whole line of a shard's file, as a scan gives it.
struct Line<'a> {
    key: &'a str,
    /// The line removes its key.
    deleted: bool,
    spot: Spot,
    /// Without the newline.
    text: &'a [u8],
}

/// Where a key's newest line is. The top bit of `at` says the log (else the
/// records file); the rest is the byte the line starts at.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) struct Spot {
    at: u64,
    /// Without the newline.
    len: u32,
    /// A second hash of the key, telling two keys of one `key_hash` apart.
    check: u32,
}

const IN_LOG: u64 = 1 << 63;

impl Spot {
    fn new(in_log: bool, offset: u64, len: usize, check: u32) -> Spot {
        let len = u32::try_from(len).expect("a record line under 4 GiB");
        Spot { at: offset | if in_log { IN_LOG } else { 0 }, len, check }
    }
}

fn check_hash(key: &str) -> u32 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() as u32
}

/// A file as it was last seen: anything else changed it.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &str) -> Result<Option<Stamp>, Error> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(Stamp { len: meta.len(), modified: meta.modified().ok() })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(sdk::io_error(&format!("cannot read `{path}`"), e)),
    }
}

/// Where each key's newest line is, for one shard.
#[derive(Default)]
struct Index {
    spots: HashMap<u64, Spot>,
    /// The keys whose `key_hash` collided with another's, by name.
    exact: HashMap<String, Spot>,
    collided: HashSet<u64>,
}

/// One shard's files and index.
pub(crate) struct Shard {
    records_path: String,
    log_path: String,
    /// The files as the index last saw them: a change by anyone else (another
    /// lane, a person) is noticed, and the index built again.
    stamps: (Option<Stamp>, Option<Stamp>),
    records_len: u64,
    /// Up to the last newline.
    log_len: u64,
    /// Built when first needed: a snapshot of a shard without a log needs none.
    index: Option<Index>,
}

/// A shard's files, opened for reading once per call.
#[derive(Default)]
pub(crate) struct Readers {
    records: Option<fs::File>,
    log: Option<fs::File>,
}

impl Shard {
    /// A shard's files as they are; missing files are empty. One with a log
    /// is indexed at once (its log's length is where its last line ends).
    pub(crate) fn load(records_path: String, log_path: String) -> Result<Shard, Error> {
        let stamps = (stamp(&records_path)?, stamp(&log_path)?);
        let mut shard = Shard {
            records_len: stamps.0.map_or(0, |s| s.len),
            stamps,
            records_path,
            log_path,
            log_len: 0,
            index: None,
        };
        if stamps.1.is_some_and(|log| log.len > 0) {
            shard.ensure_index()?;
        }
        Ok(shard)
    }

    /// Indexes both files, if not done yet.
    fn ensure_index(&mut self) -> Result<(), Error> {
        if self.index.is_some() {
            return Ok(());
        }
        self.index = Some(Index::default());
        let mut readers = Readers::default();
        // The records file is only ever written whole: a last line without a
        // newline (a hand edit) counts. The log is appended to: it does not.
        let indexed = self
            .scan(false, &mut readers, |shard, readers, line| shard.note(readers, line.key, line.deleted, line.spot))
            .and_then(|records_len| {
                let log_len = self.scan(true, &mut readers, |shard, readers, line| {
                    shard.note(readers, line.key, line.deleted, line.spot)
                })?;
                Ok((records_len, log_len))
            });
        match indexed {
            Ok((records_len, log_len)) => {
                (self.records_len, self.log_len) = (records_len, log_len);
                Ok(())
            }
            Err(e) => {
                self.index = None;
                Err(e)
            }
        }
    }

    /// The shard as its files are now: the same index if only this instance
    /// wrote them since, else one built again.
    pub(crate) fn refresh(&mut self) -> Result<(), Error> {
        if (stamp(&self.records_path)?, stamp(&self.log_path)?) != self.stamps {
            *self = Shard::load(self.records_path.clone(), self.log_path.clone())?;
        }
        Ok(())
    }

    /// Calls `each` with every whole line of one file (the log if `in_log`).
    /// Returns the bytes read up to the last line counted.
    fn scan(
        &mut self,
        in_log: bool,
        readers: &mut Readers,
        mut each: impl FnMut(&mut Shard, &mut Readers, Line<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let path = if in_log { self.log_path.clone() } else { self.records_path.clone() };
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(sdk::io_error(&format!("cannot open `{path}`"), e)),
        };
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let (mut offset, mut line) = (0u64, Vec::new());
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(|e| sdk::io_error(&path, e))?;
            if read == 0 || (in_log && line.last() != Some(&b'\n')) {
                return Ok(offset);
            }
            let text = trim_newline(&line);
            if !text.iter().all(u8::is_ascii_whitespace) {
                let parsed: LineKey = serde_json::from_slice(text)
                    .map_err(|e| Error::Config(format!("`{path}` at byte {offset}: not a record: {e}")))?;
                let spot = Spot::new(in_log, offset, text.len(), check_hash(&parsed.key));
                each(self, readers, Line { key: &parsed.key, deleted: parsed.deleted, spot, text })?;
            }
            offset += read as u64;
        }
    }

    /// Records that `key`'s newest line is at `spot` (or that it is gone).
    fn note(&mut self, readers: &mut Readers, key: &str, deleted: bool, spot: Spot) -> Result<(), Error> {
        let hash = sdk::lanes::key_hash(key);
        let index = self.index.as_mut().expect("noted into an index");
        if index.collided.contains(&hash) {
            if deleted {
                index.exact.remove(key);
            } else {
                index.exact.insert(key.to_string(), spot);
            }
            return Ok(());
        }
        match index.spots.get(&hash).copied() {
            Some(other) if other.check != spot.check => {
                // Two keys, one hash: both are kept by name from now on.
                let other_key = self.read_at(readers, other)?.key;
                let index = self.index.as_mut().expect("noted into an index");
                index.spots.remove(&hash);
                index.collided.insert(hash);
                index.exact.insert(other_key, other);
                if !deleted {
                    index.exact.insert(key.to_string(), spot);
                }
            }
            _ if deleted => {
                index.spots.remove(&hash);
            }
            _ => {
                index.spots.insert(hash, spot);
            }
        }
        Ok(())
    }

    fn spot(&self, key: &str) -> Option<Spot> {
        let index = self.index.as_ref().expect("looked up in an index");
        let hash = sdk::lanes::key_hash(key);
        if index.collided.contains(&hash) {
            return index.exact.get(key).copied();
        }
        index.spots.get(&hash).copied().filter(|spot| spot.check == check_hash(key))
    }

    /// The line at `spot`, as a record.
    fn read_at(&self, readers: &mut Readers, spot: Spot) -> Result<Record, Error> {
        let (path, reader) = if spot.at & IN_LOG != 0 {
            (&self.log_path, &mut readers.log)
        } else {
            (&self.records_path, &mut readers.records)
        };
        let offset = spot.at & !IN_LOG;
        if reader.is_none() {
            *reader = Some(fs::File::open(path).map_err(|e| sdk::io_error(&format!("cannot open `{path}`"), e))?);
        }
        let file = reader.as_mut().expect("opened above");
        let mut line = vec![0; spot.len as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut line))
            .map_err(|e| sdk::io_error(&format!("cannot read `{path}` at byte {offset}"), e))?;
        serde_json::from_slice(&line)
            .map_err(|e| Error::Config(format!("`{path}` at byte {offset}: not a record: {e}")))
    }

    /// `key`'s record, if the shard has one.
    pub(crate) fn get(&mut self, readers: &mut Readers, key: &str) -> Result<Option<Record>, Error> {
        self.ensure_index()?;
        self.spot(key).map(|spot| self.read_at(readers, spot)).transpose()
    }

    /// Appends the new state of each record (a `deleted` one removes its key)
    /// to the log, synced, and folds the log in once it is due.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        self.ensure_index()?;
        let mut text = Vec::new();
        let mut spots = Vec::with_capacity(records.len());
        for record in records {
            let start = text.len();
            serde_json::to_writer(&mut text, record).expect("records serialise");
            spots.push(Spot::new(true, self.log_len + start as u64, text.len() - start, check_hash(&record.key)));
            text.push(b'\n');
        }
        let path = &self.log_path;
        // Returns the log's stamp as this write leaves it, from the open file:
        // every file operation is a call out of the sandbox, paid per shard
        // per batch.
        let write = || -> std::io::Result<Stamp> {
            let mut log = fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
            // A tail left by a writer that died mid-append is no line: cut it.
            if log.metadata()?.len() != self.log_len {
                log.set_len(self.log_len)?;
            }
            log.seek(SeekFrom::Start(self.log_len))?;
            log.write_all(&text)?;
            log.sync_data()?;
            let meta = log.metadata()?;
            Ok(Stamp { len: meta.len(), modified: meta.modified().ok() })
        };
        let log_stamp = match write() {
            Ok(stamp) => stamp,
            Err(e) => {
                // Whatever part of it was written goes: the operations failed.
                // Should that fail too, the index is built again next time,
                // from what the log holds by then.
                let _ = fs::OpenOptions::new().write(true).open(path).and_then(|log| log.set_len(self.log_len));
                self.stamps = (None, None);
                return Err(sdk::io_error(&format!("cannot write `{path}`"), e));
            }
        };
        self.log_len += text.len() as u64;
        let mut readers = Readers::default();
        for (record, spot) in records.iter().zip(spots) {
            self.note(&mut readers, &record.key, record.deleted, spot)?;
        }
        // The records file is only rewritten by a fold, under the lock held
        // now: its stamp is the one `refresh` just checked.
        self.stamps.1 = Some(log_stamp);
        if self.log_len > self.records_len.max(FOLD_AT_LEAST) {
            self.fold()?;
        }
        Ok(())
    }

    /// Writes the records file anew with the log folded in, then removes the log.
    /// Both files are read once, in order, and each key's newest line is
    /// kept as it is: folding costs a sequential read of the shard, not a
    /// read and a parse per record.
    fn fold(&mut self) -> Result<(), Error> {
        let mut lines: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut readers = Readers::default();
        for in_log in [false, true] {
            self.scan(in_log, &mut readers, |_, _, line| {
                if line.deleted {
                    lines.remove(line.key);
                } else {
                    lines.insert(line.key.to_string(), line.text.to_vec());
                }
                Ok(())
            })?;
        }
        let mut text = Vec::with_capacity(lines.values().map(|line| line.len() + 1).sum());
        for line in lines.values() {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        write_atomically(&self.records_path, &text, false)?;
        fs::remove_file(&self.log_path)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|e| sdk::io_error(&format!("cannot remove `{}`", self.log_path), e))?;
        *self = Shard::load(self.records_path.clone(), self.log_path.clone())?;
        Ok(())
    }

    /// Up to `max` current lines (each key's newest), from byte `offset` of
    /// the records file (or of the log): each given to `each` as text.
    /// Returns where to go on from, `None` at the end of that file.
    pub(crate) fn read_current(
        &self,
        in_log: bool,
        offset: u64,
        max: usize,
        mut each: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<Option<u64>, Error> {
        let (path, end) = if in_log { (&self.log_path, self.log_len) } else { (&self.records_path, self.records_len) };
        let mut file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(sdk::io_error(&format!("cannot open `{path}`"), e)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(|e| sdk::io_error(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let (mut offset, mut line, mut given) = (offset, Vec::new(), 0);
        while offset < end {
            if given == max {
                return Ok(Some(offset));
            }
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(|e| sdk::io_error(path, e))?;
            if read == 0 {
                break;
            }
            let text = trim_newline(&line);
            if !text.iter().all(u8::is_ascii_whitespace) && self.is_current(in_log, offset, text, path)? {
                each(text)?;
                given += 1;
            }
            offset += read as u64;
        }
        Ok(None)
    }
}

impl Shard {
    /// Whether the line at `offset` is its key's newest. Without an index
    /// (a shard without a log), every line of the records file is.
    fn is_current(&self, in_log: bool, offset: u64, text: &[u8], path: &str) -> Result<bool, Error> {
        if self.index.is_none() {
            return Ok(true);
        }
        let parsed: LineKey = serde_json::from_slice(text)
            .map_err(|e| Error::Config(format!("`{path}` at byte {offset}: not a record: {e}")))?;
        Ok(self.spot(&parsed.key) == Some(Spot::new(in_log, offset, text.len(), check_hash(&parsed.key))))
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").map(|l| l.strip_suffix(b"\r").unwrap_or(l)).unwrap_or(line)
}
