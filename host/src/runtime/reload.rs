//! Hot swap: reading the tenant files again while the host runs, checking
//! every changed tenant in full before it replaces the running version, and
//! rolling a plugin back to the version before.
//!
//! A changed tenant is compiled (from the compiled-code cache when it can),
//! checked against its pipelines (world and WIT version, the part each plugin
//! plays), instantiated with its real grants and asked for `info()`; a diff
//! pipeline with `canary = "replay"` also replays its last run with the new
//! transforms and refuses a version whose plan would differ from the recorded
//! one by more than the pipeline's `max_change_ratio`. Only then is the new
//! version swapped in, as a whole. A version that fails any check never
//! replaces the running one: the refusal is logged and kept for `synchost
//! status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use serde::Serialize;

use super::{LoadedTenant, Runtime, compile_tenant, file_digest, now};
use crate::config::{Canary, Config, ConfigErrors, Mode, PluginConfig, TenantConfig};
use crate::plugin::{CompiledPlugin, PluginSetup, plugin_info};
use crate::state::{PipelineId, RunStatus};
use crate::sync::SyncOptions;

/// Versions of each plugin kept for rollback, the active one included.
const KEEP_VERSIONS: usize = 5;

/// One version of one tenant's plugin, as it was active.
#[derive(Clone)]
pub(super) struct PluginVersion {
    pub config: PluginConfig,
    pub compiled: Arc<CompiledPlugin>,
    pub active_since: String,
}

/// Why a tenant's newest file is not the one running.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    pub at: String,
    pub problems: Vec<String>,
}

/// What hot swaps remember between reloads.
pub(super) struct SwapLog {
    /// (tenant, plugin) → versions that were active, oldest first.
    pub history: BTreeMap<(String, String), Vec<PluginVersion>>,
    /// Tenant → why its newest file was refused; cleared when a version loads.
    pub refused: BTreeMap<String, Refusal>,
    /// Tenant → the digest of the tenant file a rollback turned away from: the
    /// rollback holds until that file changes.
    pub rolled_back_from: BTreeMap<String, String>,
}

impl SwapLog {
    pub(super) fn new(tenants: &BTreeMap<String, Arc<LoadedTenant>>) -> SwapLog {
        let mut log = SwapLog { history: BTreeMap::new(), refused: BTreeMap::new(), rolled_back_from: BTreeMap::new() };
        for tenant in tenants.values() {
            log.record(tenant);
        }
        log
    }

    /// Notes the tenants `synchost run` left out at start-up as refused.
    pub(super) fn refuse_at_start(&mut self, left_out: BTreeMap<String, Vec<String>>) {
        let at = now();
        for (tenant, problems) in left_out {
            self.refused.insert(tenant, Refusal { at: at.clone(), problems });
        }
    }

    /// Adds the plugins of a newly active tenant version to the history.
    fn record(&mut self, tenant: &LoadedTenant) {
        for (name, compiled) in tenant.plugins.iter() {
            let versions = self.history.entry((tenant.config.name.clone(), name.clone())).or_default();
            let config = tenant.config.plugins[name].clone();
            let same = versions
                .last()
                .is_some_and(|v| v.compiled.digest == compiled.digest && v.config.config == config.config);
            if !same {
                versions.push(PluginVersion {
                    config,
                    compiled: compiled.clone(),
                    active_since: tenant.loaded_at.clone(),
                });
                if versions.len() > KEEP_VERSIONS {
                    versions.remove(0);
                }
            }
        }
    }
}

/// Tenants checked at once by one reload, at least: a few slow ones (a
/// compile bomb, an `info()` that takes its whole `call_timeout`) must not
/// hold up the rest, even on a machine of one or two cores.
const MIN_CHECKERS: usize = 4;

/// The tenants reloads are checking now. Reloads overlap (a file may change
/// while a slow tenant is checked); each tenant is checked by one of them
/// at a time, and a reload that finds one being checked asks that check to
/// read the file again when it is done, instead of checking it beside it.
#[derive(Default)]
pub(super) struct Checking(std::sync::Mutex<BTreeMap<String, Arc<AtomicBool>>>);

/// One tenant being checked; it stops being so when this is dropped.
pub(super) struct TenantCheck<'a> {
    checking: &'a Checking,
    tenant: String,
    again: Arc<AtomicBool>,
}

impl Checking {
    /// Starts checking `tenant`, or `None` if a check of it is under way
    /// already (which is then asked to read the file again).
    fn begin(&self, tenant: &str) -> Option<TenantCheck<'_>> {
        let mut checking = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(again) = checking.get(tenant) {
            again.store(true, Ordering::SeqCst);
            return None;
        }
        let again = Arc::new(AtomicBool::new(false));
        checking.insert(tenant.to_string(), again.clone());
        Some(TenantCheck { checking: self, tenant: tenant.to_string(), again })
    }
}

impl TenantCheck<'_> {
    /// Whether another reload asked for the file to be read again (once).
    fn again(&self) -> bool {
        self.again.swap(false, Ordering::SeqCst)
    }
}

impl Drop for TenantCheck<'_> {
    fn drop(&mut self) {
        self.checking.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.tenant);
    }
}

/// What a reload did, tenant by tenant.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReloadReport {
    pub changes: Vec<TenantChange>,
}

/// What happened to one tenant in a reload.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum TenantChange {
    /// A new tenant file, now served.
    Added { tenant: String, plugins: BTreeMap<String, String> },
    /// A changed tenant file, now active; `plugins` has the digests in use.
    Swapped { tenant: String, plugins: BTreeMap<String, String> },
    /// The tenant file is gone: its pipelines stop after their current run.
    Removed { tenant: String },
    /// The new file or its plugins failed a check; the running version stays.
    Refused { tenant: String, problems: Vec<String> },
}

impl Runtime {
    /// Reads the tenant files again and swaps in every tenant whose file
    /// changed and passes every check. Only a broken `synchost.toml` fails
    /// the reload as a whole. Blocking: compiles and instantiates plugins.
    pub fn reload(&self) -> Result<ReloadReport, ConfigErrors> {
        let (config, errors) = Config::load_each(&self.host.path)?;
        let mut report = ReloadReport::default();

        // Problems in a tenant file, grouped by tenant.
        let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for error in errors.0 {
            problems.entry(super::tenant_of(&error)).or_default().push(error.to_string());
        }
        for (tenant, problems) in problems {
            report.changes.push(self.refuse(&tenant, problems));
        }

        let current = self.tenants();
        for tenant in &current {
            let name = &tenant.config.name;
            let still_there = config.tenant(name).is_some() || report.changes.iter().any(|c| c.tenant() == name);
            if !still_there && !tenant.config.path.exists() {
                self.swap(name, None);
                self.swap_log().refused.remove(name);
                tracing::info!(tenant = %name, "tenant file removed: its pipelines stop after their current run");
                report.changes.push(TenantChange::Removed { tenant: name.clone() });
            }
        }

        let changed: Vec<TenantConfig> = config
            .tenants
            .into_iter()
            .filter(|tenant| {
                let digest = tenant.version_digest.as_str();
                let running = current.iter().find(|t| t.config.name == tenant.name);
                let rolled_back = self.swap_log().rolled_back_from.get(&tenant.name).cloned();
                !(running.is_some_and(|t| t.version_digest() == digest) || rolled_back.as_deref() == Some(digest))
            })
            .collect();
        report.changes.extend(self.check_each(changed, &config.host));
        Ok(report)
    }

    /// Checks and swaps in each changed tenant, several at once: a tenant
    /// whose plugins are slow to compile (or to answer `info()`) holds up
    /// only itself. The changes come back in the tenants' order.
    fn check_each(&self, changed: Vec<TenantConfig>, host: &crate::config::HostConfig) -> Vec<TenantChange> {
        let workers = std::thread::available_parallelism().map_or(1, usize::from).max(MIN_CHECKERS).min(changed.len());
        let queue = std::sync::Mutex::new(changed.into_iter().enumerate().collect::<std::collections::VecDeque<_>>());
        let done = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some((at, tenant)) = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
                        if let Some(change) = self.check_one(tenant, host) {
                            done.lock().unwrap_or_else(PoisonError::into_inner).push((at, change));
                        }
                    }
                });
            }
        });
        let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
        done.sort_by_key(|(at, _)| *at);
        done.into_iter().map(|(_, change)| change).collect()
    }

    /// Checks one changed tenant and swaps it in if it passes. `None` when
    /// there is nothing to report here: another reload is checking the
    /// tenant already (it reads the file again once it is done, so this
    /// edit is not lost), or the version running is this one by now.
    fn check_one(&self, mut tenant: TenantConfig, host: &crate::config::HostConfig) -> Option<TenantChange> {
        let name = tenant.name.clone();
        let path = tenant.path.clone();
        let check = self.checking.begin(&name)?;
        loop {
            // Another reload may have swapped this version in meanwhile.
            let running = self.tenants().into_iter().find(|t| t.config.name == name);
            let change = if running.as_ref().is_some_and(|t| t.version_digest() == tenant.version_digest) {
                None
            } else {
                Some(self.check_and_swap(tenant, host, running.as_deref()))
            };
            // A file gone meanwhile is the removal the other reload reports.
            if !check.again() || !path.exists() {
                return change;
            }
            // A reload that began meanwhile left this tenant to this check.
            tracing::info!(tenant = %name, "the tenant file changed again while it was checked: checking it again");
            tenant = match TenantConfig::load(&path, host) {
                Ok(tenant) => tenant,
                Err(errors) => return Some(self.refuse(&name, errors.0.iter().map(ToString::to_string).collect())),
            };
        }
    }

    /// Checks a new version of a tenant in full and swaps it in if it passes.
    fn check_and_swap(
        &self,
        tenant: TenantConfig,
        host: &crate::config::HostConfig,
        running: Option<&LoadedTenant>,
    ) -> TenantChange {
        let name = tenant.name.clone();
        match self.validate_latest(tenant, host, running) {
            Ok(loaded) => {
                let plugins = loaded.digests();
                {
                    let mut swaps = self.swap_log();
                    swaps.record(&loaded);
                    swaps.refused.remove(&name);
                    swaps.rolled_back_from.remove(&name);
                }
                self.swap(&name, Some(Arc::new(loaded)));
                tracing::info!(tenant = %name, ?plugins, "tenant (re)loaded: new runs use these plugin versions");
                match running {
                    Some(_) => TenantChange::Swapped { tenant: name, plugins },
                    None => TenantChange::Added { tenant: name, plugins },
                }
            }
            Err(problems) => self.refuse(&name, problems),
        }
    }

    fn refuse(&self, tenant: &str, problems: Vec<String>) -> TenantChange {
        for problem in &problems {
            tracing::error!(tenant, "new version refused, the running one stays: {problem}");
        }
        let refusal = Refusal { at: now(), problems: problems.clone() };
        self.swap_log().refused.insert(tenant.to_string(), refusal);
        TenantChange::Refused { tenant: tenant.to_string(), problems }
    }

    /// Validates a new version of a tenant, and validates it again for as
    /// long as its file changed while it was being checked (compiling takes a
    /// while): an edit that lands meanwhile is read and checked in this same
    /// reload, never installed under another version's content or lost.
    fn validate_latest(
        &self,
        mut tenant: TenantConfig,
        host: &crate::config::HostConfig,
        running: Option<&LoadedTenant>,
    ) -> Result<LoadedTenant, Vec<String>> {
        /// A file rewritten faster than it can be checked is checked this
        /// many times; the last version read is the one reported.
        const MAX_CHECKS: usize = 5;
        let mut checks = 1;
        loop {
            let path = tenant.path.clone();
            let read = tenant.file_digest.clone();
            let result = self.validate(tenant, running);
            if checks == MAX_CHECKS || file_digest(&path) == read {
                return result;
            }
            checks += 1;
            tracing::info!(tenant = %path.display(), "the tenant file changed while it was checked: checking it again");
            tenant = TenantConfig::load(&path, host)
                .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        }
    }

    /// Every check a new version of a tenant must pass before it runs.
    fn validate(&self, tenant: TenantConfig, running: Option<&LoadedTenant>) -> Result<LoadedTenant, Vec<String>> {
        let as_strings = |errors: ConfigErrors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>();
        let plugins = compile_tenant(&self.engine, &tenant).map_err(as_strings)?;
        let mut problems = Vec::new();
        for (name, compiled) in &plugins {
            let setup = PluginSetup::from_config(&tenant.name, &tenant.plugins[name]);
            if let Err(e) = plugin_info(&self.engine, compiled, &setup) {
                problems.push(format!("`info()` of the new version failed: {e}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let loaded = LoadedTenant::new(tenant, plugins);
        if let Some(running) = running {
            problems.extend(self.canaries(&loaded, running));
        }
        if problems.is_empty() { Ok(loaded) } else { Err(problems) }
    }

    /// `canary = "replay"`: for each diff pipeline asking for it whose
    /// transforms changed, replays its last run with the new version and
    /// returns a problem if the plan would change by more than its guard.
    fn canaries(&self, new: &LoadedTenant, running: &LoadedTenant) -> Vec<String> {
        let mut problems = Vec::new();
        for pipeline in new.config.pipelines.values() {
            if pipeline.mode != Mode::Diff || pipeline.diff.canary != Canary::Replay {
                continue;
            }
            let changed = pipeline.transforms.iter().any(|t| {
                let digest = |tenant: &LoadedTenant| tenant.plugins.get(t).map(|c| c.digest.clone());
                let config = |tenant: &LoadedTenant| tenant.config.plugins.get(t).map(|p| p.config.clone());
                digest(new) != digest(running) || config(new) != config(running)
            });
            if !changed {
                continue;
            }
            let id = PipelineId::new(&new.config.name, &pipeline.name);
            let last = match self.state.runs(Some(&id), 20) {
                Ok(runs) => runs.into_iter().find(|r| {
                    matches!(r.status, RunStatus::Succeeded | RunStatus::Blocked)
                        && crate::sync::diff::archive::Archive::new(self.state.as_ref(), r.id).is_kept()
                }),
                Err(e) => {
                    problems.push(format!("canary for {id}: cannot read its runs: {e}"));
                    continue;
                }
            };
            let Some(last) = last else {
                tracing::info!(pipeline = %id, "canary: no archived run to replay yet; the new version is not compared");
                continue;
            };
            let stop = AtomicBool::new(false);
            let job = crate::sync::SyncJob {
                engine: &self.engine,
                state: self.state.as_ref(),
                tenant: new.config.clone(),
                pipeline: pipeline.clone(),
                plugins: new.plugins.clone(),
                stop: &stop,
                holder: &self.holder,
                lease_time: self.host.lease_time,
                lease: crate::sync::LeaseWatch::default(),
                superseded: Arc::new(AtomicBool::new(false)),
                options: SyncOptions::default(),
                state_dir: &self.host.state_dir,
                keep_run_archives: self.host.keep_run_archives,
                observer: crate::sync::events::ignore(),
            };
            match job.replay(last.id) {
                Err(e) => problems.push(format!("canary for {id}: replaying run {} failed: {e}", last.id)),
                Ok(replay) => {
                    let r = &replay.recorded;
                    let destination = (r.updates + r.deletes + r.unchanged + r.held).max(1);
                    let ratio = replay.differing_keys as f64 / destination as f64;
                    if ratio > pipeline.diff.max_change_ratio {
                        problems.push(format!(
                            "canary for {id}: replaying run {} with the new version changes the plan for {} of {} \
                             keys ({:.1}%), more than max_change_ratio {}",
                            last.id,
                            replay.differing_keys,
                            destination,
                            ratio * 100.0,
                            pipeline.diff.max_change_ratio
                        ));
                    } else {
                        tracing::info!(pipeline = %id, run = last.id, differing = replay.differing_keys, "canary passed");
                    }
                }
            }
        }
        problems
    }

    /// Returns `plugin` of `tenant` to the version active before the current
    /// one, which stays in the history. Holds until the tenant file changes.
    pub fn rollback(&self, tenant: &str, plugin: &str) -> Result<TenantChange, RollbackError> {
        let no_earlier = || RollbackError::NoEarlierVersion { tenant: tenant.to_string(), plugin: plugin.to_string() };
        let running = self.tenant(tenant).ok_or_else(|| RollbackError::NoTenant(tenant.to_string()))?;
        let previous = {
            let swaps = self.swap_log();
            let versions = swaps
                .history
                .get(&(tenant.to_string(), plugin.to_string()))
                .ok_or_else(|| RollbackError::NoPlugin { tenant: tenant.to_string(), plugin: plugin.to_string() })?;
            let current = running.plugins.get(plugin).map(|c| c.digest.clone());
            let current_config = running.config.plugins.get(plugin).map(|p| &p.config);
            versions
                .iter()
                .rev()
                .find(|v| Some(&v.compiled.digest) != current.as_ref() || Some(&v.config.config) != current_config)
                .cloned()
                .ok_or_else(no_earlier)?
        };
        let mut config = (*running.config).clone();
        config.plugins.insert(plugin.to_string(), previous.config.clone());
        let mut plugins = (*running.plugins).clone();
        plugins.insert(plugin.to_string(), previous.compiled.clone());
        let setup = PluginSetup::from_config(tenant, &previous.config);
        plugin_info(&self.engine, &previous.compiled, &setup).map_err(RollbackError::WontStart)?;
        let loaded = LoadedTenant::new(config, plugins);
        let digests = loaded.digests();
        {
            let mut swaps = self.swap_log();
            swaps.rolled_back_from.insert(tenant.to_string(), running.version_digest().to_string());
            // The version rolled away from leaves the history: a second
            // rollback goes further back rather than forth again.
            if let Some(versions) = swaps.history.get_mut(&(tenant.to_string(), plugin.to_string())) {
                versions.retain(|v| {
                    v.compiled.digest != running.plugins[plugin].digest
                        || v.config.config != running.config.plugins[plugin].config
                });
            }
        }
        self.swap(tenant, Some(Arc::new(loaded)));
        tracing::warn!(tenant, plugin, digest = %previous.compiled.digest, "plugin rolled back");
        Ok(TenantChange::Swapped { tenant: tenant.to_string(), plugins: digests })
    }
}

/// Why a plugin could not be rolled back.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no tenant `{0}` is loaded")]
    NoTenant(String),
    #[error("tenant `{tenant}` has no plugin `{plugin}`")]
    NoPlugin { tenant: String, plugin: String },
    #[error("plugin `{plugin}` of tenant `{tenant}` has no earlier version to return to")]
    NoEarlierVersion { tenant: String, plugin: String },
    #[error("the earlier version no longer starts: {0}")]
    WontStart(crate::plugin::PluginError),
}

/// As a log line reads it: "tenant `acme` swapped: map 3f2a9c1b…".
impl std::fmt::Display for TenantChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digests = |plugins: &BTreeMap<String, String>| {
            let short: Vec<String> =
                plugins.iter().map(|(name, digest)| format!("{name} {}", digest.get(..12).unwrap_or(digest))).collect();
            short.join(", ")
        };
        match self {
            TenantChange::Added { tenant, plugins } => write!(f, "tenant `{tenant}` added ({})", digests(plugins)),
            TenantChange::Swapped { tenant, plugins } => write!(f, "tenant `{tenant}` swapped ({})", digests(plugins)),
            TenantChange::Removed { tenant } => write!(f, "tenant `{tenant}` removed"),
            TenantChange::Refused { tenant, problems } => {
                write!(f, "tenant `{tenant}` refused, its running version stays: {}", problems.join("; "))
            }
        }
    }
}

impl TenantChange {
    pub fn tenant(&self) -> &str {
        match self {
            TenantChange::Added { tenant, .. }
            | TenantChange::Swapped { tenant, .. }
            | TenantChange::Removed { tenant }
            | TenantChange::Refused { tenant, .. } => tenant,
        }
    }
}
