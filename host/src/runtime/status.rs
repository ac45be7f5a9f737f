//! `synchost status`: what the host serves right now, tenant by tenant: the
//! plugin versions in use (digest, since when), each pipeline's last run, the
//! newest file refused if any, and a one-word health.

use serde::{Deserialize, Serialize};

use super::Runtime;
use super::reload::Refusal;
use crate::config::Mode;
use crate::state::{PipelineId, RunRecord, RunStatus};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Who answers: the running daemon, or the files and state read directly.
    pub source: String,
    pub tenants: Vec<TenantStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub name: String,
    pub mode: Mode,
    pub schedule: String,
    pub last_run: Option<RunRecord>,
    /// Event pipelines: dead letters no later event superseded, waiting for
    /// `synchost dlq retry` or `dlq drop`.
    pub dead_letters: usize,
    /// Event pipelines: operations waiting in the retry queue.
    pub retry_queue: usize,
}

impl Runtime {
    /// The host's status now; `source` says who answers.
    pub fn status(&self, source: &str) -> Status {
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
                        name: p.name.clone(),
                        mode: p.mode,
                        schedule: p.schedule.to_string(),
                        last_run: self.state.runs(Some(&id), 1).ok().and_then(|runs| runs.into_iter().next()),
                        dead_letters: self
                            .state
                            .dead_letters(&id)
                            .map_or(0, |letters| letters.iter().filter(|l| l.superseded_by.is_none()).count())
                            * usize::from(event),
                        retry_queue: self.state.retry_queue(&id).map_or(0, |queue| queue.len()) * usize::from(event),
                    }
                })
                .collect();
            let refused = swaps.refused.get(&name).cloned();
            // A pipeline needs someone when its last run did not go to its
            // end cleanly, or it holds dead letters.
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
}
