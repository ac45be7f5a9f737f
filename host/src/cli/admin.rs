//! The commands that talk to a running daemon: `reload`, `status` and
//! `plugin rollback` (see [`crate::daemon::admin`]).

use crate::cli::out::outln;
use std::path::Path;
use std::process::ExitCode;

use super::output::print_json;
use crate::config::HostConfig;
use crate::daemon::admin::{self, Request};
use crate::runtime::{ReloadReport, Runtime, Status, TenantChange, Tenants};

fn host(config: &Path) -> anyhow::Result<HostConfig> {
    HostConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Sends `request` to the daemon, which must be running.
fn ask_daemon(config: &Path, request: &Request) -> anyhow::Result<serde_json::Value> {
    let host = host(config)?;
    admin::request(&host.state_dir, request)?.ok_or_else(|| {
        anyhow::anyhow!("no synchost daemon is running for {} (start one with `synchost run`)", config.display())
    })
}

pub(super) fn reload(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let report: ReloadReport = serde_json::from_value(ask_daemon(config, &Request::Reload)?)?;
    if json {
        print_json(&report);
    } else if report.changes.is_empty() {
        outln!("reloaded: nothing changed");
    } else {
        report.changes.iter().for_each(print_change);
    }
    let refused = report.changes.iter().any(|c| matches!(c, TenantChange::Refused { .. }));
    Ok(if refused { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub(super) fn rollback(config: &Path, tenant: String, plugin: String, json: bool) -> anyhow::Result<ExitCode> {
    let change: TenantChange = serde_json::from_value(ask_daemon(config, &Request::Rollback { tenant, plugin })?)?;
    if json {
        print_json(&change);
    } else {
        print_change(&change);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_change(change: &TenantChange) {
    let digests = |plugins: &std::collections::BTreeMap<String, String>| {
        plugins.iter().map(|(name, digest)| format!("{name}={}", &digest[..12])).collect::<Vec<_>>().join(" ")
    };
    match change {
        TenantChange::Added { tenant, plugins } => outln!("{tenant}: added ({})", digests(plugins)),
        TenantChange::Swapped { tenant, plugins } => outln!("{tenant}: now running {}", digests(plugins)),
        TenantChange::Removed { tenant } => outln!("{tenant}: removed"),
        TenantChange::Refused { tenant, problems } => {
            outln!("{tenant}: new version refused, the running one stays:");
            problems.iter().for_each(|p| outln!("  {p}"));
        }
    }
}

pub(super) fn status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let host = host(config)?;
    let status: Status = match admin::request(&host.state_dir, &Request::Status)? {
        Some(answer) => serde_json::from_value(answer)?,
        None => {
            let runtime = Runtime::load(config, Tenants::Serving).map_err(|e| anyhow::anyhow!("{e}"))?;
            runtime.status("no daemon running: read from the files and the state")
        }
    };
    // Anything but every tenant `ok` is worth a non-zero exit: a monitor
    // can run `synchost status` and alert on it.
    let healthy = status.tenants.iter().all(|t| t.health == "ok");
    let code = if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    if json {
        print_json(&status);
        return Ok(code);
    }
    outln!("source: {}", status.source);
    for tenant in &status.tenants {
        let since = tenant.loaded_at.as_deref().map(|t| format!(", loaded {t}")).unwrap_or_default();
        let rolled_back = if tenant.rolled_back { ", rolled back" } else { "" };
        outln!("\n{} [{}{since}{rolled_back}]", tenant.name, tenant.health);
        for plugin in &tenant.plugins {
            outln!(
                "  plugin {:<16} {:<11} {} (wit {}, {} version(s) kept){}",
                plugin.name,
                plugin.kind,
                &plugin.digest[..16],
                plugin.wit_version,
                plugin.versions_kept,
                plugin.active_since.as_deref().map(|t| format!(", active since {t}")).unwrap_or_default()
            );
        }
        for pipeline in &tenant.pipelines {
            let last = match &pipeline.last_run {
                Some(run) => format!(
                    "last run {} {} at {}{}",
                    run.id,
                    run.status,
                    run.finished_at.as_deref().unwrap_or(&run.started_at),
                    run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                ),
                None => "no runs yet".into(),
            };
            outln!(
                "  pipeline {:<14} {:<5} {:<16} {last}",
                pipeline.name,
                pipeline.mode.to_string(),
                pipeline.schedule
            );
            if pipeline.mode == crate::config::Mode::Event {
                outln!(
                    "    dead letters {}, retry queue {}{}",
                    pipeline.dead_letters,
                    pipeline.retry_queue,
                    if pipeline.dead_letters > 0 { " (see `synchost dlq list`)" } else { "" }
                );
            }
        }
        if let Some(refused) = &tenant.refused {
            outln!("  newest file refused at {}:", refused.at);
            refused.problems.iter().for_each(|p| outln!("    {p}"));
        }
    }
    Ok(code)
}
