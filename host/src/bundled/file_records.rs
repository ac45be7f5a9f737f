//! What the bundled file destination keeps, read and edited from outside it:
//! the demo shows its records and edits one as a person would, and the tests
//! check what it wrote. The rule (see the plugin's `shard` module): a key's
//! record is its last line, in `shard-NNN.jsonl` and then `shard-NNN.log`; a
//! log line with `"deleted": true` removes the key, and a log's last line
//! counts only once its newline is written.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The shards in `dir`: each one's records file and log (either may be missing).
fn shards(dir: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut stems = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".jsonl").or_else(|| name.strip_suffix(".log"))
            && stem.starts_with("shard-")
        {
            stems.insert(stem.to_string());
        }
    }
    Ok(stems.into_iter().map(|stem| (dir.join(format!("{stem}.jsonl")), dir.join(format!("{stem}.log")))).collect())
}

fn read_optional(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        read => read,
    }
}

fn invalid(path: &Path, detail: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {detail}", path.display()))
}

/// The records of the file destination in `dir`, by key: each one's JSON
/// line (`{"key": …, "fields": {…}, …}`). A key in two shards, or twice in
/// one records file, is an error: the destination never writes either.
pub fn read(dir: &Path) -> io::Result<BTreeMap<String, serde_json::Value>> {
    let mut records = BTreeMap::new();
    for (records_file, log) in shards(dir)? {
        let mut shard = BTreeMap::new();
        for line in read_optional(&records_file)?.lines().filter(|l| !l.trim().is_empty()) {
            let record: serde_json::Value = serde_json::from_str(line).map_err(|e| invalid(&records_file, e))?;
            let key = record["key"].as_str().ok_or_else(|| invalid(&records_file, "a line without a key"))?;
            if shard.insert(key.to_string(), record.clone()).is_some() {
                return Err(invalid(&records_file, format!("key `{key}` twice")));
            }
        }
        let log_text = read_optional(&log)?;
        let whole_lines = &log_text[..log_text.rfind('\n').map_or(0, |end| end + 1)];
        for line in whole_lines.lines().filter(|l| !l.trim().is_empty()) {
            let record: serde_json::Value = serde_json::from_str(line).map_err(|e| invalid(&log, e))?;
            let key = record["key"].as_str().ok_or_else(|| invalid(&log, "a line without a key"))?.to_string();
            if record["deleted"] == true {
                shard.remove(&key);
            } else {
                shard.insert(key, record);
            }
        }
        for (key, record) in shard {
            if records.insert(key.clone(), record).is_some() {
                return Err(invalid(dir, format!("key `{key}` in two shards")));
            }
        }
    }
    Ok(records)
}

/// Edits record `key` by hand, as a person would: `edit` is given its
/// fields, in every line of the key (so its newest too). Returns whether
/// there was such a line.
pub fn edit(dir: &Path, key: &str, edit: impl Fn(&mut serde_json::Value)) -> io::Result<bool> {
    let mut found = false;
    for (records_file, log) in shards(dir)? {
        for path in [records_file, log] {
            let text = read_optional(&path)?;
            let mut edited = String::with_capacity(text.len());
            let mut changed = false;
            for line in text.lines() {
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(mut record) if record["key"] == key => {
                        edit(&mut record["fields"]);
                        edited.push_str(&record.to_string());
                        changed = true;
                    }
                    _ => edited.push_str(line),
                }
                edited.push('\n');
            }
            if changed {
                std::fs::write(&path, edited)?;
                found = true;
            }
        }
    }
    Ok(found)
}
