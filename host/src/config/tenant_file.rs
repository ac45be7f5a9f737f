//! A tenant file, `tenants/<tenant>.toml`: the plugins a tenant uses (pinned by
//! sha256, with their config and grants), the databases and streams they may
//! reach (`[connections.NAME]`, see [`super::connection`]; `[streams.NAME]`,
//! see [`super::stream`]) and the pipelines that join them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::allowed_host::AllowedHost;
use super::connection::{ConnectionConfig, ConnectionEntry, Site};
use super::duration::{ABOVE_ZERO, parse_duration};
use super::error::{ConfigError, ConfigErrors, Lines, Location, deserialize_all, parse_document};
use super::host_file::{HostConfig, Limits, LimitsFile};
use super::name_problem;
use super::plugin_schema::ConfigSpots;
use super::schedule::Schedule;
use super::stream::{StreamConfig, StreamEntry};

/// One tenant, checked.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The file's stem: `tenants/district.toml` is tenant `district`.
    pub name: String,
    pub path: PathBuf,
    pub plugins: BTreeMap<String, PluginConfig>,
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// The SQL connections its plugins may be granted, by name.
    pub connections: BTreeMap<String, Arc<ConnectionConfig>>,
    /// The JetStream streams its plugins may be granted, by name.
    pub streams: BTreeMap<String, Arc<StreamConfig>>,
    /// The sha256 of the file's text as it was read for this config: a hot
    /// swap compares it with the file on disk to tell whether the file has
    /// changed since, and never takes it from a second read.
    pub file_digest: String,
    /// What a reload compares to tell whether the tenant changed: the file's
    /// digest, and on a `dev = true` host the digests of its unpinned plugins
    /// too, so that a rebuilt plugin is swapped in as a changed file would be.
    pub version_digest: String,
}

/// A plugin as one tenant configures it.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    /// The `.wasm` file, absolute.
    pub path: PathBuf,
    /// The pinned digest, lowercase hex; the file's content was checked
    /// against it. Unpinned (`dev = true`): the file's digest when it was read.
    pub sha256: String,
    /// Whether the tenant file pins it (always, but on a `dev = true` host).
    pub pinned: bool,
    /// The plugin's `config` table, handed to it as JSON.
    pub config: serde_json::Value,
    /// Where each value of `config` is written, for the errors a check
    /// against the plugin's schema finds (see [`super::plugin_schema`]).
    pub config_spots: ConfigSpots,
    pub dirs: Vec<DirGrant>,
    pub secrets: BTreeMap<String, String>,
    /// Where the plugin may send HTTP requests.
    pub allowed_hosts: Vec<AllowedHost>,
    /// The SQL connections the plugin may open (`connections = [...]`).
    pub connections: Vec<Arc<ConnectionConfig>>,
    /// The JetStream streams the plugin may fetch from (`streams = [...]`).
    pub streams: Vec<Arc<StreamConfig>>,
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

/// The two ways a pipeline syncs, and the kinds of run: a run of an event
/// pipeline that repairs it against a diff (its `reconcile` schedule) is a
/// `reconcile` run. No pipeline has the mode `reconcile` (a tenant file
/// gives `diff` or `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Diff,
    Event,
    Reconcile,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Diff => "diff",
            Mode::Event => "event",
            Mode::Reconcile => "reconcile",
        })
    }
}

/// The modes a tenant file may give a pipeline (a `reconcile` run is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PipelineMode {
    Diff,
    Event,
}

impl From<PipelineMode> for Mode {
    fn from(mode: PipelineMode) -> Mode {
        match mode {
            PipelineMode::Diff => Mode::Diff,
            PipelineMode::Event => Mode::Event,
        }
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
    /// Event syncs: when to reconcile the destination against a diff of the
    /// source's snapshot (see [`crate::sync::diff`]'s `reconcile`).
    pub reconcile: Option<Schedule>,
    /// Events asked of the source per batch (event syncs).
    pub max_batch: u32,
    /// Operations handed to the destination per call (for a diff pipeline
    /// that does not set it, where its batches start).
    pub apply_batch: usize,
    /// Whether the pipeline sets `apply_batch`. A diff pipeline that does not
    /// lets its batches grow while the destination answers quickly
    /// ([`crate::sync::diff`]'s apply); an event pipeline keeps the default.
    pub apply_batch_set: bool,
    /// Diff syncs: what the sync may change and delete.
    pub diff: DiffPolicy,
    /// Event syncs: lanes, retries.
    pub event: EventPolicy,
    /// What one run may take as a whole.
    pub budget: crate::config::RunBudget,
    /// Every plugin the pipeline names, with where, for errors found later.
    pub references: Vec<PluginRef>,
}

/// How a diff sync treats the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffPolicy {
    /// The fields the sync compares and writes; `None`: those the transforms emit.
    pub owned_fields: Option<Vec<String>>,
    pub deletes: Deletes,
    /// Fields whose values must be unique across the destination.
    pub unique: Vec<String>,
    /// A plan that changes more than this share of the destination is blocked.
    pub max_change_ratio: f64,
    /// What a new version of a transform must pass before a hot swap.
    pub canary: Canary,
    /// Parallel lanes for the apply, as for event syncs (1: one destination
    /// instance applies everything in order).
    pub lanes: usize,
}

/// A check on a new transform version before it replaces the running one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Canary {
    /// Only the checks every plugin passes (it loads, links, answers `info()`).
    #[default]
    None,
    /// Also replay the pipeline's last run with it and refuse it if the plan
    /// would change by more than `max_change_ratio`.
    Replay,
}

impl Default for DiffPolicy {
    fn default() -> Self {
        DiffPolicy {
            owned_fields: None,
            deletes: Deletes::Mirror,
            unique: Vec::new(),
            max_change_ratio: 0.2,
            canary: Canary::None,
            lanes: 1,
        }
    }
}

/// How an event sync applies and retries.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPolicy {
    /// Parallel lanes: keys are spread over them by a stable hash; each lane
    /// has its own destination instance and applies in order.
    pub lanes: usize,
    /// Attempts at a transiently failing operation before it is dead-lettered.
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles with each attempt.
    pub retry_backoff: std::time::Duration,
    /// The longest wait between attempts.
    pub retry_backoff_max: std::time::Duration,
}

impl Default for EventPolicy {
    fn default() -> Self {
        EventPolicy {
            lanes: 4,
            max_attempts: 10,
            retry_backoff: std::time::Duration::from_secs(1),
            retry_backoff_max: std::time::Duration::from_secs(600),
        }
    }
}

/// Which destination records a diff sync may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    /// Any record the source no longer has.
    Mirror,
    /// Only records this pipeline created.
    Managed,
    /// None.
    Never,
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
    #[serde(default)]
    connections: BTreeMap<Spanned<String>, ConnectionEntry>,
    #[serde(default)]
    streams: BTreeMap<Spanned<String>, StreamEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    path: Spanned<String>,
    /// Required, unless synchost.toml sets `dev = true`.
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    dirs: Vec<DirEntry>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    connections: Vec<Spanned<String>>,
    #[serde(default)]
    streams: Vec<Spanned<String>>,
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
    mode: PipelineMode,
    source: Spanned<String>,
    #[serde(default)]
    transforms: Vec<Spanned<String>>,
    destination: Spanned<String>,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    // Event syncs: a diff on its own schedule, which the diff keys shape.
    #[serde(default)]
    reconcile: Option<Spanned<String>>,
    #[serde(default)]
    max_batch: Option<Spanned<u32>>,
    #[serde(default)]
    apply_batch: Option<Spanned<usize>>,
    // Run budgets; the host's [limits] gives the defaults.
    #[serde(default)]
    max_run_rows: Option<Spanned<u64>>,
    #[serde(default)]
    max_run_duration: Option<Spanned<String>>,
    #[serde(default)]
    max_run_memory: Option<Spanned<String>>,
    // Diff syncs only.
    #[serde(default)]
    owned_fields: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    deletes: Option<Spanned<Deletes>>,
    #[serde(default)]
    unique: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    max_change_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    canary: Option<Spanned<Canary>>,
    // Event syncs only.
    #[serde(default)]
    lanes: Option<Spanned<usize>>,
    #[serde(default)]
    max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    retry_backoff: Option<Spanned<String>>,
    #[serde(default)]
    retry_backoff_max: Option<Spanned<String>>,
}

/// The sha256 of a tenant file's text, as [`TenantConfig::file_digest`] keeps it.
pub fn text_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl TenantConfig {
    /// Reads and checks one tenant file.
    pub fn load(path: &Path, host: &HostConfig) -> Result<TenantConfig, ConfigErrors> {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if let Some(problem) = name_problem("tenant", &name) {
            return Err(ConfigError::new(Location::file(path), "", problem).into());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(Location::file(path), "", format!("cannot read the tenant file: {e}")))?;
        // Parsed once: into the file's shape here, and for the places of
        // the plugins' config values (see `ConfigSpots`).
        let document = parse_document(path, &text)?;
        let file: TenantFile = deserialize_all(path, &text, &document)?;
        let mut errors = ConfigErrors::default();

        // Connections first: plugins are granted them by name. A connection
        // whose own table has an error still counts as declared, so a plugin
        // granted it is not reported as well.
        let lines = Lines::new(path, &text);
        let site = Site { lines: &lines };
        let declared_connections: std::collections::BTreeSet<String> =
            file.connections.keys().map(|name| name.get_ref().clone()).collect();
        let mut connections = BTreeMap::new();
        for (connection_name, entry) in file.connections {
            match entry.check(connection_name.get_ref(), connection_name.span().start, &site) {
                Ok(connection) => {
                    connections.insert(connection.name.clone(), Arc::new(connection));
                }
                Err(e) => errors.extend(e),
            }
        }
        let declared_streams: std::collections::BTreeSet<String> =
            file.streams.keys().map(|name| name.get_ref().clone()).collect();
        let mut streams = BTreeMap::new();
        for (stream_name, entry) in file.streams {
            match entry.check(&name, stream_name.get_ref(), stream_name.span().start, &site) {
                Ok(stream) => {
                    streams.insert(stream.name.clone(), Arc::new(stream));
                }
                Err(e) => errors.extend(e),
            }
        }
        let checker = Checker {
            path,
            text: &text,
            host,
            connections: &connections,
            declared_connections: &declared_connections,
            streams: &streams,
            declared_streams: &declared_streams,
            config_spots: ConfigSpots::index_tenant(&lines, &document),
            lines: &lines,
        };

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
        let file_digest = text_digest(&text);
        let unpinned: Vec<&str> = plugins.values().filter(|p| !p.pinned).map(|p| p.sha256.as_str()).collect();
        let version_digest = if unpinned.is_empty() {
            file_digest.clone()
        } else {
            text_digest(&format!("{file_digest}:{}", unpinned.join(":")))
        };
        errors.into_result(TenantConfig {
            version_digest,
            name,
            path: path.to_path_buf(),
            plugins,
            pipelines,
            connections,
            streams,
            file_digest,
        })
    }
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    lines: &'a Lines<'a>,
    host: &'a HostConfig,
    connections: &'a BTreeMap<String, Arc<ConnectionConfig>>,
    declared_connections: &'a std::collections::BTreeSet<String>,
    streams: &'a BTreeMap<String, Arc<StreamConfig>>,
    declared_streams: &'a std::collections::BTreeSet<String>,
    /// Where each plugin's `config` values are written, by plugin name.
    config_spots: BTreeMap<String, ConfigSpots>,
}

impl Checker<'_> {
    fn at(&self, offset: usize) -> Location {
        self.lines.at(offset)
    }

    fn error(&self, offset: usize, key: String, message: String) -> ConfigError {
        ConfigError::new(self.at(offset), key, message)
    }

    /// Checks a plugin's file: within `max_plugin_size`, readable, its sha256
    /// the one pinned, and signed as the host requires. Returns its path and
    /// the pinned digest.
    fn plugin_file(&self, table: &str, entry: &PluginEntry, errors: &mut ConfigErrors) -> (PathBuf, String) {
        let path = self.host.plugin_dir.join(entry.path.get_ref());
        let pinned = match &entry.sha256 {
            Some(sha256) => {
                let pinned = sha256.get_ref().trim().to_ascii_lowercase();
                if pinned.len() != 64 || !pinned.bytes().all(|b| b.is_ascii_hexdigit()) {
                    errors.push(self.error(
                        sha256.span().start,
                        format!("{table}.sha256"),
                        format!("`{}` is not a sha256 digest (64 hex digits)", sha256.get_ref()),
                    ));
                }
                Some(pinned)
            }
            None if self.host.dev => None,
            None => {
                errors.push(
                    self.error(
                        entry.path.span().start,
                        format!("{table}.sha256"),
                        "is missing: pin the plugin's digest (`synchost plugin inspect FILE` prints it), or set \
                     `dev = true` in synchost.toml on a development host"
                            .into(),
                    ),
                );
                None
            }
        };
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let read = if size > self.host.max_plugin_size {
            // Not even read: hashing and compiling grow with the size.
            Err(std::io::Error::other(format!(
                "it is {}, more than the host's max_plugin_size of {}",
                bytesize::ByteSize::b(size),
                bytesize::ByteSize::b(self.host.max_plugin_size)
            )))
        } else {
            std::fs::read(&path)
        };
        match read {
            Err(e) => errors.push(self.error(
                entry.path.span().start,
                format!("{table}.path"),
                format!("cannot read plugin file `{}`: {e}", path.display()),
            )),
            Ok(bytes) => {
                let actual = hex::encode(Sha256::digest(&bytes));
                match &pinned {
                    Some(pinned) if errors.is_empty() && actual != *pinned => errors.push(self.error(
                        entry.sha256.as_ref().map_or(entry.path.span().start, |s| s.span().start),
                        format!("{table}.sha256"),
                        format!(
                            "digest mismatch for `{}`: the file has {actual}, the tenant file pins {pinned}",
                            path.display()
                        ),
                    )),
                    Some(_) => {}
                    // Missing without `dev = true`: an error above already.
                    None if !self.host.dev => {}
                    None => tracing::warn!(
                        "{}: plugin `{}` is not pinned (dev = true): `{}` is loaded as it is now, sha256 {actual}",
                        self.path.display(),
                        table.trim_start_matches("plugins."),
                        path.display()
                    ),
                }
                if let Err(e) =
                    crate::signing::check(&path, &actual, &self.host.trusted_keys, self.host.require_signatures)
                {
                    errors.push(self.error(
                        entry.path.span().start,
                        format!("{table}.path"),
                        format!("plugin `{}` is refused: {e}", path.display()),
                    ));
                }
                return (path, pinned.unwrap_or(actual));
            }
        }
        (path, pinned.unwrap_or_default())
    }

    /// The directories granted to a plugin, each checked to exist and to
    /// name an absolute guest path.
    fn dir_grants(&self, table: &str, grants: Vec<DirEntry>, errors: &mut ConfigErrors) -> Vec<DirGrant> {
        let base_dir = self.path.parent().unwrap_or(Path::new("."));
        let mut dirs = Vec::new();
        for (i, dir) in grants.into_iter().enumerate() {
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
        dirs
    }

    /// The hosts a plugin may reach over HTTP, each parsed.
    fn allowed_hosts(&self, table: &str, hosts: &[Spanned<String>], errors: &mut ConfigErrors) -> Vec<AllowedHost> {
        let mut allowed_hosts = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            match AllowedHost::parse(host.get_ref()) {
                Ok(allowed) => allowed_hosts.push(allowed),
                Err(e) => errors.push(self.error(host.span().start, format!("{table}.allowed_hosts[{i}]"), e)),
            }
        }
        allowed_hosts
    }

    fn plugin(&self, name: &str, name_at: usize, entry: PluginEntry) -> Result<PluginConfig, ConfigErrors> {
        let table = format!("plugins.{name}");
        let mut errors = ConfigErrors::default();
        if let Some(problem) = name_problem("plugin", name) {
            errors.push(self.error(name_at, table.clone(), problem));
        }
        let (path, pinned) = self.plugin_file(&table, &entry, &mut errors);
        let entry_pinned = entry.sha256.is_some();
        let dirs = self.dir_grants(&table, entry.dirs, &mut errors);
        let allowed_hosts = self.allowed_hosts(&table, &entry.allowed_hosts, &mut errors);
        let connections = self.grants(
            &table,
            "connections",
            "connection",
            &entry.connections,
            self.connections,
            self.declared_connections,
            &mut errors,
        );
        let streams =
            self.grants(&table, "streams", "stream", &entry.streams, self.streams, self.declared_streams, &mut errors);
        let fuel_metering = self.host.fuel_metering();
        if let Some((key, at)) = entry.limits.run_budget().first_set() {
            errors.push(
                self.error(
                    at,
                    format!("{table}.limits.{key}"),
                    "bounds a whole run, not a plugin's calls: set it on the pipeline, or in synchost.toml's [limits]"
                        .into(),
                ),
            );
        }
        let limits =
            match entry.limits.apply(self.host.limits, fuel_metering, self.path, self.text, &format!("{table}.limits"))
            {
                Ok(limits) => limits,
                Err(e) => {
                    errors.extend(e);
                    self.host.limits
                }
            };
        let config = serde_json::to_value(&entry.config).expect("a TOML table converts to JSON");
        let config_spots = match self.config_spots.get(name) {
            Some(spots) => spots.clone(),
            None => ConfigSpots::unwritten(name, self.at(name_at)),
        };
        errors.into_result(PluginConfig {
            name: name.to_string(),
            path,
            sha256: pinned,
            pinned: entry_pinned,
            config,
            config_spots,
            dirs,
            secrets: entry.secrets,
            allowed_hosts,
            connections,
            streams,
            limits,
            location: self.at(entry.path.span().start),
        })
    }

    /// The tenant-level items (connections, streams) a plugin's `key` grants
    /// it, each checked to exist. One declared but with errors of its own is
    /// left out without a second report.
    #[allow(clippy::too_many_arguments)]
    fn grants<T>(
        &self,
        table: &str,
        key: &str,
        what: &str,
        granted: &[Spanned<String>],
        available: &BTreeMap<String, Arc<T>>,
        declared: &std::collections::BTreeSet<String>,
        errors: &mut ConfigErrors,
    ) -> Vec<Arc<T>> {
        let mut found = Vec::new();
        for (i, name) in granted.iter().enumerate() {
            match available.get(name.get_ref()) {
                Some(item) => found.push(item.clone()),
                None if declared.contains(name.get_ref()) => {}
                None => {
                    let known: Vec<&str> = declared.iter().map(String::as_str).collect();
                    errors.push(self.error(
                        name.span().start,
                        format!("{table}.{key}[{i}]"),
                        format!(
                            "no {what} named `{}` in this tenant (it has: {})",
                            name.get_ref(),
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    ));
                }
            }
        }
        found
    }

    /// Reports each key that is set, by where it is set, as one that only
    /// pipelines of the other mode take.
    fn refuse_keys(
        &self,
        table: &str,
        keys: &[(&str, Option<std::ops::Range<usize>>)],
        mode: &str,
        errors: &mut ConfigErrors,
    ) {
        for (key, span) in keys {
            if let Some(span) = span {
                errors.push(self.error(
                    span.start,
                    format!("{table}.{key}"),
                    format!("applies to {mode} pipelines only"),
                ));
            }
        }
    }

    /// The diff-sync keys of a pipeline, checked; on an event pipeline that
    /// does not reconcile they are errors, since they would silently do
    /// nothing there. (One that reconciles plans its repairs with them.)
    fn diff_policy(&self, table: &str, entry: &PipelineEntry, errors: &mut ConfigErrors) -> DiffPolicy {
        let mut policy = DiffPolicy::default();
        if entry.mode == PipelineMode::Event && entry.reconcile.is_some() {
            if let Some(canary) = &entry.canary {
                let key = format!("{table}.canary");
                errors.push(self.error(canary.span().start, key, "applies to diff pipelines only".into()));
            }
        } else if entry.mode == PipelineMode::Event {
            let diff_only = [
                ("owned_fields", entry.owned_fields.as_ref().map(|v| v.span())),
                ("deletes", entry.deletes.as_ref().map(|v| v.span())),
                ("unique", entry.unique.as_ref().map(|v| v.span())),
                ("max_change_ratio", entry.max_change_ratio.as_ref().map(|v| v.span())),
                ("canary", entry.canary.as_ref().map(|v| v.span())),
            ];
            self.refuse_keys(table, &diff_only, "diff", errors);
            return policy;
        }
        if let Some(owned) = &entry.owned_fields {
            if owned.get_ref().is_empty() {
                errors.push(self.error(
                    owned.span().start,
                    format!("{table}.owned_fields"),
                    "must name at least one field".into(),
                ));
            }
            policy.owned_fields = Some(owned.get_ref().clone());
        }
        if let Some(deletes) = &entry.deletes {
            policy.deletes = *deletes.get_ref();
        }
        if let Some(unique) = &entry.unique {
            if let Some(owned) = &policy.owned_fields
                && let Some(field) = unique.get_ref().iter().find(|f| !owned.contains(f))
            {
                errors.push(self.error(
                    unique.span().start,
                    format!("{table}.unique"),
                    format!("`{field}` is not one of the owned_fields; only owned fields can be kept unique"),
                ));
            }
            policy.unique = unique.get_ref().clone();
        }
        if let Some(ratio) = &entry.max_change_ratio {
            let value = *ratio.get_ref();
            if !(value > 0.0 && value.is_finite()) {
                errors.push(self.error(
                    ratio.span().start,
                    format!("{table}.max_change_ratio"),
                    format!("`{value}` must be a number above 0 (0.2 blocks plans that change more than 20%)"),
                ));
            }
            policy.max_change_ratio = value;
        }
        if let Some(canary) = &entry.canary {
            policy.canary = *canary.get_ref();
        }
        if let Some(lanes) = self.lanes(table, entry, errors) {
            policy.lanes = lanes;
        }
        policy
    }

    /// A pipeline's `lanes`, checked: from 1 to 64.
    fn lanes(&self, table: &str, entry: &PipelineEntry, errors: &mut ConfigErrors) -> Option<usize> {
        let lanes = entry.lanes.as_ref()?;
        let value = *lanes.get_ref();
        if (1..=64).contains(&value) {
            return Some(value);
        }
        errors.push(self.error(
            lanes.span().start,
            format!("{table}.lanes"),
            format!("`{value}` must be from 1 to 64"),
        ));
        None
    }

    /// The event-sync keys of a pipeline, checked; on a diff pipeline they are
    /// errors, since they would silently do nothing there.
    fn event_policy(&self, table: &str, entry: &PipelineEntry, errors: &mut ConfigErrors) -> EventPolicy {
        let mut policy = EventPolicy::default();
        if entry.mode == PipelineMode::Diff {
            let event_only = [
                ("max_attempts", entry.max_attempts.as_ref().map(|v| v.span())),
                ("retry_backoff", entry.retry_backoff.as_ref().map(|v| v.span())),
                ("retry_backoff_max", entry.retry_backoff_max.as_ref().map(|v| v.span())),
            ];
            self.refuse_keys(table, &event_only, "event", errors);
            return policy;
        }
        if let Some(lanes) = self.lanes(table, entry, errors) {
            policy.lanes = lanes;
        }
        if let Some(attempts) = &entry.max_attempts {
            if *attempts.get_ref() == 0 {
                errors.push(self.error(
                    attempts.span().start,
                    format!("{table}.max_attempts"),
                    "must be at least 1".into(),
                ));
            } else {
                policy.max_attempts = *attempts.get_ref();
            }
        }
        let mut duration = |value: &Option<Spanned<String>>, key: &str, default: std::time::Duration| match value {
            None => default,
            Some(text) => match parse_duration(text.get_ref(), ABOVE_ZERO) {
                Ok(d) => d,
                Err(message) => {
                    errors.push(self.error(text.span().start, format!("{table}.{key}"), message));
                    default
                }
            },
        };
        policy.retry_backoff = duration(&entry.retry_backoff, "retry_backoff", policy.retry_backoff);
        // Without a cap of its own, a long first wait is its own cap.
        let default_max = policy.retry_backoff_max.max(policy.retry_backoff);
        policy.retry_backoff_max = duration(&entry.retry_backoff_max, "retry_backoff_max", default_max);
        if policy.retry_backoff_max < policy.retry_backoff {
            let at = entry.retry_backoff_max.as_ref().map_or(0, |v| v.span().start);
            errors.push(self.error(
                at,
                format!("{table}.retry_backoff_max"),
                format!(
                    "{} is shorter than retry_backoff ({})",
                    humantime::format_duration(policy.retry_backoff_max),
                    humantime::format_duration(policy.retry_backoff)
                ),
            ));
        }
        policy
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
        if let Some(problem) = name_problem("pipeline", name) {
            errors.push(self.error(name_at, table.clone(), problem));
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

        let mut schedule_at = |key: &str, text: &Spanned<String>| {
            text.get_ref().parse().map_err(|e| {
                errors.push(self.error(text.span().start, format!("{table}.{key}"), format!("invalid schedule {e}")))
            })
        };
        let schedule = entry.schedule.as_ref().and_then(|text| schedule_at("schedule", text).ok());
        let reconcile = entry.reconcile.as_ref().and_then(|text| schedule_at("reconcile", text).ok());
        let schedule = schedule.unwrap_or(Schedule::Manual);
        if let (PipelineMode::Diff, Some(text)) = (entry.mode, &entry.reconcile) {
            errors.push(self.error(
                text.span().start,
                format!("{table}.reconcile"),
                "applies to event pipelines only (a diff pipeline reconciles on every run)".into(),
            ));
        }
        let mut positive = |value: &Option<Spanned<usize>>, key: &str, default: usize| match value {
            Some(v) if *v.get_ref() == 0 => {
                errors.push(self.error(v.span().start, format!("{table}.{key}"), "must be at least 1".into()));
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
        let max_batch = positive(
            &entry.max_batch.as_ref().map(|v| Spanned::new(v.span(), *v.get_ref() as usize)),
            "max_batch",
            1000,
        ) as u32;
        let apply_batch = positive(&entry.apply_batch, "apply_batch", 500);
        let diff = self.diff_policy(&table, &entry, &mut errors);
        let event = self.event_policy(&table, &entry, &mut errors);
        let budget_keys = crate::config::host_file::RunBudgetKeys {
            max_run_rows: entry.max_run_rows.clone(),
            max_run_duration: entry.max_run_duration.clone(),
            max_run_memory: entry.max_run_memory.clone(),
        };
        let budget = budget_keys.apply(self.host.run_budget, self.path, self.text, &table).unwrap_or_else(|e| {
            errors.extend(e);
            self.host.run_budget
        });
        errors.into_result(PipelineConfig {
            name: name.to_string(),
            mode: entry.mode.into(),
            source: entry.source.into_inner(),
            transforms: entry.transforms.into_iter().map(Spanned::into_inner).collect(),
            destination: entry.destination.into_inner(),
            schedule,
            reconcile,
            max_batch,
            apply_batch,
            apply_batch_set: entry.apply_batch.is_some(),
            diff,
            event,
            budget,
            references,
        })
    }
}
