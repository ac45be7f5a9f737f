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
    /// `ok`; `degraded` (a pipeline's last run failed or paused, or a newer
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
                .map(|p| PipelineStatus {
                    name: p.name.clone(),
                    mode: p.mode,
                    schedule: p.schedule.to_string(),
                    last_run: self
                        .state
                        .runs(Some(&PipelineId::new(&name, &p.name)), 1)
                        .ok()
                        .and_then(|runs| runs.into_iter().next()),
                })
                .collect();
            let refused = swaps.refused.get(&name).cloned();
            let failing = pipelines.iter().any(|p| {
                p.last_run.as_ref().is_some_and(|r| matches!(r.status, RunStatus::Failed | RunStatus::Paused))
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
