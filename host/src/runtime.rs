//! The host assembled from its configuration: the plugin engine, every
//! tenant's plugins compiled and checked against the pipelines that use them,
//! and the state store.
//!
//! Each tenant is held as a [`LoadedTenant`]: its config and compiled plugins,
//! swapped as a whole when its file changes ([`reload`]). A sync takes the
//! tenant as it is when the sync starts and keeps it to its end, so a run in
//! flight finishes on the versions it started with.

mod reload;
mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::{Config, ConfigError, ConfigErrors, HostConfig, Role, TenantConfig};
use crate::plugin::{CompiledPlugin, EngineOptions, PluginEngine, PluginKind, PluginSetup};
use crate::state::{PipelineId, StateError, StateStore};
use crate::sync::events::{self, Observer, SyncEvent};
use crate::sync::{SyncError, SyncJob, SyncOptions};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] crate::plugin::EngineError),
}

/// Which tenants to load.
#[derive(Debug, Clone, Copy)]
pub enum Tenants<'a> {
    /// Every tenant; a problem with any of them fails the load.
    All,
    /// One tenant; only its own problems fail the load.
    Only(&'a str),
    /// Every tenant that loads; the problems of the others are logged and
    /// those tenants left out, so that one tenant cannot stop the rest.
    Serving,
}

pub use reload::{ReloadReport, RollbackError, TenantChange};
pub use status::{LiveRun, PipelineStatus, PluginStatus, PluginVersionStatus, Status, TenantStatus};

/// Tenant → plugin name → compiled plugin.
type TenantPlugins = BTreeMap<String, BTreeMap<String, Arc<CompiledPlugin>>>;

/// One tenant as loaded: its config and its compiled plugins, checked
/// together. Never changed once made; a reload makes a new one.
pub struct LoadedTenant {
    pub config: Arc<TenantConfig>,
    pub plugins: Arc<BTreeMap<String, Arc<CompiledPlugin>>>,
    /// When this version of the tenant became active (RFC 3339).
    pub loaded_at: String,
    /// Set when a newer version replaced this one: event syncs still running
    /// on it end at their next batch boundary, so the next run uses the new one.
    superseded: Arc<AtomicBool>,
}

impl LoadedTenant {
    /// Whether a newer version of the tenant (or its removal) replaced this one.
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    /// Plugin name → sha256 of the version in use.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.plugins.iter().map(|(name, compiled)| (name.clone(), compiled.digest.clone())).collect()
    }

    fn new(config: TenantConfig, plugins: BTreeMap<String, Arc<CompiledPlugin>>) -> Self {
        LoadedTenant {
            config: Arc::new(config),
            plugins: Arc::new(plugins),
            loaded_at: now(),
            superseded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// What this version was loaded from (the tenant file's text, and on a
    /// dev host its unpinned plugins): an unchanged one is not reloaded.
    fn version_digest(&self) -> &str {
        &self.config.version_digest
    }
}

/// The host: its settings, the tenants it serves, the engine and the state.
pub struct Runtime {
    pub host: HostConfig,
    pub engine: PluginEngine,
    pub state: Arc<dyn StateStore>,
    /// Who this process's runs hold pipeline leases as: the host's
    /// `host_id`, or for a one-off command its own name (see
    /// [`Runtime::for_command`]).
    pub holder: String,
    tenants: RwLock<BTreeMap<String, Arc<LoadedTenant>>>,
    /// What hot swaps need to remember: earlier versions, refusals.
    swaps: Mutex<reload::SwapLog>,
    /// The tenants a reload is checking now (see [`reload`]).
    checking: reload::Checking,
    /// Hears what the runtime and every job it makes do (see
    /// [`crate::sync::events`]); nothing, unless set.
    pub observer: Observer,
}

/// A configuration whose plugins compiled and fit their pipelines.
pub struct Checked {
    pub config: Config,
    engine: PluginEngine,
    plugins: TenantPlugins,
    /// With [`Tenants::Serving`]: the tenants left out, with their problems.
    left_out: BTreeMap<String, Vec<String>>,
}

impl Runtime {
    /// Loads the configuration at `path`, compiles and checks the plugins of the
    /// chosen tenants, and opens the state store.
    pub fn load(path: &Path, tenants: Tenants<'_>) -> Result<Runtime, LoadError> {
        let Checked { config, engine, mut plugins, left_out } = Self::check(path, tenants)?;
        let state = crate::state::open(&config.host)?;
        let mut loaded = BTreeMap::new();
        for tenant in config.tenants {
            let plugins = plugins.remove(&tenant.name).unwrap_or_default();
            loaded.insert(tenant.name.clone(), Arc::new(LoadedTenant::new(tenant, plugins)));
        }
        let mut swaps = reload::SwapLog::new(&loaded);
        swaps.refuse_at_start(left_out);
        let swaps = Mutex::new(swaps);
        Ok(Runtime {
            holder: config.host.host_id.clone(),
            host: config.host,
            engine,
            state,
            tenants: RwLock::new(loaded),
            swaps,
            checking: reload::Checking::default(),
            observer: events::ignore(),
        })
    }

    /// This runtime for a one-off command beside a daemon (`sync`,
    /// `approve`): its runs hold leases under a name of their own, never the
    /// host's `host_id`, so that a command can never renew (and so share) a
    /// daemon's lease.
    pub fn for_command(mut self) -> Runtime {
        self.holder = command_holder();
        self
    }

    /// Everything `load` checks, without opening the state: what `synchost
    /// validate` runs.
    pub fn check(path: &Path, tenants: Tenants<'_>) -> Result<Checked, LoadError> {
        let (mut config, config_errors) = Config::load_each(path)?;
        if let Tenants::Only(name) = tenants
            && config.tenant(name).is_none()
            && !config_errors.0.iter().any(|e| e.location.file == tenant_file(&config, name))
        {
            let known: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
            return Err(ConfigErrors::from(ConfigError::new(
                crate::config::Location::file(&config.host.tenants_dir),
                "",
                format!(
                    "no tenant `{name}`: no file `{name}.toml` here (tenants: {})",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            ))
            .into());
        }
        let mut errors = ConfigErrors::default();
        let mut left_out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut leave_out = |tenant: String, error: ConfigError| {
            tracing::error!("tenant left out: {error}");
            left_out.entry(tenant).or_default().push(error.to_string());
        };
        for error in config_errors.0 {
            match tenants {
                Tenants::All => errors.push(error),
                Tenants::Only(name) if error.location.file == tenant_file(&config, name) => errors.push(error),
                Tenants::Only(_) => {}
                Tenants::Serving => leave_out(tenant_of(&error), error),
            }
        }
        let engine = PluginEngine::new(EngineOptions::for_host(&config.host)).map_err(LoadError::Engine)?;
        let mut plugins = BTreeMap::new();
        config.tenants.retain(|tenant| !matches!(tenants, Tenants::Only(name) if name != tenant.name));
        for tenant in &config.tenants {
            match compile_tenant(&engine, tenant) {
                Ok(compiled) => {
                    plugins.insert(tenant.name.clone(), compiled);
                }
                Err(e) if matches!(tenants, Tenants::Serving) => {
                    for error in e.0 {
                        leave_out(tenant.name.clone(), error);
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
        config.tenants.retain(|tenant| plugins.contains_key(&tenant.name));
        errors.into_result(())?;
        Ok(Checked { config, engine, plugins, left_out })
    }

    /// The sync job for one pipeline, on the tenant's plugins as they are now.
    pub fn job<'a>(
        &'a self,
        id: &PipelineId,
        stop: &'a AtomicBool,
        options: SyncOptions,
    ) -> Result<SyncJob<'a>, SyncError> {
        let tenant = self.tenant(&id.tenant).ok_or_else(|| SyncError::NoTenant(id.tenant.clone()))?;
        let pipeline = tenant.config.pipelines.get(&id.pipeline).cloned().ok_or_else(|| SyncError::NoPipeline {
            tenant: id.tenant.clone(),
            pipeline: id.pipeline.clone(),
            known: tenant.config.pipelines.keys().cloned().collect(),
        })?;
        Ok(SyncJob {
            engine: &self.engine,
            state: self.state.as_ref(),
            tenant: tenant.config.clone(),
            pipeline,
            plugins: tenant.plugins.clone(),
            stop,
            holder: &self.holder,
            lease_time: self.host.lease_time,
            lease: crate::sync::LeaseWatch::default(),
            superseded: tenant.superseded.clone(),
            options,
            state_dir: &self.host.state_dir,
            keep_run_archives: self.host.keep_run_archives,
            observer: self.observer.clone(),
        })
    }

    /// A loaded tenant, as it is now.
    pub fn tenant(&self, name: &str) -> Option<Arc<LoadedTenant>> {
        self.tenants.read().expect("tenant map poisoned").get(name).cloned()
    }

    /// Every loaded tenant, as they are now, in name order.
    pub fn tenants(&self) -> Vec<Arc<LoadedTenant>> {
        self.tenants.read().expect("tenant map poisoned").values().cloned().collect()
    }

    /// What hot swaps remember (earlier versions, refusals), locked.
    fn swap_log(&self) -> std::sync::MutexGuard<'_, reload::SwapLog> {
        self.swaps.lock().expect("swap log poisoned")
    }

    /// Makes `tenant` the active version of its name (or removes the name,
    /// with `None`). The version it replaces is marked superseded.
    fn swap(&self, name: &str, tenant: Option<Arc<LoadedTenant>>) {
        let mut tenants = self.tenants.write().expect("tenant map poisoned");
        let new_plugins = tenant.as_ref().map(|t| t.plugins.clone());
        let old = match tenant {
            Some(tenant) => tenants.insert(name.to_string(), tenant),
            None => tenants.remove(name),
        };
        if let Some(old) = old {
            old.superseded.store(true, Ordering::Relaxed);
            for (plugin, compiled) in new_plugins.iter().flat_map(|plugins| plugins.iter()) {
                if old.plugins.get(plugin).is_some_and(|was| was.digest != compiled.digest) {
                    (self.observer)(&SyncEvent::PluginSwapped { tenant: name, plugin, digest: &compiled.digest });
                }
            }
        }
    }
}

/// The digest of a tenant file as it is on disk now (see
/// [`TenantConfig::file_digest`]); empty if it cannot be read, so that it
/// never matches and the file is looked at again.
fn file_digest(path: &Path) -> String {
    std::fs::read_to_string(path).map(|text| crate::config::text_digest(&text)).unwrap_or_default()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The tenant whose file an error is in (its file's stem).
fn tenant_of(error: &ConfigError) -> String {
    error.location.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Where tenant `name`'s file is.
fn tenant_file(config: &Config, name: &str) -> PathBuf {
    config.host.tenants_dir.join(format!("{name}.toml"))
}

/// Compiles a tenant's plugins and checks that each pipeline uses each plugin
/// in the part its kind plays.
/// Checks a plugin's `config` table against the schema the plugin declares,
/// if it declares one (WIT 0.2.1 on).
fn check_plugin_config(
    engine: &PluginEngine,
    tenant: &TenantConfig,
    plugin: &crate::config::PluginConfig,
    compiled: &CompiledPlugin,
) -> Result<(), ConfigErrors> {
    let setup = PluginSetup::from_config(&tenant.name, plugin);
    match crate::plugin::config_schema(engine, compiled, &setup) {
        Ok(None) => Ok(()),
        Ok(Some(schema)) => crate::config::plugin_schema::check(plugin, &schema),
        Err(e) => Err(ConfigError::new(
            plugin.location.clone(),
            format!("plugins.{}.path", plugin.name),
            format!("cannot read the plugin's config schema: {e}"),
        )
        .into()),
    }
}

fn compile_tenant(
    engine: &PluginEngine,
    tenant: &TenantConfig,
) -> Result<BTreeMap<String, Arc<CompiledPlugin>>, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut compiled = BTreeMap::new();
    for plugin in tenant.plugins.values() {
        let key = format!("plugins.{}.path", plugin.name);
        let bytes = match std::fs::read(&plugin.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                errors.push(ConfigError::new(
                    plugin.location.clone(),
                    key,
                    format!("cannot read `{}`: {e}", plugin.path.display()),
                ));
                continue;
            }
        };
        match engine.compile(&plugin.name, &bytes) {
            // The file may have changed since the config was checked.
            Ok(c) if c.digest != plugin.sha256 => errors.push(ConfigError::new(
                plugin.location.clone(),
                format!("plugins.{}.sha256", plugin.name),
                format!(
                    "digest mismatch for `{}`: the file has {}, the tenant file pins {}",
                    plugin.path.display(),
                    c.digest,
                    plugin.sha256
                ),
            )),
            Ok(c) => {
                if let Err(e) = check_plugin_config(engine, tenant, plugin, &c) {
                    errors.extend(e);
                }
                compiled.insert(plugin.name.clone(), c);
            }
            Err(e) => errors.push(ConfigError::new(plugin.location.clone(), key, e.to_string())),
        }
    }
    for pipeline in tenant.pipelines.values() {
        for reference in &pipeline.references {
            let Some(plugin) = compiled.get(&reference.plugin) else { continue };
            let wanted = match reference.role {
                Role::Source => PluginKind::Source,
                Role::Transform => PluginKind::Transform,
                Role::Destination => PluginKind::Destination,
            };
            if plugin.kind != wanted {
                errors.push(ConfigError::new(
                    reference.location.clone(),
                    reference.key.clone(),
                    format!(
                        "plugin `{}` is a {} plugin, but this place needs a {wanted} plugin",
                        reference.plugin, plugin.kind
                    ),
                ));
            }
        }
    }
    errors.into_result(compiled)
}

/// How a one-off command of this process names itself as a lease holder or
/// an asker: `command:MACHINE:PID`.
pub(crate) fn command_holder() -> String {
    format!("command:{}:{}", crate::state::machine_name(), std::process::id())
}
