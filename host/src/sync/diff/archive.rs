//! The run archive: what a diff run read, planned and did, kept in the state
//! store as zstd-compressed JSON lines so that any host sharing that store
//! can inspect, approve and replay the run.
//!
//! A run's archive holds `source`, `destination` and `desired` (row streams: a
//! `{"columns": [...]}` line opens each page, then one `[key, value, ...]` line
//! per row), `plan` (one operation per line), `outcomes` (one per applied
//! operation) and `meta.json`. Values use the lossless encoding of
//! [`crate::sync::values::encode_value`].
//!
//! The streams are written to a staging directory as they pass (a million
//! rows need not sit in memory), then [`publish`]ed to the store, each file a
//! write fenced by the run's lease like every other.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::plan::{Conflict, Plan};
use crate::state::{RunId, StateStore};
use crate::sync::values::{Encoded, decode_value, encode_value};
use synchost_model::{Row, RowUpdate, Table};

/// zstd level 1: an archive of a million rows is an eighth of their JSON
/// either way (level 3 made files 1% smaller), and level 1 compresses in two
/// thirds of level 3's time, which a sync that changes little spends beside
/// its plan.
const ZSTD_LEVEL: i32 = 1;

pub const META: &str = "meta.json";
pub const PLAN: &str = "plan.jsonl.zst";
pub const OUTCOMES: &str = "outcomes.jsonl.zst";
pub const SOURCE: &str = "source.jsonl.zst";
pub const DESTINATION: &str = "destination.jsonl.zst";
pub const DESIRED: &str = "desired.jsonl.zst";

/// Where a run's archive files are written before they are published.
pub fn staging_dir(state_dir: &Path, run: RunId) -> PathBuf {
    state_dir.join("runs").join(run.to_string())
}

/// A failure reading or writing the archive, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("run archive `{file}`: {detail}")]
pub struct ArchiveError {
    /// `run N/NAME` for a file in the store, the path of a staged one.
    pub file: String,
    pub detail: String,
}

fn error(file: impl std::fmt::Display, detail: impl ToString) -> ArchiveError {
    ArchiveError { file: file.to_string(), detail: detail.to_string() }
}

fn staged_error(path: &Path, detail: impl ToString) -> ArchiveError {
    error(path.display(), detail)
}

/// One archive file, read back whole.
pub struct ArchiveFile {
    /// How errors name it.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The archive of one run, as the state store keeps it.
pub struct Archive<'a> {
    state: &'a dyn StateStore,
    run: RunId,
}

impl<'a> Archive<'a> {
    pub fn new(state: &'a dyn StateStore, run: RunId) -> Archive<'a> {
        Archive { state, run }
    }

    pub fn file(&self, name: &str) -> Result<ArchiveFile, ArchiveError> {
        let label = format!("run {}/{name}", self.run);
        match self.state.archive(self.run, name) {
            Ok(Some(bytes)) => Ok(ArchiveFile { name: label, bytes }),
            Ok(None) => Err(error(label, "not kept: the run archived nothing, or it was pruned (`keep_run_archives`)")),
            Err(e) => Err(error(label, e)),
        }
    }

    /// Whether the run's archive is kept (its `meta.json` is).
    pub fn is_kept(&self) -> bool {
        matches!(self.state.archive(self.run, META), Ok(Some(_)))
    }

    pub fn meta(&self) -> Result<Meta, ArchiveError> {
        read_meta(&self.file(META)?)
    }

    /// The run's plan, with the meta it was read by.
    pub fn plan(&self) -> Result<(Meta, Plan), ArchiveError> {
        let meta = self.meta()?;
        let plan = read_plan(&self.file(PLAN)?, &meta)?;
        Ok((meta, plan))
    }

    /// A row stream ([`SOURCE`], [`DESTINATION`], [`DESIRED`]), page by page.
    pub fn pages(&self, name: &str) -> Result<Vec<Table>, ArchiveError> {
        read_pages(&self.file(name)?)
    }
}

/// Moves every file staged in `dir` into the state store's archive of `run`
/// (appending to a file already kept, as an approval's outcomes do), then
/// removes `dir`. A file is removed once it is kept, so a publish cut short
/// by a refused write leaves only what was not.
pub(crate) fn publish(state: &dyn StateStore, run: RunId, dir: &Path) -> Result<(), ArchiveError> {
    let entries = std::fs::read_dir(dir).map_err(|e| staged_error(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| staged_error(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        let bytes = std::fs::read(&path).map_err(|e| staged_error(&path, e))?;
        // A refusal because the lease passed on stops the run like any
        // other fenced write: its record is refused next.
        state.append_archive(run, name, &bytes).map_err(|e| error(format!("run {run}/{name}"), e))?;
        std::fs::remove_file(&path).map_err(|e| staged_error(&path, e))?;
    }
    std::fs::remove_dir(dir).map_err(|e| staged_error(dir, e))
}

/// What the archive says about its run besides the streams.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Meta {
    pub run: RunId,
    pub pipeline: String,
    /// The owned fields the plan compared.
    pub columns: Vec<String>,
    /// The destination fingerprint the plan was made against (hex).
    pub fingerprint: String,
    pub destination_rows: u64,
    pub desired_rows: u64,
    pub unchanged: u64,
    pub blocked: Option<String>,
    /// Plugin name → sha256.
    pub plugins: std::collections::BTreeMap<String, String>,
    /// Reconcile runs: the drifted keys left out of the plan because the
    /// event stream brings them to a newer state (a replay leaves them out
    /// too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_to_stream: Vec<String>,
}

fn compressed_writer(path: &Path) -> Result<zstd::Encoder<'static, BufWriter<File>>, ArchiveError> {
    let file = File::create(path).map_err(|e| staged_error(path, e))?;
    zstd::Encoder::new(BufWriter::new(file), ZSTD_LEVEL).map_err(|e| staged_error(path, e))
}

fn compressed_lines(file: &ArchiveFile) -> Result<impl Iterator<Item = Result<String, ArchiveError>>, ArchiveError> {
    let decoder = zstd::Decoder::new(&file.bytes[..]).map_err(|e| error(&file.name, e))?;
    Ok(BufReader::new(decoder).lines().map(|line| line.map_err(|e| error(&file.name, e))))
}

/// A stream of rows in pages, written as they pass.
pub(crate) struct RowWriter {
    path: PathBuf,
    out: zstd::Encoder<'static, BufWriter<File>>,
    line: Vec<u8>,
}

impl RowWriter {
    pub(crate) fn create(path: PathBuf) -> Result<RowWriter, ArchiveError> {
        Ok(RowWriter { out: compressed_writer(&path)?, path, line: Vec::with_capacity(256) })
    }

    pub(crate) fn page(&mut self, table: &Table) -> Result<(), ArchiveError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &json!({ "columns": table.columns })).expect("columns serialise");
        self.line.push(b'\n');
        for row in 0..table.len() {
            self.line.extend_from_slice(b"[");
            serde_json::to_writer(&mut self.line, table.key(row)).expect("keys serialise");
            for column in &table.values {
                self.line.push(b',');
                serde_json::to_writer(&mut self.line, &Encoded(column.get(row))).expect("values serialise");
            }
            self.line.extend_from_slice(b"]\n");
        }
        self.out.write_all(&self.line).map_err(|e| staged_error(&self.path, e))
    }

    pub(crate) fn finish(self) -> Result<(), ArchiveError> {
        self.out.finish().and_then(|mut w| w.flush()).map_err(|e| staged_error(&self.path, e))
    }
}

/// A page read back from a row stream: its columns and rows.
type ArchivedPage = (Vec<String>, Vec<Row>);

/// Reads a row stream back, page by page.
pub fn read_pages(file: &ArchiveFile) -> Result<Vec<Table>, ArchiveError> {
    let path = &file.name;
    let mut pages: Vec<ArchivedPage> = Vec::new();
    for line in compressed_lines(file)? {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| error(path, e))?;
        match value {
            serde_json::Value::Object(mut header) => {
                let columns = serde_json::from_value(header.remove("columns").unwrap_or_default())
                    .map_err(|e| error(path, format!("bad page header: {e}")))?;
                pages.push((columns, Vec::new()));
            }
            serde_json::Value::Array(items) => {
                let (columns, rows) = pages.last_mut().ok_or_else(|| error(path, "a row before any page header"))?;
                let row = decode_row(&items).map_err(|e| error(path, e))?;
                if row.values.len() != columns.len() {
                    let found =
                        format!("row `{}` has {} values for {} columns", row.key, row.values.len(), columns.len());
                    return Err(error(path, found));
                }
                rows.push(row);
            }
            other => return Err(error(path, format!("unexpected line `{other}`"))),
        }
    }
    // Laid out as a plugin's table would be, and held to the same check.
    pages
        .into_iter()
        .map(|(columns, rows)| {
            let table = Table::from_rows(columns, &rows);
            table.check().map(|()| table).map_err(|e| error(path, format!("a page that is no table: {e}")))
        })
        .collect()
}

fn decode_row(items: &[serde_json::Value]) -> Result<Row, String> {
    let (key, values) = items.split_first().ok_or("an empty row")?;
    Ok(Row {
        key: key.as_str().ok_or("a row key that is not text")?.to_string(),
        values: values.iter().map(decode_value).collect::<Result<_, _>>()?,
    })
}

fn encode_row(row: &Row) -> serde_json::Value {
    let mut items = vec![serde_json::Value::String(row.key.clone())];
    items.extend(row.values.iter().map(|v| encode_value(v.into())));
    serde_json::Value::Array(items)
}

/// Writes the plan, one operation per line.
pub(crate) fn write_plan(dir: &Path, plan: &Plan) -> Result<(), ArchiveError> {
    let path = dir.join(PLAN);
    let mut out = compressed_writer(&path)?;
    let mut write = |line: serde_json::Value| writeln!(out, "{line}").map_err(|e| staged_error(&path, e));
    write(json!({ "columns": plan.columns }))?;
    for key in &plan.deletes {
        write(json!({ "delete": key }))?;
    }
    for update in &plan.updates {
        write(json!({ "update": encode_row(&update.row), "changed": update.changed }))?;
    }
    for row in &plan.creates {
        write(json!({ "create": encode_row(row) }))?;
    }
    for conflict in &plan.held {
        write(json!({ "held": conflict }))?;
    }
    out.finish().and_then(|mut w| w.flush()).map_err(|e| staged_error(&path, e))
}

/// Reads a plan back; counts that are not operations come from `meta`.
pub fn read_plan(file: &ArchiveFile, meta: &Meta) -> Result<Plan, ArchiveError> {
    let path = &file.name;
    let mut plan = Plan {
        unchanged: meta.unchanged,
        desired_rows: meta.desired_rows,
        destination_rows: meta.destination_rows,
        fingerprint: u64::from_str_radix(&meta.fingerprint, 16)
            .map_err(|e| error(path, format!("its meta.json's fingerprint: {e}")))?,
        ..Plan::default()
    };
    for line in compressed_lines(file)? {
        let line = line?;
        let mut value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line).map_err(|e| error(path, e))?;
        let bad = |e: String| error(path, format!("{e} in `{line}`"));
        // A row must fit the plan's columns (the line that gives them comes
        // first): an edited or damaged archive must not reach a destination.
        let columns = &plan.columns;
        let row_of = |v: Option<serde_json::Value>| -> Result<Row, ArchiveError> {
            let row = match v {
                Some(serde_json::Value::Array(items)) => decode_row(&items).map_err(bad)?,
                _ => return Err(bad("no row".into())),
            };
            if row.values.len() != columns.len() {
                let found = format!("row `{}` has {} values for {} columns", row.key, row.values.len(), columns.len());
                return Err(bad(found));
            }
            Ok(row)
        };
        if let Some(columns) = value.remove("columns") {
            plan.columns = serde_json::from_value(columns).map_err(|e| bad(e.to_string()))?;
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = plan.columns.iter().find(|column| !seen.insert(*column)) {
                return Err(bad(format!("column `{twice}` appears twice")));
            }
        } else if let Some(key) = value.remove("delete") {
            plan.deletes.push(key.as_str().ok_or_else(|| bad("a delete without a key".into()))?.to_string());
        } else if value.contains_key("update") {
            let row = row_of(value.remove("update"))?;
            let changed: Vec<String> =
                serde_json::from_value(value.remove("changed").unwrap_or_default()).map_err(|e| bad(e.to_string()))?;
            if let Some(field) = changed.iter().find(|field| !plan.columns.contains(field)) {
                return Err(bad(format!("changed field `{field}` is not one of the plan's columns")));
            }
            plan.updates.push(RowUpdate { row, changed });
        } else if value.contains_key("create") {
            plan.creates.push(row_of(value.remove("create"))?);
        } else if let Some(held) = value.remove("held") {
            let conflict: Conflict = serde_json::from_value(held).map_err(|e| bad(e.to_string()))?;
            plan.held.push(conflict);
        } else {
            return Err(bad("an unknown operation".into()));
        }
    }
    Ok(plan)
}

pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> Result<(), ArchiveError> {
    let path = dir.join(META);
    let text = serde_json::to_string_pretty(meta).expect("meta serialises");
    std::fs::write(&path, text).map_err(|e| staged_error(&path, e))
}

pub fn read_meta(file: &ArchiveFile) -> Result<Meta, ArchiveError> {
    serde_json::from_slice(&file.bytes).map_err(|e| error(&file.name, e))
}

/// The outcome of every operation, appended as they come back.
pub(crate) struct OutcomeWriter {
    path: PathBuf,
    out: zstd::Encoder<'static, BufWriter<File>>,
}

impl OutcomeWriter {
    pub(crate) fn create(dir: &Path) -> Result<OutcomeWriter, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|e| staged_error(dir, e))?;
        let path = dir.join(OUTCOMES);
        Ok(OutcomeWriter { out: compressed_writer(&path)?, path })
    }

    pub(crate) fn record(
        &mut self,
        op: &str,
        key: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), ArchiveError> {
        let line = json!({ "op": op, "key": key, "outcome": outcome, "error": detail });
        writeln!(self.out, "{line}").map_err(|e| staged_error(&self.path, e))
    }

    pub(crate) fn finish(self) -> Result<(), ArchiveError> {
        self.out.finish().and_then(|mut w| w.flush()).map_err(|e| staged_error(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchost_model::Value;

    /// A staged file, read back as the store would give it.
    fn staged(dir: &Path, name: &str) -> ArchiveFile {
        ArchiveFile { name: name.to_string(), bytes: std::fs::read(dir.join(name)).unwrap() }
    }

    #[test]
    fn pages_and_plans_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let columns = vec!["a".to_string(), "b".to_string()];
        let rows = vec![
            Row { key: "k1".into(), values: vec![Value::Integer(1), Value::Json("{\"x\":1}".into())] },
            Row { key: "k2".into(), values: vec![Value::Float(0.5), Value::Null] },
        ];
        let mut writer = RowWriter::create(dir.path().join("source.jsonl.zst")).unwrap();
        let pages = vec![Table::from_rows(columns.clone(), &rows), Table::empty(columns[..1].to_vec())];
        for page in &pages {
            writer.page(page).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(read_pages(&staged(dir.path(), SOURCE)).unwrap(), pages);

        let plan = Plan {
            columns,
            creates: vec![rows[0].clone()],
            updates: vec![RowUpdate { row: rows[1].clone(), changed: vec!["a".into()] }],
            deletes: vec!["gone".into()],
            unchanged: 7,
            held: vec![Conflict { key: "x".into(), other: "y".into(), field: "b".into(), value: "1".into() }],
            desired_rows: 9,
            destination_rows: 8,
            fingerprint: 0xfeed,
        };
        write_plan(dir.path(), &plan).unwrap();
        let meta =
            Meta { fingerprint: "feed".into(), unchanged: 7, desired_rows: 9, destination_rows: 8, ..Meta::default() };
        let back = read_plan(&staged(dir.path(), PLAN), &meta).unwrap();
        assert_eq!(back.creates, plan.creates);
        assert_eq!(back.updates, plan.updates);
        assert_eq!(back.deletes, plan.deletes);
        assert_eq!(back.held, plan.held);
        assert_eq!((back.unchanged, back.fingerprint), (7, 0xfeed));
    }

    /// Found by the `run_archive` fuzz target: a damaged plan read back with
    /// rows that did not fit its columns, and would have gone to a destination.
    #[test]
    fn a_damaged_archive_is_refused_naming_its_file_and_line() {
        let meta = Meta { fingerprint: "0".into(), ..Meta::default() };
        let file = |name: &str, lines: &str| ArchiveFile {
            name: format!("run 7/{name}"),
            bytes: zstd::encode_all(lines.as_bytes(), 1).unwrap(),
        };
        let refusal = |lines: &str| read_plan(&file(PLAN, lines), &meta).unwrap_err().to_string();
        let short = refusal("{\"columns\":[\"a\",\"b\"]}\n{\"create\":[\"k\",1]}\n");
        assert!(
            short.contains("run 7/plan.jsonl.zst") && short.contains("row `k` has 1 values for 2 columns"),
            "{short}"
        );
        let unknown = refusal("{\"columns\":[\"a\"]}\n{\"update\":[\"k\",1],\"changed\":[\"z\"]}\n");
        assert!(unknown.contains("changed field `z` is not one of the plan's columns"), "{unknown}");
        let twice = refusal("{\"columns\":[\"a\",\"a\"]}\n");
        assert!(twice.contains("column `a` appears twice"), "{twice}");

        let page = read_pages(&file(SOURCE, "{\"columns\":[\"a\",\"a\"]}\n[\"k\",1,2]\n")).unwrap_err().to_string();
        assert!(page.contains("run 7/source.jsonl.zst") && page.contains("column `a` appears twice"), "{page}");
    }
}
