//! Reading and checking `synchost.toml` and the tenant files (`tenants/*.toml`).
//!
//! Every problem is reported with the file, line and key it comes from, and all
//! problems are reported at once, so an operator fixes a config in one pass.
//! Checks that need the plugins themselves (their WIT version, in
//! [`crate::plugin`]; their kind against their role, in [`crate::runtime`];
//! their config against the schema each declares, in [`plugin_schema`]) are
//! made against the locations kept here.

mod allowed_host;
mod connection;
mod duration;
mod error;
mod grants;
mod host_file;
pub mod plugin_schema;
mod schedule;
mod stream;
mod tenant_file;

use std::path::{Path, PathBuf};

pub use allowed_host::AllowedHost;
pub use connection::{ConnectionConfig, Secret, SqlDialect};
pub use error::{ConfigError, ConfigErrors, Location};
pub use grants::load_grants;
pub use host_file::{
    AdminConfig, DEFAULT_ADMIN_BIND, DEFAULT_LEASE_TIME, DEFAULT_MAX_COMPILE_TIME, DEFAULT_MAX_PLUGIN_SIZE,
    DEFAULT_WATCH_DEBOUNCE, HostConfig, Limits, RunBudget, StateConfig,
};
pub use schedule::Schedule;
pub use stream::StreamConfig;
pub use tenant_file::{
    Canary, Deletes, DiffPolicy, DirGrant, EventPolicy, Mode, PipelineConfig, PluginConfig, PluginRef, Role,
    TenantConfig, text_digest,
};

/// The whole configuration: host settings and every tenant.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: HostConfig,
    pub tenants: Vec<TenantConfig>,
}

impl Config {
    /// Loads `synchost.toml` at `path` and every tenant file in its tenants
    /// directory, and checks everything that can be checked without the plugins.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let (config, errors) = Self::load_each(path)?;
        errors.into_result(config)
    }

    /// Like [`Config::load`], but a tenant file with problems does not fail
    /// the whole: the tenants that check are returned, and beside them the
    /// problems of the others. Only a broken `synchost.toml` is fatal.
    pub fn load_each(path: &Path) -> Result<(Config, ConfigErrors), ConfigErrors> {
        let host = HostConfig::load(path)?;
        let mut errors = ConfigErrors::default();
        let mut tenants = Vec::new();
        for file in tenant_files(&host, &mut errors) {
            match TenantConfig::load(&file, &host) {
                Ok(tenant) => tenants.push(tenant),
                Err(e) => errors.extend(e),
            }
        }
        Ok((Config { host, tenants }, errors))
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }
}

/// The tenant files, in name order so that reports are stable.
fn tenant_files(host: &HostConfig, errors: &mut ConfigErrors) -> Vec<PathBuf> {
    let dir = &host.tenants_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(ConfigError::new(
                Location::file(&host.path),
                "tenants_dir",
                format!("cannot read the tenants directory `{}`: {e}", dir.display()),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

/// Whether `name` may name a tenant, plugin or pipeline: it appears in paths,
/// logs and the CLI (`tenant/pipeline`), so it keeps to a safe alphabet.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What is wrong with `name` as the name of a `kind` (tenant, plugin,
/// pipeline, connection, stream), if anything.
pub(crate) fn name_problem(kind: &str, name: &str) -> Option<String> {
    (!is_valid_name(name))
        .then(|| format!("`{name}` is not a valid {kind} name: use letters, digits, `_` and `-` (at most 64)"))
}
