//! `synchost status`: what the host serves right now, tenant by tenant: the
//! plugin versions in use (digest, since when), each pipeline's last run, the
//! newest file refused if any, and a one-word health.

use serde::{Deserialize, Serialize};

use super::Runtime;
use super::reload::Refusal;
use crate::config::Mode;
use crate::state::{Lease, Pause, PipelineId, RunFilter, RunId, RunRecord, RunStats, RunStatus};

/// A run in progress, as the daemon sees it from the engine's events.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LiveRun {
    pub run: RunId,
    pub started_at: String,
    /// Its figures so far.
    pub stats: RunStats,
    /// Operations applied so far, of `total` planned (diff runs).
    pub done: Option<u64>,
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// Who answers: the running daemon, or the files and state read directly.
    pub source: String,
    pub tenants: Vec<TenantStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantStatus {
    pub name: String,
    /// `ok`; `degraded` (a pipeline's last run failed, paused, was abandoned
    /// or left operations unapplied, a pipeline holds dead letters, or a newer
    /// file was refused); `not loaded` (no version of the file has passed).
    pub health: String,
    pub loaded_at: Option<String>,
    pub plugins: Vec<PluginStatus>,
    pub pipelines: Vec<PipelineStatus>,
    /// Why the newest tenant file is not the one running.
    pub refused: Option<Refusal>,
    /// A plugin was rolled back; the tenant file asks for something newer.
    pub rolled_back: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    pub kind: String,
    pub digest: String,
    pub wit_version: String,
    pub path: String,
    /// When this version became active.
    pub active_since: Option<String>,
    /// Versions kept for rollback, this one included.
    pub versions_kept: usize,
    /// Those versions, oldest first: what `plugin rollback` returns to.
    pub versions: Vec<PluginVersionStatus>,
}

/// One version of a plugin kept for rollback.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginVersionStatus {
    pub digest: String,
    pub active_since: String,
    /// Whether it is the version in use.
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineStatus {
    pub tenant: String,
    pub name: String,
    pub mode: Mode,
    pub schedule: String,
    /// When the daemon runs it next (RFC 3339); `None` for a manual or
    /// paused pipeline, one running now, or when no daemon answers.
    pub next_run_at: Option<String>,
    /// Set while an operator has it paused: it runs neither on its schedule
    /// nor on request until resumed.
    pub paused: Option<Pause>,
    /// The run in progress in the daemon, if any, with its figures so far.
    pub running: Option<LiveRun>,
    pub last_run: Option<RunRecord>,
    /// Event pipelines: the `reconcile` schedule, if it has one.
    #[serde(default)]
    pub reconcile: Option<String>,
    /// Event pipelines: the newest reconciliation (scheduled or asked for),
    /// with the drift it found in its stats.
    #[serde(default)]
    pub last_reconcile: Option<RunRecord>,
    /// The newest diff or reconcile run blocked by a guard and still approvable.
    pub blocked_run: Option<RunId>,
    /// Event pipelines: the position the next run reads after.
    pub cursor: Option<String>,
    /// Event pipelines: how far the source is ahead of the cursor, where the
    /// source can tell; none of the WIT 0.2 sources can, so `None` for now.
    pub lag: Option<u64>,
    /// Event pipelines: dead letters no later event superseded, waiting for
    /// `synchost dlq retry` or `dlq drop`.
    pub dead_letters: usize,
    /// Event pipelines: operations waiting in the retry queue.
    pub retry_queue: usize,
    /// Its lease: which host holds (or last held) it, under which token,
    /// until when. `None` before its first run.
    pub lease: Option<Lease>,
}

impl Runtime {
    /// The host's status now; `source` says who answers.
    pub fn status(&self, source: &str) -> Status {
        let pauses = self.state.pauses().unwrap_or_default();
        let mut leases: std::collections::HashMap<PipelineId, Lease> =
            self.state.leases().unwrap_or_default().into_iter().map(|l| (l.pipeline.clone(), l)).collect();
        let swaps = self.swap_log();
        let mut tenants = Vec::new();
        for tenant in self.tenants() {
            let name = tenant.config.name.clone();
            let plugins = tenant
                .plugins
                .iter()
                .map(|(plugin, compiled)| {
                    let versions = swaps.history.get(&(name.clone(), plugin.clone()));
                    PluginStatus {
                        name: plugin.clone(),
                        kind: compiled.kind.to_string(),
                        digest: compiled.digest.clone(),
                        wit_version: compiled.wit_version.clone(),
                        path: tenant.config.plugins[plugin].path.display().to_string(),
                        active_since: versions
                            .and_then(|v| v.iter().rev().find(|v| v.compiled.digest == compiled.digest))
                            .map(|v| v.active_since.clone()),
                        versions_kept: versions.map_or(0, Vec::len),
                        versions: versions
                            .into_iter()
                            .flatten()
                            .map(|v| PluginVersionStatus {
                                digest: v.compiled.digest.clone(),
                                active_since: v.active_since.clone(),
                                active: v.compiled.digest == compiled.digest
                                    && v.config.config == tenant.config.plugins[plugin].config,
                            })
                            .collect(),
                    }
                })
                .collect();
            let pipelines: Vec<PipelineStatus> = tenant
                .config
                .pipelines
                .values()
                .map(|p| {
                    let id = PipelineId::new(&name, &p.name);
                    let event = p.mode == Mode::Event;
                    PipelineStatus {
                        tenant: name.clone(),
                        name: p.name.clone(),
                        mode: p.mode,
                        schedule: p.schedule.to_string(),
                        next_run_at: None,
                        paused: pauses.get(&id).cloned(),
                        running: None,
                        last_run: self.state.runs(Some(&id), 1).ok().and_then(|runs| runs.into_iter().next()),
                        reconcile: p.reconcile.as_ref().map(ToString::to_string),
                        last_reconcile: event.then(|| self.last_reconcile(&id)).flatten(),
                        blocked_run: self.blocked_run(&id),
                        cursor: if event { self.state.cursor(&id).ok().flatten() } else { None },
                        lag: None,
                        dead_letters: self
                            .state
                            .dead_letters(&id)
                            .map_or(0, |letters| letters.iter().filter(|l| l.superseded_by.is_none()).count())
                            * usize::from(event),
                        retry_queue: self.state.retry_queue(&id).map_or(0, |queue| queue.len()) * usize::from(event),
                        lease: leases.remove(&id),
                    }
                })
                .collect();
            let refused = swaps.refused.get(&name).cloned();
            // A pipeline needs someone when its last run did not go to its
            // end cleanly, or it holds dead letters. (A blocked plan is the
            // guard working, and shows as `blocked_run`.)
            let failing = pipelines.iter().any(|p| {
                p.dead_letters > 0
                    || p.last_run.as_ref().is_some_and(|r| {
                        matches!(
                            r.status,
                            RunStatus::Failed
                                | RunStatus::Paused
                                | RunStatus::SucceededWithErrors
                                | RunStatus::Abandoned
                        )
                    })
            });
            tenants.push(TenantStatus {
                health: if refused.is_some() || failing { "degraded" } else { "ok" }.to_string(),
                loaded_at: Some(tenant.loaded_at.clone()),
                plugins,
                pipelines,
                refused,
                rolled_back: swaps.rolled_back_from.contains_key(&name),
                name,
            });
        }
        // Tenant files that never loaded.
        for (name, refusal) in &swaps.refused {
            if !tenants.iter().any(|t| &t.name == name) {
                tenants.push(TenantStatus {
                    name: name.clone(),
                    health: "not loaded".to_string(),
                    loaded_at: None,
                    plugins: Vec::new(),
                    pipelines: Vec::new(),
                    refused: Some(refusal.clone()),
                    rolled_back: false,
                });
            }
        }
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        Status { source: source.to_string(), tenants }
    }

    /// The newest reconcile run of an event pipeline, wherever it ran.
    pub(crate) fn last_reconcile(&self, id: &PipelineId) -> Option<RunRecord> {
        let filter = RunFilter { mode: Some(Mode::Reconcile), ..RunFilter::newest_of(id) };
        self.state.find_runs(&filter).ok()?.into_iter().next()
    }

    /// The newest blocked run of a pipeline, if no later run planned
    /// afresh (a blocked run that a later one superseded is marked so).
    fn blocked_run(&self, id: &PipelineId) -> Option<RunId> {
        let filter = RunFilter { status: Some(RunStatus::Blocked), ..RunFilter::newest_of(id) };
        self.state.find_runs(&filter).ok()?.into_iter().next().map(|run| run.id)
    }
}
