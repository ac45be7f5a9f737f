//! A tenant file, `tenants/<tenant>.toml`: the plugins a tenant uses (pinned by
//! sha256, with their config and grants) and the pipelines that join them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Location, parse_toml};
use super::host_file::{HostConfig, Limits, LimitsFile};
use super::is_valid_name;
use super::schedule::Schedule;

/// One tenant, checked.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The file's stem: `tenants/district.toml` is tenant `district`.
    pub name: String,
    pub path: PathBuf,
    pub plugins: BTreeMap<String, PluginConfig>,
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

/// A plugin as one tenant configures it.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    /// The `.wasm` file, absolute.
    pub path: PathBuf,
    /// The pinned digest, lowercase hex; the file's content was checked against it.
    pub sha256: String,
    /// The plugin's `config` table, handed to it as JSON.
    pub config: serde_json::Value,
    pub dirs: Vec<DirGrant>,
    pub secrets: BTreeMap<String, String>,
    pub limits: Limits,
    /// Where `path` stands in the tenant file, for errors found later.
    pub location: Location,
}

/// A host directory a plugin may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub write: bool,
}

/// The two ways a pipeline syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Diff,
    Event,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Diff => "diff",
            Mode::Event => "event",
        })
    }
}

/// A pipeline, checked: every plugin it names exists in its tenant.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    pub mode: Mode,
    pub source: String,
    pub transforms: Vec<String>,
    pub destination: String,
    pub schedule: Schedule,
    /// Events asked of the source per batch (event syncs).
    pub max_batch: u32,
    /// Operations handed to the destination per call.
    pub apply_batch: usize,
    /// Every plugin the pipeline names, with where, for errors found later.
    pub references: Vec<PluginRef>,
}

/// A pipeline's reference to one of its tenant's plugins.
#[derive(Debug, Clone)]
pub struct PluginRef {
    pub role: Role,
    pub plugin: String,
    /// The key that names it, e.g. `pipelines.roster.source`.
    pub key: String,
    pub location: Location,
}

/// The part a plugin plays in a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Transform,
    Destination,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    plugins: BTreeMap<Spanned<String>, PluginEntry>,
    #[serde(default)]
    pipelines: BTreeMap<Spanned<String>, PipelineEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    path: Spanned<String>,
    sha256: Spanned<String>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    dirs: Vec<DirEntry>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirEntry {
    host: Spanned<String>,
    #[serde(default = "default_guest_dir")]
    guest: String,
    #[serde(default)]
    write: bool,
}

fn default_guest_dir() -> String {
    "/data".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineEntry {
    mode: Mode,
    source: Spanned<String>,
    #[serde(default)]
    transforms: Vec<Spanned<String>>,
    destination: Spanned<String>,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    max_batch: Option<Spanned<u32>>,
    #[serde(default)]
    apply_batch: Option<Spanned<usize>>,
}

impl TenantConfig {
    /// Reads and checks one tenant file.
    pub fn load(path: &Path, host: &HostConfig) -> Result<TenantConfig, ConfigErrors> {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if !is_valid_name(&name) {
            return Err(ConfigError::new(
                Location::file(path),
                "",
                format!("`{name}` is not a valid tenant name: use letters, digits, `_` and `-`"),
            )
            .into());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(Location::file(path), "", format!("cannot read the tenant file: {e}")))?;
        let file: TenantFile = parse_toml(path, &text)?;
        let checker = Checker { path, text: &text, host };
        let mut errors = ConfigErrors::default();

        // References are checked against every declared plugin, so a plugin
        // whose own entry has an error is not reported missing as well.
        let declared: std::collections::BTreeSet<String> =
            file.plugins.keys().map(|name| name.get_ref().clone()).collect();
        let mut plugins = BTreeMap::new();
        for (plugin_name, entry) in file.plugins {
            match checker.plugin(plugin_name.get_ref(), plugin_name.span().start, entry) {
                Ok(plugin) => {
                    plugins.insert(plugin.name.clone(), plugin);
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut pipelines = BTreeMap::new();
        for (pipeline_name, entry) in file.pipelines {
            match checker.pipeline(pipeline_name.get_ref(), pipeline_name.span().start, entry, &declared) {
                Ok(pipeline) => {
                    pipelines.insert(pipeline.name.clone(), pipeline);
                }
                Err(e) => errors.extend(e),
            }
        }
        errors.into_result(TenantConfig { name, path: path.to_path_buf(), plugins, pipelines })
    }
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    host: &'a HostConfig,
}

impl Checker<'_> {
    fn at(&self, offset: usize) -> Location {
        Location::at(self.path, self.text, offset)
    }

    fn error(&self, offset: usize, key: String, message: String) -> ConfigError {
        ConfigError::new(self.at(offset), key, message)
    }

    fn plugin(&self, name: &str, name_at: usize, entry: PluginEntry) -> Result<PluginConfig, ConfigErrors> {
        let table = format!("plugins.{name}");
        let mut errors = ConfigErrors::default();
        if !is_valid_name(name) {
            errors.push(self.error(
                name_at,
                table.clone(),
                format!("`{name}` is not a valid plugin name: use letters, digits, `_` and `-`"),
            ));
        }
        let path = self.host.plugin_dir.join(entry.path.get_ref());
        let pinned = entry.sha256.get_ref().trim().to_ascii_lowercase();
        if pinned.len() != 64 || !pinned.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(self.error(
                entry.sha256.span().start,
                format!("{table}.sha256"),
                format!("`{}` is not a sha256 digest (64 hex digits)", entry.sha256.get_ref()),
            ));
        }
        match std::fs::read(&path) {
            Err(e) => errors.push(self.error(
                entry.path.span().start,
                format!("{table}.path"),
                format!("cannot read plugin file `{}`: {e}", path.display()),
            )),
            Ok(bytes) => {
                let actual = hex::encode(Sha256::digest(&bytes));
                if errors.is_empty() && actual != pinned {
                    errors.push(self.error(
                        entry.sha256.span().start,
                        format!("{table}.sha256"),
                        format!(
                            "digest mismatch for `{}`: the file has {actual}, the tenant file pins {pinned}",
                            path.display()
                        ),
                    ));
                }
            }
        }
        let base_dir = self.path.parent().unwrap_or(Path::new("."));
        let mut dirs = Vec::new();
        for (i, dir) in entry.dirs.into_iter().enumerate() {
            let host_dir = std::path::absolute(base_dir.join(dir.host.get_ref())).unwrap_or_default();
            if !host_dir.is_dir() {
                errors.push(self.error(
                    dir.host.span().start,
                    format!("{table}.dirs[{i}].host"),
                    format!("`{}` is not a directory", host_dir.display()),
                ));
            }
            if !dir.guest.starts_with('/') {
                errors.push(self.error(
                    dir.host.span().start,
                    format!("{table}.dirs[{i}].guest"),
                    format!("`{}` must be an absolute guest path such as \"/data\"", dir.guest),
                ));
            }
            dirs.push(DirGrant { host: host_dir, guest: dir.guest, write: dir.write });
        }
        let limits = match entry.limits.apply(self.host.limits, self.path, self.text, &format!("{table}.limits")) {
            Ok(limits) => limits,
            Err(e) => {
                errors.extend(e);
                self.host.limits
            }
        };
        let config = serde_json::to_value(&entry.config).expect("a TOML table converts to JSON");
        errors.into_result(PluginConfig {
            name: name.to_string(),
            path,
            sha256: pinned,
            config,
            dirs,
            secrets: entry.secrets,
            limits,
            location: self.at(entry.path.span().start),
        })
    }

    fn pipeline(
        &self,
        name: &str,
        name_at: usize,
        entry: PipelineEntry,
        declared: &std::collections::BTreeSet<String>,
    ) -> Result<PipelineConfig, ConfigErrors> {
        let table = format!("pipelines.{name}");
        let mut errors = ConfigErrors::default();
        if !is_valid_name(name) {
            errors.push(self.error(
                name_at,
                table.clone(),
                format!("`{name}` is not a valid pipeline name: use letters, digits, `_` and `-`"),
            ));
        }
        let mut references = Vec::new();
        let mut reference = |role: Role, key: String, plugin: &Spanned<String>, errors: &mut ConfigErrors| {
            let location = self.at(plugin.span().start);
            if !declared.contains(plugin.get_ref()) {
                let known: Vec<&str> = declared.iter().map(String::as_str).collect();
                errors.push(ConfigError::new(
                    location.clone(),
                    key.clone(),
                    format!(
                        "no plugin named `{}` in this tenant (it has: {})",
                        plugin.get_ref(),
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            }
            references.push(PluginRef { role, plugin: plugin.get_ref().clone(), key, location });
        };
        reference(Role::Source, format!("{table}.source"), &entry.source, &mut errors);
        for (i, transform) in entry.transforms.iter().enumerate() {
            reference(Role::Transform, format!("{table}.transforms[{i}]"), transform, &mut errors);
        }
        reference(Role::Destination, format!("{table}.destination"), &entry.destination, &mut errors);

        let schedule = match &entry.schedule {
            None => Schedule::Manual,
            Some(text) => text.get_ref().parse().unwrap_or_else(|e| {
                errors.push(self.error(
                    text.span().start,
                    format!("{table}.schedule"),
                    format!("invalid schedule {e}"),
                ));
                Schedule::Manual
            }),
        };
        let mut positive = |value: &Option<Spanned<usize>>, key: &str, default: usize| match value {
            Some(v) if *v.get_ref() == 0 => {
                errors.push(self.error(v.span().start, format!("{table}.{key}"), "must be at least 1".into()));
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
        let max_batch =
            positive(&entry.max_batch.map(|v| Spanned::new(v.span(), *v.get_ref() as usize)), "max_batch", 1000) as u32;
        let apply_batch = positive(&entry.apply_batch, "apply_batch", 500);
        errors.into_result(PipelineConfig {
            name: name.to_string(),
            mode: entry.mode,
            source: entry.source.into_inner(),
            transforms: entry.transforms.into_iter().map(Spanned::into_inner).collect(),
            destination: entry.destination.into_inner(),
            schedule,
            max_batch,
            apply_batch,
            references,
        })
    }
}
