//! A source that reads files from a directory the tenant grants read-only:
//! a data set as CSV or JSON lines (snapshots, for diff syncs) and an
//! append-only changelog of JSON lines (events, for event syncs).
//!
//! Both are paged statelessly by byte offset: the page token and the event
//! cursor are the offset to resume at, so the host can stop and resume anywhere.

mod changelog;
mod dataset;

use std::fmt::Write;

use serde::Deserialize;
use synchost_plugin_sdk::{self as sdk, Error, EventBatch, Page, PluginInfo, ValueRef};

/// The plugin's `config` table in the tenant file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The data set read by snapshots, e.g. "/data/students.csv".
    pub snapshot: Option<String>,
    /// "csv" or "jsonl"; by default taken from the snapshot file's extension
    /// (.csv, .jsonl or .ndjson).
    pub format: Option<Format>,
    /// The field, or fields, whose values make a row's key (joined with ':').
    pub key: KeyFields,
    /// The changelog read by events: one JSON object per line,
    /// `{"op": "upsert", "row": {...}}` or `{"op": "delete", "key": "..."}`.
    pub changelog: Option<String>,
    /// Rows per snapshot page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

fn default_page_size() -> usize {
    5000
}

#[derive(Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// CSV with a header row naming the columns; every cell is text, an empty
    /// cell is null.
    Csv,
    /// JSON lines: one JSON object per line; values keep their JSON types.
    Jsonl,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum KeyFields {
    /// One field; the key is its value as text.
    One(String),
    /// A list of fields; the key is their values as text, joined with ':'.
    Several(Vec<String>),
}

impl KeyFields {
    pub(crate) fn names(&self) -> &[String] {
        match self {
            KeyFields::One(name) => std::slice::from_ref(name),
            KeyFields::Several(names) => names,
        }
    }

    /// Writes the key of a row into `key` (which it clears first): the text of
    /// each key field's value, joined with ':'. `value` gives the value of the
    /// key field at an index of [`Self::names`], with its name; a field with
    /// none, or a null, is an error that names it.
    pub(crate) fn write_key<'v>(
        &self,
        key: &mut String,
        mut value: impl FnMut(usize, &str) -> Option<ValueRef<'v>>,
    ) -> Result<(), String> {
        key.clear();
        for (i, name) in self.names().iter().enumerate() {
            match value(i, name) {
                None | Some(ValueRef::Null) => return Err(format!("no value for key field `{name}`")),
                Some(part) => {
                    if i > 0 {
                        key.push(':');
                    }
                    write!(key, "{part}").expect("writing to a String cannot fail");
                }
            }
        }
        Ok(())
    }
}

/// Parses a page token or cursor: the byte offset to resume at.
pub(crate) fn parse_offset(token: Option<String>, what: &str) -> Result<u64, Error> {
    match token {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| Error::Config(format!("{what} `{t}` is not a byte offset"))),
    }
}

/// The source of one plugin instance: its config, read once.
struct FileSource {
    config: Config,
}

impl sdk::Plugin for FileSource {
    type Config = Config;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "file-source",
            env!("CARGO_PKG_VERSION"),
            "Reads a CSV or JSON-lines data set and an append-only JSON-lines changelog from a granted directory",
        )
    }

    fn new(config: Config) -> Result<Self, Error> {
        Ok(FileSource { config })
    }
}

impl sdk::Source for FileSource {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        let config = &self.config;
        let Some(path) = config.snapshot.as_deref() else {
            return Err(Error::Config(
                "plugin `file-source` does not support `snapshot` here: no `snapshot` file is configured".into(),
            ));
        };
        let format = match config.format {
            Some(format) => format,
            None if path.ends_with(".csv") => Format::Csv,
            None if path.ends_with(".jsonl") || path.ends_with(".ndjson") => Format::Jsonl,
            None => {
                return Err(Error::Config(format!(
                    "cannot tell the format of `{path}`: set `format` to \"csv\" or \"jsonl\""
                )));
            }
        };
        let offset = parse_offset(token, "page token")?;
        dataset::read_page(path, format, config, offset)
    }

    fn events(&mut self, cursor: Option<String>, max: u32) -> Result<EventBatch, Error> {
        let config = &self.config;
        let Some(path) = config.changelog.as_deref() else {
            return Err(Error::Config(
                "plugin `file-source` does not support `events` here: no `changelog` file is configured".into(),
            ));
        };
        let offset = parse_offset(cursor, "cursor")?;
        changelog::read_events(path, &config.key, offset, max as usize)
    }
}

sdk::export_source!(FileSource);
