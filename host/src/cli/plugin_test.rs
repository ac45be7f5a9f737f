//! `synchost plugin test`: acceptance checks of a plugin file for its kind,
//! like Airbyte's connector acceptance tests: what the host relies on of every
//! source, destination or transform, checked by calling the plugin as a sync
//! would, one report line per check.
//!
//! A destination is written to: run it against a scratch directory or
//! database. Fixtures (`--fixtures DIR`): `input.csv` or `input.jsonl`, rows
//! a transform takes; `bad.csv` or `bad.jsonl`, rows it must reject;
//! `rows.jsonl`, records (`{"key": …, "fields": {…}}`) a destination is
//! tested with, in place of generated ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use synchost_model::{Action, Change, Operation, OperationBatch, Page, Row, RowUpdate, Table, Value, row_to_json};

use super::plugin_run::{RunTarget, compile, read_rows};
use crate::cli::out::outln;
use crate::plugin::{
    DestinationInstance, PluginEngine, PluginError, PluginKind, PluginSetup, SourceInstance, TransformInstance,
    WitError,
};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Pass,
    Fail,
    /// Not applicable here (the plugin does not support the call, or no
    /// fixture was given); never counted as passed.
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    outcome: Outcome,
    detail: String,
}

/// The checks' results, in order.
#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, check: &'static str, result: Result<String, Finding>) {
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Pass, detail),
            Err(Finding::Fail(detail)) => (Outcome::Fail, detail),
            Err(Finding::Skip(detail)) => (Outcome::Skip, detail),
        };
        self.0.push(Check { check, outcome, detail });
    }
}

/// Why a check did not pass.
#[derive(Clone)]
enum Finding {
    Fail(String),
    Skip(String),
}

impl From<PluginError> for Finding {
    fn from(error: PluginError) -> Finding {
        Finding::Fail(error.to_string())
    }
}

fn fail<T>(detail: impl Into<String>) -> Result<T, Finding> {
    Err(Finding::Fail(detail.into()))
}

/// Whether a call failed because the plugin does not do it: a config error
/// that says "does not support", as the SDKs' default answer does. Any other
/// error fails the check: a source that cannot reach its API is not skipped.
fn unsupported(error: &PluginError) -> bool {
    matches!(error, PluginError::Returned { error: WitError::Config(message), .. } if message.contains("does not support"))
}

pub(super) fn run(target: RunTarget, fixtures: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (engine, compiled, name) = compile(&target.file)?;
    let setup = target.setup(&name)?;
    let fixtures = Fixtures { dir: fixtures };
    let mut report = Report::default();
    report.add("info", info(&engine, &compiled, &setup));
    match compiled.kind {
        PluginKind::Source => source_checks(&engine, &compiled, &setup, &mut report),
        PluginKind::Destination => destination_checks(&engine, &compiled, &setup, &fixtures, &mut report)?,
        PluginKind::Transform => transform_checks(&engine, &compiled, &setup, &fixtures, &mut report)?,
    }
    let failed = report.0.iter().filter(|c| c.outcome == Outcome::Fail).count();
    if target.json {
        super::output::print_json(&report.0);
    } else {
        outln!("{} ({} plugin)", target.file.display(), compiled.kind);
        for check in &report.0 {
            let word = match check.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            outln!("  {word}  {:<34} {}", check.check, check.detail);
        }
        let count = |outcome| report.0.iter().filter(|c| c.outcome == outcome).count();
        outln!("{} passed, {failed} failed, {} skipped", count(Outcome::Pass), count(Outcome::Skip));
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

type Compiled = std::sync::Arc<crate::plugin::CompiledPlugin>;

fn info(engine: &PluginEngine, compiled: &Compiled, setup: &PluginSetup) -> Result<String, Finding> {
    let info = crate::plugin::plugin_info(engine, compiled, setup)?;
    if info.name.trim().is_empty() || info.version.trim().is_empty() {
        return fail(format!("info() must name the plugin and its version: {:?} {:?}", info.name, info.version));
    }
    Ok(format!("{} {} built against WIT {}", info.name, info.version, info.wit_version))
}

// --- sources ---

/// How many pages or batches a check reads before it calls the plugin endless.
const MAX_CALLS: usize = 10_000;

/// Reads a snapshot from its first page to its last through `next_page`,
/// handing each page's number and rows to `each`; one that does not end
/// within [`MAX_CALLS`] pages fails. Returns how many pages it read.
fn read_snapshot(
    mut next_page: impl FnMut(Option<&str>) -> Result<Page, Finding>,
    mut each: impl FnMut(usize, &Table) -> Result<(), Finding>,
) -> Result<usize, Finding> {
    let (mut token, mut pages) = (None::<String>, 0);
    loop {
        let page = next_page(token.as_deref())?;
        pages += 1;
        each(pages, &page.rows)?;
        token = page.next;
        if token.is_none() {
            return Ok(pages);
        }
        if pages >= MAX_CALLS {
            return fail(format!("the snapshot did not end within {MAX_CALLS} pages"));
        }
    }
}

fn source_checks(engine: &PluginEngine, compiled: &Compiled, setup: &PluginSetup, report: &mut Report) {
    let snapshot = || -> Result<(BTreeMap<String, Vec<Value>>, usize), Finding> {
        let mut source = SourceInstance::new(engine, compiled, setup)?;
        let mut rows = BTreeMap::new();
        let next_page = |token: Option<&str>| match source.snapshot(token) {
            Err(e) if unsupported(&e) => Err(Finding::Skip(format!("no snapshots here: {e}"))),
            other => Ok(other?),
        };
        let pages = read_snapshot(next_page, |page, table| {
            for row in table.to_rows() {
                if rows.insert(row.key.clone(), row.values).is_some() {
                    return fail(format!("key `{}` comes twice in one snapshot (page {page})", row.key));
                }
            }
            Ok(())
        })?;
        Ok((rows, pages))
    };
    let first = snapshot();
    let pages = match &first {
        Ok((rows, pages)) => Ok(format!("{} row(s) in {pages} page(s), every key once", rows.len())),
        Err(finding) => Err(finding.clone()),
    };
    report.add("snapshot pages end, keys unique", pages);
    report.add(
        "two snapshots agree",
        match &first {
            Ok((rows, _)) => snapshot().and_then(|(again, _)| {
                if &again == rows {
                    Ok(format!("{} row(s) alike", rows.len()))
                } else {
                    let differ = rows.keys().chain(again.keys()).find(|k| rows.get(*k) != again.get(*k));
                    fail(format!("the second snapshot differs, first at key `{}`", differ.cloned().unwrap_or_default()))
                }
            }),
            Err(_) => Err(Finding::Skip("no snapshot to compare".into())),
        },
    );
    report.add("a token it never gave is refused", foreign_token(engine, compiled, setup));
    report.add("events resume from a cursor", events(engine, compiled, setup));
}

/// A page token the plugin never handed out must get an error (config or
/// rejected), not rows and not a trap.
fn foreign_token(engine: &PluginEngine, compiled: &Compiled, setup: &PluginSetup) -> Result<String, Finding> {
    let mut source = SourceInstance::new(engine, compiled, setup)?;
    match source.snapshot(Some("synchost-plugin-test: a token no plugin made")) {
        Err(PluginError::Returned { error: WitError::Config(e) | WitError::Rejected(e), .. }) => {
            Ok(format!("refused: {e}"))
        }
        Err(PluginError::Returned { error, .. }) => {
            fail(format!("refused as {error}, which the host would retry for ever: answer config or rejected"))
        }
        Err(e) => fail(format!("not answered with an error of the plugin's: {e}")),
        Ok(page) => fail(format!("answered with {} row(s) instead of an error", page.rows.len())),
    }
}

/// One event as compared between reads.
type Seen = (String, String);

/// Every event read, and after how many of them each returned cursor came.
type EventsRead = (Vec<Seen>, Vec<(usize, String)>);

/// Reads every event from the start, then again from a cursor it returned
/// part way: the second read must be the first's tail, nothing lost, nothing
/// repeated.
fn events(engine: &PluginEngine, compiled: &Compiled, setup: &PluginSetup) -> Result<String, Finding> {
    let read_all = |from: Option<String>| -> Result<EventsRead, Finding> {
        let mut source = SourceInstance::new(engine, compiled, setup)?;
        let (mut cursor, mut seen, mut cursors) = (from, Vec::new(), Vec::new());
        for _ in 0..MAX_CALLS {
            let batch = match source.events(cursor.as_deref(), 7) {
                Err(e) if unsupported(&e) => return Err(Finding::Skip(format!("no events here: {e}"))),
                other => other?,
            };
            for event in &batch.events {
                let change = match &event.change {
                    Change::Upsert(row) => format!("upsert {} {}", row.key, row_to_json(&batch.columns, row)),
                    Change::Delete(key) => format!("delete {key}"),
                };
                seen.push((event.position.clone(), change));
            }
            let done = batch.events.is_empty();
            cursors.push((seen.len(), batch.cursor.clone()));
            cursor = Some(batch.cursor);
            if done {
                return Ok((seen, cursors));
            }
        }
        fail(format!("the events did not end within {MAX_CALLS} batches"))
    };
    let (all, cursors) = read_all(None)?;
    if all.is_empty() {
        return Err(Finding::Skip("the source has no events to read here".into()));
    }
    let positions: BTreeSet<&String> = all.iter().map(|(p, _)| p).collect();
    if positions.len() != all.len() {
        return fail("two events share a position");
    }
    // A cursor from the middle of the read.
    let (at, cursor) = cursors.iter().find(|(at, _)| *at >= all.len() / 2).cloned().unwrap_or((0, String::new()));
    let (rest, _) = read_all(Some(cursor.clone()))?;
    if rest != all[at..] {
        let lost = all[at..].iter().filter(|e| !rest.contains(e)).count();
        let again = rest.iter().filter(|e| all[..at].contains(e)).count();
        return fail(format!(
            "resuming after cursor {cursor:?} read {} event(s) where {} follow it: {lost} lost, {again} repeated",
            rest.len(),
            all.len() - at
        ));
    }
    Ok(format!("{} event(s); after cursor {cursor:?} exactly the {} that follow", all.len(), rest.len()))
}

// --- destinations ---

/// The fixtures directory, if given.
struct Fixtures {
    dir: Option<PathBuf>,
}

impl Fixtures {
    /// `NAME.csv` or `NAME.jsonl` in the fixtures directory, if there.
    fn rows(&self, name: &str, key: &str) -> anyhow::Result<Option<(PathBuf, Table)>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        for extension in ["csv", "jsonl"] {
            let file = dir.join(format!("{name}.{extension}"));
            if file.exists() {
                return Ok(Some((file.clone(), read_rows(&file, key)?)));
            }
        }
        Ok(None)
    }

    /// `rows.jsonl`: records as `{"key": …, "fields": {…}}`.
    fn records(&self) -> anyhow::Result<Option<(Vec<String>, Vec<Row>)>> {
        let Some(file) = self.dir.as_ref().map(|dir| dir.join("rows.jsonl")).filter(|f| f.exists()) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read `{}`", file.display()))?;
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let json: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", file.display(), i + 1))?;
            let key = json["key"].as_str().with_context(|| format!("{}:{}: no \"key\"", file.display(), i + 1))?;
            let fields = json["fields"]
                .as_object()
                .with_context(|| format!("{}:{}: no \"fields\" object", file.display(), i + 1))?;
            records.push((key.to_string(), fields.clone()));
        }
        let columns: Vec<String> = records.first().map(|(_, f)| f.keys().cloned().collect()).unwrap_or_default();
        if records.len() < 3 || columns.len() < 2 || records.iter().any(|(_, f)| f.keys().ne(columns.iter())) {
            anyhow::bail!("{}: give at least 3 records with the same 2 or more fields", file.display());
        }
        let rows = records
            .into_iter()
            .map(|(key, mut fields)| Row {
                key,
                values: columns.iter().map(|c| synchost_model::value_from_json(fields.remove(c).unwrap())).collect(),
            })
            .collect();
        Ok(Some((columns, rows)))
    }
}

/// A destination under test: operations numbered for their idempotency keys.
struct Dest<'a> {
    instance: DestinationInstance,
    columns: &'a [String],
    run: String,
    next: u64,
}

impl Dest<'_> {
    fn op(&mut self, action: Action) -> Operation {
        self.next += 1;
        Operation { idempotency_key: format!("synchost-plugin-test-{}-{}", self.run, self.next), action }
    }

    fn apply(&mut self, columns: &[String], operations: Vec<Operation>) -> Result<Vec<Result<(), WitError>>, Finding> {
        let batch = OperationBatch { columns: columns.to_vec(), operations };
        let outcomes = self.instance.apply(&batch)?;
        if outcomes.len() != batch.operations.len() {
            return fail(format!("{} outcomes for {} operations", outcomes.len(), batch.operations.len()));
        }
        Ok(outcomes)
    }

    fn apply_all(&mut self, operations: Vec<Operation>) -> Result<(), Finding> {
        let columns = self.columns.to_vec();
        for (outcome, op) in self.apply(&columns, operations.clone())?.into_iter().zip(&operations) {
            if let Err(e) = outcome {
                return fail(format!("{} {} failed: {e}", op.action.name(), op.action.key()));
            }
        }
        Ok(())
    }

    /// The destination's records with these keys: key → field → value.
    fn records(&mut self, keys: &[&str]) -> Result<BTreeMap<String, serde_json::Value>, Finding> {
        let mut found = BTreeMap::new();
        let instance = &mut self.instance;
        read_snapshot(
            |token| Ok(instance.snapshot(token)?),
            |_, table| {
                for row in table.to_rows() {
                    if keys.contains(&row.key.as_str()) {
                        found.insert(row.key.clone(), row_to_json(&table.columns, &row));
                    }
                }
                Ok(())
            },
        )?;
        Ok(found)
    }
}

fn destination_checks(
    engine: &PluginEngine,
    compiled: &Compiled,
    setup: &PluginSetup,
    fixtures: &Fixtures,
    report: &mut Report,
) -> anyhow::Result<()> {
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let (columns, rows) = fixtures.records()?.unwrap_or_else(|| {
        let columns = vec!["name".to_string(), "note".to_string()];
        let rows = (1..=3)
            .map(|i| Row {
                key: format!("synchost-test-{run}-{i}"),
                values: vec![Value::Text(format!("name {i}")), Value::Text(format!("note {i}"))],
            })
            .collect();
        (columns, rows)
    });
    let instance = match DestinationInstance::new(engine, compiled, setup) {
        Ok(instance) => instance,
        Err(e) => {
            report.add("apply and snapshot", Err(e.into()));
            return Ok(());
        }
    };
    let mut dest = Dest { instance, columns: &columns, run, next: 0 };
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let (first, second, third) = (&rows[0], &rows[1], &rows[2]);
    let fields = |row: &Row| row_to_json(&columns, row);

    // Creates, then what a snapshot shows of them.
    let creates = (|| {
        let ops = rows.iter().map(|row| dest.op(Action::Create(row.clone()))).collect();
        dest.apply_all(ops)?;
        let found = dest.records(&keys)?;
        for row in &rows {
            match found.get(&row.key) {
                Some(record) if contains(record, &fields(row)) => {}
                Some(record) => {
                    return fail(format!("record `{}` reads back as {record}, not {}", row.key, fields(row)));
                }
                None => return fail(format!("record `{}` is not in the snapshot after its create", row.key)),
            }
        }
        Ok(format!("{} record(s) created and read back", rows.len()))
    })();
    let created = creates.is_ok();
    report.add("creates show in a snapshot", creates);
    if !created {
        return Ok(());
    }

    // An update of one owned field leaves the record's other fields alone.
    report.add(
        "update keeps unowned fields",
        (|| {
            let mut changed = first.clone();
            changed.values[0] = Value::Text("changed by an update".into());
            let owned = vec![columns[0].clone()];
            let update = Row { key: first.key.clone(), values: vec![changed.values[0].clone()] };
            let op = dest.op(Action::Update(RowUpdate { row: update, changed: owned.clone() }));
            match dest.apply(&owned, vec![op])?.remove(0) {
                Ok(()) => {}
                Err(e) => return fail(format!("the update failed: {e}")),
            }
            let record = dest.records(&[&first.key])?.remove(&first.key).unwrap_or_default();
            if !contains(&record, &fields(&changed)) {
                return fail(format!("after updating only `{}`, the record reads {record}", columns[0]));
            }
            Ok(format!("`{}` changed, `{}` kept", columns[0], columns[1]))
        })(),
    );

    // Upserts: of an existing record and of a new one.
    report.add(
        "upsert creates and merges",
        (|| {
            let mut merged = second.clone();
            merged.values[1] = Value::Text("set by an upsert".into());
            let fresh = Row { key: format!("{}-upserted", third.key), values: third.values.clone() };
            let ops = vec![dest.op(Action::Upsert(merged.clone())), dest.op(Action::Upsert(fresh.clone()))];
            dest.apply_all(ops)?;
            let found = dest.records(&[&merged.key, &fresh.key])?;
            for row in [&merged, &fresh] {
                if !found.get(&row.key).is_some_and(|record| contains(record, &fields(row))) {
                    return fail(format!("record `{}` does not read {} after its upsert", row.key, fields(row)));
                }
            }
            let op = dest.op(Action::Delete(fresh.key.clone()));
            dest.apply_all(vec![op])?;
            Ok("an existing record merged, a new one created".into())
        })(),
    );

    // The same operation delivered twice (a batch read again after a crash)
    // takes effect once and is not refused.
    report.add(
        "redelivery takes effect once",
        (|| {
            let key = format!("{}-redelivered", third.key);
            let row = Row { key: key.clone(), values: third.values.clone() };
            let create = dest.op(Action::Create(row.clone()));
            dest.apply_all(vec![create.clone()])?;
            if let Err(e) = dest.apply(&columns, vec![create])?.remove(0) {
                return fail(format!("the create delivered again was refused: {e}"));
            }
            let found = dest.records(&[&key])?;
            let delete = dest.op(Action::Delete(key.clone()));
            dest.apply_all(vec![delete])?;
            match found.get(&key) {
                Some(record) if contains(record, &fields(&row)) => {
                    Ok("a create delivered twice left one record".into())
                }
                other => fail(format!("after a create delivered twice the record reads {other:?}")),
            }
        })(),
    );

    // A bad operation (an update of a record that does not exist) is
    // rejected on its own; the rest of its batch applies.
    report.add(
        "a bad operation fails alone",
        (|| {
            let ghost = Row { key: format!("{}-never-created", third.key), values: third.values.clone() };
            let mut good = third.clone();
            good.values[0] = Value::Text("applied beside a bad one".into());
            let ops = vec![
                dest.op(Action::Update(RowUpdate { row: ghost, changed: columns.clone() })),
                dest.op(Action::Upsert(good.clone())),
            ];
            let outcomes = dest.apply(&columns, ops)?;
            match &outcomes[0] {
                Err(WitError::Rejected(reason)) if !reason.trim().is_empty() => {}
                Err(WitError::Rejected(_)) => return fail("rejected without a reason"),
                Err(other) => return fail(format!("the bad operation failed as {other}, not rejected")),
                Ok(()) => return fail("an update of a record that does not exist was accepted"),
            }
            if let Err(e) = &outcomes[1] {
                return fail(format!("the good operation beside it failed too: {e}"));
            }
            let found = dest.records(&[&good.key])?;
            if !found.get(&good.key).is_some_and(|record| contains(record, &fields(&good))) {
                return fail("the good operation beside it did not apply");
            }
            Ok("the update of a missing record was rejected, its neighbour applied".into())
        })(),
    );

    // Deletes, which also leave the destination as the checks found it.
    report.add(
        "deletes remove",
        (|| {
            let ops = rows.iter().map(|row| dest.op(Action::Delete(row.key.clone()))).collect();
            dest.apply_all(ops)?;
            let left = dest.records(&keys)?;
            if let Some(key) = left.keys().next() {
                return fail(format!("record `{key}` is still in the snapshot after its delete"));
            }
            Ok(format!("{} record(s) deleted", rows.len()))
        })(),
    );
    Ok(())
}

/// Whether `record` holds every field of `wanted` with its value.
fn contains(record: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    wanted.as_object().is_some_and(|wanted| wanted.iter().all(|(k, v)| record.get(k) == Some(v)))
}

// --- transforms ---

fn transform_checks(
    engine: &PluginEngine,
    compiled: &Compiled,
    setup: &PluginSetup,
    fixtures: &Fixtures,
    report: &mut Report,
) -> anyhow::Result<()> {
    let key = "id";
    let Some((file, input)) = fixtures.rows("input", key)? else {
        report.add(
            "transform",
            Err(Finding::Skip("no input rows: give --fixtures DIR with input.csv or input.jsonl (key `id`)".into())),
        );
        return Ok(());
    };
    let transform = |table: &Table| -> Result<crate::plugin::Transformed, PluginError> {
        TransformInstance::new(engine, compiled, setup)?.transform(table)
    };
    let first = transform(&input);
    report.add(
        "origins name input rows",
        match &first {
            Ok(out) if out.origins.len() != out.rows.len() => {
                fail(format!("{} origins for {} output rows", out.origins.len(), out.rows.len()))
            }
            Ok(out) => match out.origins.iter().find(|o| **o as usize >= input.len()) {
                Some(o) => fail(format!("origin {o} is past the {} input rows", input.len())),
                None => Ok(format!(
                    "{} row(s) of {} gave {} row(s), each naming its input",
                    input.len(),
                    file.display(),
                    out.rows.len()
                )),
            },
            Err(e) => fail(e.to_string()),
        },
    );
    report.add(
        "output is deterministic",
        match (&first, transform(&input)) {
            (Ok(a), Ok(b)) if a.rows.to_rows() == b.rows.to_rows() && a.origins == b.origins => {
                Ok("the same input twice gave the same output".into())
            }
            (Ok(_), Ok(_)) => fail("the same input twice gave different output"),
            (_, Err(e)) => fail(e.to_string()),
            (Err(e), _) => fail(e.to_string()),
        },
    );
    report.add(
        "a bad row is rejected",
        match fixtures.rows("bad", key)? {
            None => Err(Finding::Skip("no bad.csv or bad.jsonl among the fixtures".into())),
            Some((file, bad)) => match transform(&bad) {
                Err(PluginError::Returned { error: WitError::Rejected(reason), .. }) if !reason.trim().is_empty() => {
                    Ok(format!("{}: rejected: {reason}", file.display()))
                }
                Err(e) => fail(format!("{}: failed, but not as rejected with a reason: {e}", file.display())),
                Ok(out) => fail(format!("{}: accepted ({} row(s) out)", file.display(), out.rows.len())),
            },
        },
    );
    Ok(())
}
