//! How the CLI shows things: for people by default, as JSON with `--json`.

use std::path::Path;

use crate::plugin::CompiledPlugin;
use crate::plugin::types::PluginInfo;
use crate::state::{RunRecord, RunStats};
use crate::sync::SyncReport;

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("CLI output serialises"));
}

pub(super) fn inspection(file: &Path, compiled: &CompiledPlugin, info: &PluginInfo, json: bool) {
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
        }));
        return;
    }
    println!("file:        {}", file.display());
    println!("sha256:      {}", compiled.digest);
    println!("kind:        {}", compiled.kind);
    println!("world:       {}@{}", compiled.kind.world(), compiled.wit_version);
    println!("wit version: {} (info() says {})", compiled.wit_version, info.wit_version);
    println!("name:        {} {}", info.name, info.version);
    println!("description: {}", info.description);
}

pub(super) fn report(report: &SyncReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    println!("{}: run {} {} ({} sync)", report.pipeline, report.run, status_word(report.status), report.mode);
    print_stats(&report.stats);
    if let Some(error) = &report.error {
        println!("  error: {error}");
    }
    for (key, reason) in &report.failures {
        println!("  not applied: {key}: {reason}");
    }
}

fn status_word(status: crate::state::RunStatus) -> &'static str {
    use crate::state::RunStatus::*;
    match status {
        Running => "is running",
        Succeeded => "succeeded",
        Failed => "failed",
        Stopped => "stopped",
    }
}

fn print_stats(stats: &RunStats) {
    match (&stats.cursor_before, &stats.cursor_after) {
        (before, Some(after)) => {
            println!(
                "  read {} events in {} batch(es); cursor {} -> {after}",
                stats.read,
                stats.batches,
                before.as_deref().unwrap_or("(start)")
            );
            println!(
                "  upserted {}, deleted {}, rejected {}, failed {}",
                stats.upserted, stats.deleted, stats.rejected, stats.failed
            );
        }
        _ => {
            println!(
                "  read {} source rows -> {} desired; the destination had {}",
                stats.read, stats.desired, stats.destination
            );
            println!(
                "  created {}, updated {}, deleted {}, unchanged {}, rejected {}, failed {}",
                stats.created, stats.updated, stats.deleted, stats.unchanged, stats.rejected, stats.failed
            );
        }
    }
}

pub(super) fn runs(runs: &[RunRecord], json: bool) {
    if json {
        print_json(&runs);
        return;
    }
    if runs.is_empty() {
        println!("no runs recorded");
        return;
    }
    println!("{:>6}  {:<32} {:<6} {:<10} {:<25} summary", "run", "pipeline", "mode", "status", "started");
    for run in runs {
        let s = &run.stats;
        let summary = match run.mode {
            crate::config::Mode::Diff => format!("+{} ~{} -{} ={}", s.created, s.updated, s.deleted, s.unchanged),
            crate::config::Mode::Event => format!("{} events, {} batches", s.read, s.batches),
        };
        println!(
            "{:>6}  {:<32} {:<6} {:<10} {:<25} {summary}",
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
    println!("run {} of {} ({} sync): {}", run.id, run.pipeline, run.mode, status_word(run.status));
    println!("  started  {}", run.started_at);
    println!("  finished {}", run.finished_at.as_deref().unwrap_or("-"));
    print_stats(&run.stats);
    if let Some(error) = &run.error {
        println!("  error: {error}");
    }
    for (plugin, digest) in &run.plugins {
        println!("  plugin {plugin}: sha256 {digest}");
    }
}
