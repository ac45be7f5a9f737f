//! How the CLI shows things: for people by default, as JSON with `--json`.

use crate::cli::out::outln;
use std::path::Path;

use crate::plugin::CompiledPlugin;
use crate::state::{RunRecord, RunStats};
use crate::sync::SyncReport;
use synchost_model::PluginInfo;

pub(super) fn print_json<T: serde::Serialize>(value: &T) {
    outln!("{}", serde_json::to_string_pretty(value).expect("CLI output serialises"));
}

pub(super) fn inspection(file: &Path, compiled: &CompiledPlugin, info: &PluginInfo, schema: Option<&str>, json: bool) {
    // A schema that is not JSON is shown as the text it is (`validate`
    // reports it as the plugin's fault).
    let schema_json = schema.map(|text| serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.into())));
    if json {
        print_json(&serde_json::json!({
            "file": file,
            "sha256": compiled.digest,
            "kind": compiled.kind,
            "world": compiled.kind.world(),
            "wit_version": compiled.wit_version,
            "info": {
                "name": info.name,
                "version": info.version,
                "description": info.description,
                "wit_version": info.wit_version,
            },
            "config_schema": schema_json,
        }));
        return;
    }
    outln!("file:        {}", file.display());
    outln!("sha256:      {}", compiled.digest);
    outln!("kind:        {}", compiled.kind);
    outln!("world:       {}@{}", compiled.kind.world(), compiled.wit_version);
    outln!("wit version: {} (info() says {})", compiled.wit_version, info.wit_version);
    outln!("name:        {} {}", info.name, info.version);
    outln!("description: {}", info.description);
    match &schema_json {
        None => outln!("config:      no schema declared (the host cannot check this plugin's config before it runs)"),
        Some(schema) => config_keys(schema),
    }
}

/// The top-level keys of a config schema, one line each: the key, its type,
/// whether it is required or its default, and its description.
fn config_keys(schema: &serde_json::Value) {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        outln!("config:      {schema}");
        return;
    };
    if properties.is_empty() {
        outln!("config:      takes no keys");
        return;
    }
    outln!("config:");
    let required: Vec<&str> =
        schema.get("required").and_then(|r| r.as_array()).into_iter().flatten().filter_map(|r| r.as_str()).collect();
    let width = properties.keys().map(String::len).max().unwrap_or(0);
    for (key, property) in properties {
        let needed = if required.contains(&key.as_str()) {
            "required".to_string()
        } else {
            match property.get("default") {
                Some(default) => format!("default {default}"),
                None => "optional".to_string(),
            }
        };
        let description = property.get("description").and_then(|d| d.as_str()).unwrap_or("");
        let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
        outln!("  {key:width$}  {} ({needed}) {description}", crate::config::plugin_schema::shape(property, schema));
    }
}

pub(super) fn report(report: &SyncReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    outln!("{}: run {} {} ({})", report.pipeline, report.run, status_word(report.status), run_kind(report.mode));
    print_stats(&report.stats);
    if let Some(error) = &report.error {
        outln!("  error: {error}");
    }
    for (key, reason) in &report.failures {
        outln!("  not applied: {key}: {reason}");
    }
}

fn status_word(status: crate::state::RunStatus) -> &'static str {
    use crate::state::RunStatus::*;
    match status {
        Running => "is running",
        Succeeded => "succeeded",
        SucceededWithErrors => "succeeded with errors",
        Failed => "failed",
        Stopped => "stopped",
        Blocked => "is blocked",
        Paused => "paused",
        Abandoned => "was abandoned",
        Superseded => "was superseded",
    }
}

/// A kind of run as people read it.
fn run_kind(mode: crate::config::Mode) -> String {
    match mode {
        crate::config::Mode::Reconcile => "reconciliation".into(),
        mode => format!("{mode} sync"),
    }
}

fn print_stats(stats: &RunStats) {
    if let Some(drift) = &stats.drift {
        print_drift(drift);
    }
    match (&stats.cursor_before, &stats.cursor_after) {
        (before, Some(after)) => {
            outln!(
                "  read {} events in {} batch(es); cursor {} -> {after}",
                stats.read,
                stats.batches,
                before.as_deref().unwrap_or("(start)")
            );
            outln!(
                "  upserted {}, deleted {}, rejected {}, dead-lettered {}, failed transiently {} (retry queue: {})",
                stats.upserted,
                stats.deleted,
                stats.rejected,
                stats.dead_lettered,
                stats.failed,
                stats.pending_retries
            );
        }
        _ => {
            outln!(
                "  read {} source rows -> {} desired; the destination had {}",
                stats.read,
                stats.desired,
                stats.destination
            );
            outln!(
                "  created {}, updated {}, deleted {}, unchanged {}, rejected {}, failed {}",
                stats.created,
                stats.updated,
                stats.deleted,
                stats.unchanged,
                stats.rejected,
                stats.failed
            );
            if stats.held > 0 || stats.retried > 0 {
                outln!("  held back (unique) {}, retried within the run {}", stats.held, stats.retried);
            }
            if !stats.timings_ms.is_empty() {
                let phases: Vec<String> =
                    stats.timings_ms.iter().map(|(phase, ms)| format!("{phase} {ms} ms")).collect();
                outln!("  timings: {}", phases.join(", "));
            }
        }
    }
}

pub(super) fn runs(runs: &[RunRecord], json: bool) {
    if json {
        print_json(&runs);
        return;
    }
    if runs.is_empty() {
        outln!("no runs recorded");
        return;
    }
    outln!("{:>6}  {:<32} {:<9} {:<10} {:<25} summary", "run", "pipeline", "kind", "status", "started");
    for run in runs {
        let s = &run.stats;
        let summary = match run.mode {
            crate::config::Mode::Diff => format!("+{} ~{} -{} ={}", s.created, s.updated, s.deleted, s.unchanged),
            crate::config::Mode::Event => format!("{} events, {} batches", s.read, s.batches),
            crate::config::Mode::Reconcile => match &s.drift {
                Some(d) => format!(
                    "drift {} missing {} extra {} different; repaired {}, left to the stream {}",
                    d.missing, d.extra, d.different, d.repaired, d.left_to_stream
                ),
                None => "no drift measured".into(),
            },
        };
        outln!(
            "{:>6}  {:<32} {:<9} {:<10} {:<25} {summary}",
            run.id,
            run.pipeline.to_string(),
            run.mode.to_string(),
            status_word(run.status),
            run.started_at
        );
    }
}

pub(super) fn run(run: &RunRecord, json: bool) {
    if json {
        print_json(run);
        return;
    }
    outln!("run {} of {} ({}): {}", run.id, run.pipeline, run_kind(run.mode), status_word(run.status));
    outln!("  started  {}", run.started_at);
    outln!("  finished {}", run.finished_at.as_deref().unwrap_or("-"));
    print_stats(&run.stats);
    if let Some(error) = &run.error {
        outln!("  error: {error}");
    }
    for (plugin, digest) in &run.plugins {
        outln!("  plugin {plugin}: sha256 {digest}");
    }
}

/// How many rows of each kind `synchost plan` shows.
const PLAN_SAMPLE: usize = 5;

pub(super) fn preview(id: &crate::state::PipelineId, preview: &crate::sync::diff::Preview, max_ratio: f64, json: bool) {
    use synchost_model::row_to_json;
    let plan = &preview.plan;
    if json {
        let sample = |rows: &mut dyn Iterator<Item = serde_json::Value>| rows.take(PLAN_SAMPLE).collect::<Vec<_>>();
        print_json(&serde_json::json!({
            "pipeline": id.to_string(),
            "source_rows": preview.read,
            "desired_rows": plan.desired_rows,
            "destination_rows": plan.destination_rows,
            "owned_fields": plan.columns,
            "counts": {
                "create": plan.creates.len(),
                "update": plan.updates.len(),
                "delete": plan.deletes.len(),
                "unchanged": plan.unchanged,
                "held": plan.held.len(),
            },
            "change_ratio": plan.change_ratio(),
            "max_change_ratio": max_ratio,
            "blocked": preview.blocked,
            "sample": {
                "create": sample(&mut plan.creates.iter().map(|r| serde_json::json!({"key": r.key, "fields": row_to_json(&plan.columns, r)}))),
                "update": sample(&mut plan.updates.iter().map(|u| serde_json::json!({"key": u.row.key, "fields": row_to_json(&plan.columns, &u.row), "changed": u.changed}))),
                "delete": sample(&mut plan.deletes.iter().map(|k| serde_json::json!({"key": k}))),
                "held": sample(&mut plan.held.iter().map(|c| serde_json::to_value(c).expect("conflicts serialise"))),
            },
        }));
        return;
    }
    outln!("plan for {id} (nothing written)");
    outln!(
        "  source {} rows -> {} desired; destination {} records; owned fields: {}",
        preview.read,
        plan.desired_rows,
        plan.destination_rows,
        plan.columns.join(", ")
    );
    outln!(
        "  create {}, update {}, delete {}, unchanged {}, held back {}",
        plan.creates.len(),
        plan.updates.len(),
        plan.deletes.len(),
        plan.unchanged,
        plan.held.len()
    );
    outln!("  change ratio {:.1}% (max_change_ratio {:.1}%)", plan.change_ratio() * 100.0, max_ratio * 100.0);
    match &preview.blocked {
        Some(reason) => outln!("  BLOCKED: {reason}"),
        None => outln!("  a sync would apply it"),
    }
    for row in plan.creates.iter().take(PLAN_SAMPLE) {
        outln!("  + {} {}", row.key, row_to_json(&plan.columns, row));
    }
    for update in plan.updates.iter().take(PLAN_SAMPLE) {
        outln!(
            "  ~ {} {} (changed: {})",
            update.row.key,
            row_to_json(&plan.columns, &update.row),
            update.changed.join(", ")
        );
    }
    for key in plan.deletes.iter().take(PLAN_SAMPLE) {
        outln!("  - {key}");
    }
    for conflict in plan.held.iter().take(PLAN_SAMPLE) {
        outln!(
            "  ! {} held back: `{}` = {} collides with `{}`",
            conflict.key,
            conflict.field,
            conflict.value,
            conflict.other
        );
    }
}

pub(super) fn replay(report: &crate::sync::diff::ReplayReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    let counts = |c: &crate::sync::diff::PlanCounts| {
        format!(
            "create {}, update {}, delete {}, unchanged {}, held {}",
            c.creates, c.updates, c.deletes, c.unchanged, c.held
        )
    };
    outln!("replay of run {}", report.run);
    for (name, digest) in &report.transforms {
        outln!("  transform {name}: sha256 {digest}");
    }
    outln!("  recorded: {}", counts(&report.recorded));
    outln!("  replayed: {}", counts(&report.replayed));
    if report.differing_keys == 0 {
        outln!("  the replayed plan is the same as the recorded one");
    } else {
        outln!("  {} key(s) planned differently:", report.differing_keys);
        for difference in &report.differences {
            outln!("    {}: recorded {} | replayed {}", difference.key, difference.recorded, difference.replayed);
        }
    }
}

/// `runs show`: the run, and for an event run the stats of each batch.
pub(super) fn run_with_batches(
    record: &RunRecord,
    batches: &[crate::state::BatchStats],
    archive: &[crate::state::ArchivedFile],
    json: bool,
) {
    if json {
        let mut value = serde_json::to_value(record).expect("runs serialise");
        value["batches"] = serde_json::to_value(batches).expect("batch stats serialise");
        value["archive"] = serde_json::to_value(archive).expect("archive files serialise");
        print_json(&value);
        return;
    }
    run(record, false);
    if !archive.is_empty() {
        let files: Vec<String> = archive.iter().map(|f| format!("{} ({} bytes)", f.name, f.bytes)).collect();
        outln!("  archive: {}", files.join(", "));
    }
    if batches.is_empty() {
        return;
    }
    let s = &record.stats;
    outln!(
        "  collapsed {}, retried {}, queued for retry {}, dead-lettered {}, retries pending {}",
        s.collapsed,
        s.retried,
        s.queued,
        s.dead_lettered,
        s.pending_retries
    );
    outln!(
        "  {:>5} {:>7} {:>6} {:>9} {:>8} {:>7} {:>6} {:>6} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8}  cursor",
        "batch",
        "events",
        "ops",
        "collapsed",
        "applied",
        "retried",
        "queued",
        "dead",
        "queue",
        "lanes",
        "read ms",
        "xform ms",
        "apply ms",
        "commit ms"
    );
    for b in batches {
        let commit = b.commit_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}"));
        outln!(
            "  {:>5} {:>7} {:>6} {:>9} {:>8} {:>7} {:>6} {:>6} {:>6} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8}  {} -> {}",
            b.seq,
            b.events,
            b.operations,
            b.collapsed,
            b.upserted + b.deleted,
            b.retried,
            b.queued,
            b.rejected + b.expired,
            b.pending_retries,
            b.lanes,
            b.read_ms,
            b.transform_ms,
            b.apply_ms,
            commit,
            b.cursor_before.as_deref().unwrap_or("(start)"),
            b.cursor_after
        );
    }
}

/// A lease, as `status` shows it: who holds it, under which token, until when.
pub(super) fn lease(lease: &crate::state::Lease) -> String {
    let left = lease.expires_at_ms - chrono::Utc::now().timestamp_millis();
    let until = chrono::DateTime::from_timestamp_millis(lease.expires_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    if left > 0 {
        format!("held by `{}`, token {}, until {until} unless renewed", lease.holder, lease.token)
    } else {
        format!("free (last held by `{}`, token {}, ended {until})", lease.holder, lease.token)
    }
}

/// `synchost hosts`: the live hosts, their share, and the leases each holds.
pub(super) fn hosts(hosts: &[crate::state::HostInfo], leases: &[crate::state::Lease], json: bool) {
    let now = chrono::Utc::now().timestamp_millis();
    let holding = |host: &str| leases.iter().filter(|l| l.holder == host && l.expires_at_ms > now).count();
    if json {
        let hosts: Vec<_> = hosts
            .iter()
            .map(|h| {
                let mut value = serde_json::to_value(h).expect("a host serialises");
                value["leases_held"] = holding(&h.id).into();
                value
            })
            .collect();
        return print_json(&hosts);
    }
    if hosts.is_empty() {
        outln!("no live hosts (no `synchost run` has beaten into this state store lately)");
        return;
    }
    outln!("{:<32} {:<26} {:>6} {:>6}", "HOST", "STARTED", "OWNS", "HOLDS");
    for host in hosts {
        outln!("{:<32} {:<26} {:>6} {:>6}", host.id, host.started_at, host.pipelines, holding(&host.id));
    }
}

/// What a reconciliation found: the drift by kind and field, samples, and
/// what was repaired or left to the event stream.
fn print_drift(drift: &crate::state::Drift) {
    outln!(
        "  drift: {} missing, {} extra, {} different; {} left to the event stream, {} repaired",
        drift.missing,
        drift.extra,
        drift.different,
        drift.left_to_stream,
        drift.repaired
    );
    if !drift.fields.is_empty() {
        let fields: Vec<String> = drift.fields.iter().map(|(field, keys)| format!("{field} ({keys})")).collect();
        outln!("  fields that differed: {}", fields.join(", "));
    }
    let samples = &drift.samples;
    for (kind, keys) in [("missing", &samples.missing), ("extra", &samples.extra), ("left", &samples.left_to_stream)] {
        if !keys.is_empty() {
            outln!("  {kind}: {}", keys.join(", "));
        }
    }
    for key in &samples.different {
        outln!("  different: {} ({})", key.key, key.fields.join(", "));
    }
    outln!(
        "  watermarks: {} -> {} ({} events between, {} keys in flight)",
        drift.low_watermark.as_deref().unwrap_or("(start)"),
        drift.high_watermark.as_deref().unwrap_or("(start)"),
        drift.events_between,
        drift.keys_in_flight
    );
}

/// What `synchost reconcile --plan` shows.
pub(super) fn reconcile_preview(
    id: &crate::state::PipelineId,
    preview: &crate::sync::diff::reconcile::ReconcilePreview,
    json: bool,
) {
    let repair = &preview.repair;
    if json {
        print_json(&serde_json::json!({
            "pipeline": id.to_string(),
            "drift": preview.drift,
            "repair": {
                "creates": repair.creates.len(),
                "updates": repair.updates.len(),
                "deletes": repair.deletes.len(),
            },
            "blocked": preview.blocked,
        }));
        return;
    }
    outln!("{id}: reconciliation plan (nothing was written)");
    print_drift(&preview.drift);
    outln!(
        "  would repair: create {}, update {}, delete {}",
        repair.creates.len(),
        repair.updates.len(),
        repair.deletes.len()
    );
    if let Some(reason) = &preview.blocked {
        outln!("  blocked: {reason}");
    }
}
