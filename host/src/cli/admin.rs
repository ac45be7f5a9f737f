//! The commands that talk to a running daemon through its admin API (over
//! the Unix socket, see [`crate::admin`]): `reload`, `status`, `pause`,
//! `resume` and `plugin rollback`.

use crate::cli::out::outln;
use std::path::Path;
use std::process::ExitCode;

use super::output::print_json;
use crate::admin::client;
use crate::config::HostConfig;
use crate::runtime::{PipelineStatus, ReloadReport, Runtime, Status, TenantChange, Tenants};
use crate::state::{Pause, PipelineId};

pub(super) fn host(config: &Path) -> anyhow::Result<HostConfig> {
    HostConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))
}

/// An API path from its segments, each percent-encoded.
fn api_path(segments: &[&str]) -> String {
    let mut url = url::Url::parse("http://synchost/api/v1").expect("the base URL parses");
    url.path_segments_mut().expect("an http URL has segments").extend(segments);
    url.path().to_string()
}

/// Asks the daemon, if one runs: `Ok(None)` when none does.
pub(super) fn try_daemon(
    host: &HostConfig,
    method: hyper::Method,
    segments: &[&str],
    body: Option<serde_json::Value>,
) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(client::request(&host.state_dir, method, &api_path(segments), body)?)
}

/// Asks the daemon, which must be running.
fn ask_daemon(
    config: &Path,
    method: hyper::Method,
    segments: &[&str],
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    try_daemon(&host(config)?, method, segments, body)?.ok_or_else(|| {
        anyhow::anyhow!("no synchost daemon is running for {} (start one with `synchost run`)", config.display())
    })
}

pub(super) fn reload(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let report: ReloadReport = serde_json::from_value(ask_daemon(config, hyper::Method::POST, &["reload"], None)?)?;
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
    let path = ["tenants", &tenant, "plugins", &plugin, "rollback"];
    let change: TenantChange = serde_json::from_value(ask_daemon(config, hyper::Method::POST, &path, None)?)?;
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
    let status: Status = match try_daemon(&host, hyper::Method::GET, &["status"], None)? {
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
            if let Some(pause) = &pipeline.paused {
                let reason = pause.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                outln!("    PAUSED since {}{reason} (`synchost resume {}/{}`)", pause.at, tenant.name, pipeline.name);
            }
            if let Some(live) = &pipeline.running {
                outln!("    running: run {} since {}, {} read", live.run, live.started_at, live.stats.read);
            } else if let Some(next) = &pipeline.next_run_at {
                outln!("    next run at {next}");
            }
            if let Some(lease) = &pipeline.lease {
                outln!("    lease: {}", super::output::lease(lease));
            }
            if let Some(run) = pipeline.blocked_run {
                let look = match pipeline.mode {
                    crate::config::Mode::Event => {
                        format!("synchost reconcile {}/{} --plan", tenant.name, pipeline.name)
                    }
                    _ => format!("synchost plan {}/{}", tenant.name, pipeline.name),
                };
                outln!("    run {run} is blocked: `{look}`, then `synchost approve {run}`");
            }
            if let Some(run) = &pipeline.last_reconcile {
                let drift = run.stats.drift.clone().unwrap_or_default();
                outln!(
                    "    last reconciliation: run {} {} at {}: {} missing, {} extra, {} different; repaired {}, \
                     left to the stream {}",
                    run.id,
                    run.status,
                    run.finished_at.as_deref().unwrap_or(&run.started_at),
                    drift.missing,
                    drift.extra,
                    drift.different,
                    drift.repaired,
                    drift.left_to_stream
                );
            }
            if let Some(reconcile) = &pipeline.reconcile {
                outln!("    reconciles: {reconcile}");
            }
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

/// `synchost pause` (`Some` reason, or none) and `synchost resume` (`None`):
/// through the daemon when one runs, so that it acts at once; else straight
/// into the state, where the next daemon finds it.
pub(super) fn set_pause(
    config: &Path,
    id: &PipelineId,
    pause: Option<Option<String>>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let host = host(config)?;
    let (verb, body) = match &pause {
        Some(reason) => ("pause", Some(serde_json::json!({ "reason": reason }))),
        None => ("resume", None),
    };
    let answer =
        try_daemon(&host, hyper::Method::POST, &["tenants", &id.tenant, "pipelines", &id.pipeline, verb], body)?;
    let paused = match answer {
        Some(answer) => serde_json::from_value::<PipelineStatus>(answer)?.paused,
        None => {
            // No daemon: check the pipeline exists, then record it.
            let runtime = Runtime::load(config, Tenants::Only(&id.tenant)).map_err(|e| anyhow::anyhow!("{e}"))?;
            runtime.job(id, &std::sync::atomic::AtomicBool::new(false), Default::default())?;
            let pause = pause.map(|reason| Pause { at: crate::state::now(), reason });
            runtime.state.set_pause(id, pause.as_ref())?;
            pause
        }
    };
    if json {
        print_json(&serde_json::json!({ "pipeline": id, "paused": paused }));
    } else if let Some(pause) = paused {
        outln!("{id}: paused since {} (no run starts until `synchost resume {id}`)", pause.at);
    } else {
        outln!("{id}: resumed");
    }
    Ok(ExitCode::SUCCESS)
}
