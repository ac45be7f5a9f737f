//! The host assembled from its configuration: the plugin engine, every
//! tenant's plugins compiled and checked against the pipelines that use them,
//! and the state store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{Config, ConfigError, ConfigErrors, Role, TenantConfig};
use crate::plugin::{CompiledPlugin, PluginEngine, PluginKind};
use crate::state::{PipelineId, SqliteStore, StateError, StateStore};
use crate::sync::{SyncJob, SyncOptions};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot start the WebAssembly engine: {0:#}")]
    Engine(anyhow::Error),
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

/// Tenant → plugin name → compiled plugin.
type TenantPlugins = BTreeMap<String, BTreeMap<String, Arc<CompiledPlugin>>>;

/// The host: configuration, compiled plugins and state.
pub struct Runtime {
    pub config: Config,
    pub engine: PluginEngine,
    pub state: Arc<dyn StateStore>,
    plugins: TenantPlugins,
}

/// A configuration whose plugins compiled and fit their pipelines.
pub struct Checked {
    pub config: Config,
    engine: PluginEngine,
    plugins: TenantPlugins,
}

impl Runtime {
    /// Loads the configuration at `path`, compiles and checks the plugins of the
    /// chosen tenants, and opens the state store.
    pub fn load(path: &Path, tenants: Tenants<'_>) -> Result<Runtime, LoadError> {
        let Checked { config, engine, plugins } = Self::check(path, tenants)?;
        let state = Arc::new(SqliteStore::open(&config.host.state_dir)?);
        Ok(Runtime { config, engine, state, plugins })
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
                    "no tenant `{name}` (tenants: {})",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            ))
            .into());
        }
        let mut errors = ConfigErrors::default();
        for error in config_errors.0 {
            match tenants {
                Tenants::All => errors.push(error),
                Tenants::Only(name) if error.location.file == tenant_file(&config, name) => errors.push(error),
                Tenants::Only(_) => {}
                Tenants::Serving => tracing::error!("tenant left out: {error}"),
            }
        }
        let engine = PluginEngine::new(config.host.fuel_metering()).map_err(LoadError::Engine)?;
        let mut plugins = BTreeMap::new();
        config.tenants.retain(|tenant| !matches!(tenants, Tenants::Only(name) if name != tenant.name));
        for tenant in &config.tenants {
            match compile_tenant(&engine, tenant) {
                Ok(compiled) => {
                    plugins.insert(tenant.name.clone(), compiled);
                }
                Err(e) if matches!(tenants, Tenants::Serving) => {
                    for error in e.0 {
                        tracing::error!(tenant = %tenant.name, "tenant left out: {error}");
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
        config.tenants.retain(|tenant| plugins.contains_key(&tenant.name));
        errors.into_result(())?;
        Ok(Checked { config, engine, plugins })
    }

    /// The sync job for one pipeline.
    pub fn job<'a>(
        &'a self,
        id: &PipelineId,
        stop: &'a AtomicBool,
        options: SyncOptions,
    ) -> Result<SyncJob<'a>, String> {
        let tenant = self.config.tenant(&id.tenant).ok_or_else(|| format!("no tenant `{}`", id.tenant))?;
        let pipeline = tenant.pipelines.get(&id.pipeline).ok_or_else(|| {
            let known: Vec<&str> = tenant.pipelines.keys().map(String::as_str).collect();
            format!("tenant `{}` has no pipeline `{}` (it has: {})", id.tenant, id.pipeline, known.join(", "))
        })?;
        let plugins =
            self.plugins.get(&tenant.name).ok_or_else(|| format!("tenant `{}` was not loaded", tenant.name))?;
        Ok(SyncJob {
            engine: &self.engine,
            state: self.state.as_ref(),
            tenant,
            pipeline,
            plugins,
            stop,
            options,
            state_dir: &self.config.host.state_dir,
            keep_run_archives: self.config.host.keep_run_archives,
        })
    }

    /// The compiled plugins of a loaded tenant, by name.
    pub fn plugins_of(&self, tenant: &str) -> Option<&BTreeMap<String, Arc<CompiledPlugin>>> {
        self.plugins.get(tenant)
    }

    /// Every pipeline of the loaded tenants.
    pub fn pipelines(&self) -> impl Iterator<Item = (&TenantConfig, &crate::config::PipelineConfig)> {
        self.config
            .tenants
            .iter()
            .filter(|t| self.plugins.contains_key(&t.name))
            .flat_map(|t| t.pipelines.values().map(move |p| (t, p)))
    }
}

/// Where tenant `name`'s file is.
fn tenant_file(config: &Config, name: &str) -> std::path::PathBuf {
    config.host.tenants_dir.join(format!("{name}.toml"))
}

/// Compiles a tenant's plugins and checks that each pipeline uses each plugin
/// in the part its kind plays.
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
