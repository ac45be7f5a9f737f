//! The diff-sync commands: `plan`, `reconcile`, `approve` and `replay`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::out::outln;

use super::{load, open_state, output, progress};
use crate::plugin::PluginKind;
use crate::runtime::Tenants;
use crate::state::{PipelineId, RunId, RunStatus};
use crate::sync::{SyncError, SyncJob, SyncOptions};

pub(super) fn plan(config: &Path, id: &PipelineId, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = load(config, Tenants::Only(&id.tenant))?;
    let stop = super::stop_on_signal();
    let mut job = runtime.job(id, stop, SyncOptions::default())?;
    job.observer = progress::observer(json);
    let preview = job.preview()?;
    output::preview(id, &preview, job.pipeline.diff.max_change_ratio, json);
    Ok(ExitCode::SUCCESS)
}

/// Reconciles an event pipeline here (its lease keeps a daemon's event runs
/// of it away meanwhile), or shows what a reconciliation would do.
pub(super) fn reconcile(
    config: &Path,
    id: &PipelineId,
    plan: bool,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = load(config, Tenants::Only(&id.tenant))?;
    let stop = super::stop_on_signal();
    let mut job = runtime.job(id, stop, SyncOptions { force, ..SyncOptions::default() })?;
    job.observer = progress::observer(json);
    if plan {
        let preview = job.reconcile_preview()?;
        output::reconcile_preview(id, &preview, json);
        return Ok(ExitCode::SUCCESS);
    }
    let report = job.reconcile()?;
    output::report(&report, json);
    Ok(super::exit_code(report.status))
}

/// The pipeline a recorded run belongs to.
fn pipeline_of(config: &Path, run: RunId) -> anyhow::Result<PipelineId> {
    let state = open_state(config)?;
    Ok(state.run(run)?.with_context(|| format!("no run {run}"))?.pipeline)
}

/// Applies a blocked plan: in the running daemon if there is one (which
/// holds the pipeline's run lock, so the approval never overlaps one of its
/// runs, and passes it on to the host that runs the pipeline), else on the
/// host that runs it if daemons share this state, else here.
pub(super) fn approve(config: &Path, run: RunId, json: bool) -> anyhow::Result<ExitCode> {
    let host = super::admin::host(config)?;
    let run_id = run.to_string();
    match super::admin::try_daemon(&host, hyper::Method::POST, &["runs", &run_id, "approve"], None) {
        Ok(Some(answer)) => {
            let report: crate::sync::SyncReport = serde_json::from_value(answer)?;
            output::report(&report, json);
            return Ok(super::exit_code(report.status));
        }
        Ok(None) => {}
        Err(e) => anyhow::bail!("cannot approve run {run}: {e}"),
    }
    let state = crate::state::open(&host)?;
    let record = state.run(run)?.with_context(|| format!("no run {run}"))?;
    let id = record.pipeline;
    let stop = super::stop_on_signal();
    if !state.hosts()?.is_empty() {
        // A daemon shares this state: the pipeline is its to run.
        if record.status != RunStatus::Blocked {
            anyhow::bail!("cannot approve run {run}: {}", SyncError::NotBlocked { run, status: record.status });
        }
        let me = crate::runtime::command_holder();
        let report = crate::daemon::approvals::ask(&*state, run, &id, &me, host.lease_time * 2, stop)
            .map_err(|e| anyhow::anyhow!(e))?;
        if !json {
            outln!("applied by host `{}`, which runs {id}", report.host);
        }
        output::report(&report, json);
        return Ok(super::exit_code(report.status));
    }
    drop(state);
    let runtime = load(config, Tenants::Only(&id.tenant))?;
    let mut job = runtime.job(&id, stop, SyncOptions::default())?;
    job.observer = progress::observer(json);
    let report = job.approve(run).map_err(|e| anyhow::anyhow!("cannot approve run {run}: {e}"))?;
    output::report(&report, json);
    Ok(super::exit_code(report.status))
}

pub(super) fn replay(config: &Path, run: RunId, overrides: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let id = pipeline_of(config, run)?;
    let runtime = load(config, Tenants::Only(&id.tenant))?;
    let stop = super::stop_on_signal();
    let job = runtime.job(&id, stop, SyncOptions::default())?;
    let mut plugins: BTreeMap<_, _> = (*job.plugins).clone();
    for spec in overrides {
        let (name, file) = spec.split_once('=').with_context(|| format!("--plugin `{spec}` is not NAME=FILE.wasm"))?;
        if !job.pipeline.transforms.iter().any(|t| t == name) {
            anyhow::bail!(
                "--plugin {name}: `{name}` is not a transform of {id} (its transforms: {}); the source and \
                 destination of a replay come from the run's archive",
                job.pipeline.transforms.join(", ")
            );
        }
        let bytes = std::fs::read(file).with_context(|| format!("cannot read `{file}`"))?;
        let compiled = runtime.engine.compile(name, &bytes)?;
        if compiled.kind != PluginKind::Transform {
            anyhow::bail!("--plugin {name}: `{file}` is a {} plugin, not a transform", compiled.kind);
        }
        plugins.insert(name.to_string(), compiled);
    }
    let job = SyncJob { plugins: std::sync::Arc::new(plugins), ..job };
    let report = job.replay(run).map_err(|e| anyhow::anyhow!("cannot replay run {run}: {e}"))?;
    output::replay(&report, json);
    Ok(ExitCode::SUCCESS)
}
