//! `synchost plugin run`: one call into a plugin file, with no host directory,
//! tenant file or pinned digest, printing what the plugin returned. What a
//! connector author runs after each build: grants come from flags, config
//! from a JSON file, and the compiled code from the user's cache, so that a
//! rebuilt plugin compiles once and an unchanged one not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use synchost_model::{Action, Change, Operation, OperationBatch, Row, Table, row_to_json, value_from_json};

use crate::cli::out::outln;
use crate::config::{AllowedHost, DirGrant};
use crate::plugin::{
    CompiledPlugin, DestinationInstance, EngineOptions, PluginEngine, PluginKind, PluginSetup, SourceInstance,
    TransformInstance,
};

/// What a plugin is run with: its file, config and grants.
#[derive(Args)]
pub struct RunTarget {
    /// The component file (.wasm).
    pub file: PathBuf,
    /// The plugin's config, a JSON file (what `config = {…}` in a tenant
    /// file would hold); none: `{}`.
    #[arg(long, value_name = "CONFIG.json")]
    pub plugin_config: Option<PathBuf>,
    /// A directory the plugin may read, as HOST:GUEST, or HOST:GUEST:rw to
    /// let it write (repeatable).
    #[arg(long = "dir", value_name = "HOST:GUEST[:rw]")]
    pub dirs: Vec<String>,
    /// A host the plugin may reach over HTTP, as in `allowed_hosts`
    /// (repeatable): `api.example.com`, `127.0.0.1:8080`.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allowed_hosts: Vec<String>,
    /// A secret the plugin may read, NAME=VALUE (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// A TOML file of `[connections.NAME]` and `[streams.NAME]` tables, as a
    /// tenant file declares them; the plugin is granted every one.
    #[arg(long, value_name = "GRANTS.toml")]
    pub grants: Option<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The call to make.
#[derive(Subcommand)]
pub enum Call {
    /// The plugin's info().
    Info,
    /// Every page of a source's or destination's snapshot.
    Snapshot {
        /// Stop after this many pages.
        #[arg(long)]
        max_pages: Option<u64>,
    },
    /// One batch of a source's events after CURSOR (from the start if none).
    Events {
        #[arg(long)]
        cursor: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        max: u32,
    },
    /// A transform over the rows of a CSV (header line first) or JSON lines
    /// file (one object per line).
    Transform {
        #[arg(long, value_name = "FILE.csv|FILE.jsonl")]
        input: PathBuf,
        /// The column (or field) holding each row's key.
        #[arg(long, default_value = "id")]
        key: String,
    },
    /// Operations applied by a destination, from a JSON lines file in the form
    /// `synchost dlq list` shows them: {"upsert": {"key": …, "fields": {…}}},
    /// {"create": …}, {"update": {…, "changed": […]}}, {"delete": KEY}.
    Apply {
        #[arg(long, value_name = "FILE.jsonl")]
        ops: PathBuf,
    },
}

/// The compiled-code cache `plugin run`, `plugin test` and `plugin inspect`
/// share: `$XDG_CACHE_HOME/synchost/compiled` (or `~/.cache/…`), as there is
/// no host directory to keep it in.
pub(super) fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("synchost").join("compiled"))
}

/// The engine and the compiled plugin of `file`.
pub(super) fn compile(file: &Path) -> anyhow::Result<(PluginEngine, std::sync::Arc<CompiledPlugin>, String)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let name = file.file_stem().map_or_else(|| "plugin".to_string(), |s| s.to_string_lossy().into_owned());
    let engine = PluginEngine::new(EngineOptions { compiled_cache_dir: user_cache_dir(), ..EngineOptions::default() })?;
    let compiled = engine.compile(&name, &bytes)?;
    Ok((engine, compiled, name))
}

impl RunTarget {
    /// The grants and config given on the command line.
    pub(super) fn setup(&self, name: &str) -> anyhow::Result<PluginSetup> {
        let mut setup = PluginSetup::bare(name);
        setup.tenant = "plugin-run".into();
        if let Some(file) = &self.plugin_config {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
            setup.config = serde_json::from_str(&text).with_context(|| format!("`{}` is not JSON", file.display()))?;
            if !setup.config.is_object() {
                bail!("`{}`: a plugin's config is a JSON object", file.display());
            }
        }
        for dir in &self.dirs {
            let (host, rest) = dir.split_once(':').with_context(|| format!("--dir {dir}: write HOST:GUEST[:rw]"))?;
            let (guest, write) = match rest.rsplit_once(':') {
                Some((guest, "rw")) => (guest, true),
                Some((guest, "ro")) => (guest, false),
                _ => (rest, false),
            };
            let host = std::path::absolute(host).with_context(|| format!("--dir {dir}"))?;
            if !host.is_dir() {
                bail!("--dir {dir}: `{}` is not a directory", host.display());
            }
            setup.dirs.push(DirGrant { host, guest: guest.to_string(), write });
        }
        for host in &self.allowed_hosts {
            setup
                .allowed_hosts
                .push(AllowedHost::parse(host).map_err(|e| anyhow::anyhow!("--allow-host {host}: {e}"))?);
        }
        if let Some(file) = &self.grants {
            let (connections, streams) = crate::config::load_grants(file)
                .map_err(|e| anyhow::anyhow!("--grants {}: {} problem(s):\n{e}", file.display(), e.0.len()))?;
            setup.connections = connections;
            setup.streams = streams;
        }
        for secret in &self.secrets {
            let (name, value) = secret.split_once('=').context("--secret: write NAME=VALUE")?;
            setup.secrets.insert(name.to_string(), value.to_string());
        }
        Ok(setup)
    }
}

pub(super) fn run(target: RunTarget, call: Call) -> anyhow::Result<ExitCode> {
    let (engine, compiled, name) = compile(&target.file)?;
    let setup = target.setup(&name)?;
    let json = target.json;
    let wrong_kind = |wanted: &str| {
        anyhow::anyhow!("`{}` is a {} plugin: `{wanted}` is not one of its calls", target.file.display(), compiled.kind)
    };
    match call {
        Call::Info => {
            let info = crate::plugin::plugin_info(&engine, &compiled, &setup)?;
            if json {
                outln!(
                    "{}",
                    json!({"name": info.name, "version": info.version, "description": info.description, "wit_version": info.wit_version})
                );
            } else {
                outln!("{} {} (WIT {}): {}", info.name, info.version, info.wit_version, info.description);
            }
        }
        Call::Snapshot { max_pages } => {
            let mut next_page: NextPage = match compiled.kind {
                PluginKind::Source => {
                    let mut source = SourceInstance::new(&engine, &compiled, &setup)?;
                    Box::new(move |token| Ok(source.snapshot(token)?))
                }
                PluginKind::Destination => {
                    let mut destination = DestinationInstance::new(&engine, &compiled, &setup)?;
                    Box::new(move |token| Ok(destination.snapshot(token)?))
                }
                PluginKind::Transform => return Err(wrong_kind("snapshot")),
            };
            let (mut token, mut pages, mut rows) = (None::<String>, 0u64, 0u64);
            loop {
                let page = next_page(token.as_deref())?;
                pages += 1;
                rows += page.rows.len() as u64;
                print_table(&page.rows, json);
                token = page.next;
                if token.is_none() || max_pages.is_some_and(|max| pages >= max) {
                    break;
                }
            }
            let more = token.map(|t| format!(", more after token {t:?}")).unwrap_or_default();
            eprintln!("{rows} row(s) in {pages} page(s){more}");
        }
        Call::Events { cursor, max } => {
            if compiled.kind != PluginKind::Source {
                return Err(wrong_kind("events"));
            }
            let mut source = SourceInstance::new(&engine, &compiled, &setup)?;
            let batch = source.events(cursor.as_deref(), max)?;
            for event in &batch.events {
                let line = match &event.change {
                    Change::Upsert(row) => {
                        json!({"position": event.position, "upsert": {"key": row.key, "fields": row_to_json(&batch.columns, row)}})
                    }
                    Change::Delete(key) => json!({"position": event.position, "delete": key}),
                };
                outln!("{line}");
            }
            if json {
                outln!("{}", json!({ "cursor": batch.cursor }));
            } else {
                eprintln!("{} event(s); resume after cursor {:?}", batch.events.len(), batch.cursor);
            }
        }
        Call::Transform { input, key } => {
            if compiled.kind != PluginKind::Transform {
                return Err(wrong_kind("transform"));
            }
            let table = read_rows(&input, &key)?;
            let mut transform = TransformInstance::new(&engine, &compiled, &setup)?;
            let out = transform.transform(&table)?;
            print_table(&out.rows, json);
            eprintln!("{} row(s) in, {} row(s) out", table.len(), out.rows.len());
        }
        Call::Apply { ops } => {
            if compiled.kind != PluginKind::Destination {
                return Err(wrong_kind("apply"));
            }
            let batches = read_operations(&ops)?;
            let mut destination = DestinationInstance::new(&engine, &compiled, &setup)?;
            let mut failed = false;
            for batch in &batches {
                let outcomes = destination.apply(batch)?;
                for (operation, outcome) in batch.operations.iter().zip(&outcomes) {
                    let (action, key) = (operation.action.name(), operation.action.key());
                    let line = match outcome {
                        Ok(()) => json!({"key": key, "action": action, "outcome": "applied"}),
                        Err(error) => {
                            failed = true;
                            json!({"key": key, "action": action, "outcome": "failed", "error": error.to_string()})
                        }
                    };
                    if json {
                        outln!("{line}");
                    } else {
                        outln!("{action} {key}: {}", line.get("error").and_then(|e| e.as_str()).unwrap_or("applied"));
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The next snapshot page after a token, from a source or a destination.
type NextPage<'a> = Box<dyn FnMut(Option<&str>) -> anyhow::Result<synchost_model::Page> + 'a>;

/// A table's rows, as text or one JSON object per line.
fn print_table(table: &Table, json: bool) {
    for row in table.to_rows() {
        let fields = row_to_json(&table.columns, &row);
        if json {
            outln!("{}", json!({"key": row.key, "fields": fields}));
        } else {
            outln!("{}  {fields}", row.key);
        }
    }
}

/// The rows of a CSV or JSON lines file (by its extension), keyed by `key`.
pub(super) fn read_rows(file: &Path, key: &str) -> anyhow::Result<Table> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let records: Vec<BTreeMap<String, serde_json::Value>> = if file.extension().is_some_and(|e| e == "csv") {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().with_context(|| format!("{}: no header line", file.display()))?.clone();
        let mut records = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.with_context(|| format!("{}: record {}", file.display(), i + 1))?;
            records.push(
                header
                    .iter()
                    .zip(record.iter())
                    .map(|(column, cell)| (column.to_string(), serde_json::Value::String(cell.to_string())))
                    .collect(),
            );
        }
        records
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).with_context(|| format!("{}:{}: not a JSON object", file.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut columns: Vec<String> = Vec::new();
    for record in &records {
        for column in record.keys() {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
    }
    let mut rows = Vec::with_capacity(records.len());
    for (i, mut record) in records.into_iter().enumerate() {
        let key = match record.get(key) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Null) | None => {
                bail!("{}: row {} has no `{key}` (pass --key COLUMN)", file.display(), i + 1)
            }
            Some(other) => other.to_string(),
        };
        let values =
            columns.iter().map(|c| value_from_json(record.remove(c).unwrap_or(serde_json::Value::Null))).collect();
        rows.push(Row { key, values });
    }
    Ok(Table::from_rows(columns, &rows))
}

/// The operations of a JSON lines file, in batches of operations on the same
/// columns (one `apply` call each), in the file's order.
fn read_operations(file: &Path) -> anyhow::Result<Vec<OperationBatch>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut batches: Vec<OperationBatch> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let place = format!("{}:{}", file.display(), i + 1);
        let json: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{place}: not JSON"))?;
        let (columns, action) = crate::sync::operation_from_json(&json).map_err(|e| anyhow::anyhow!("{place}: {e}"))?;
        let operation = Operation { idempotency_key: format!("plugin-run@{}#{}", i + 1, action.key()), action };
        let fits = |batch: &OperationBatch| matches!(operation.action, Action::Delete(_)) || batch.columns == columns;
        match batches.last_mut() {
            Some(batch) if fits(batch) => batch.operations.push(operation),
            _ => batches.push(OperationBatch { columns, operations: vec![operation] }),
        }
    }
    Ok(batches)
}
