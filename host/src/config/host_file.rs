//! `synchost.toml`: where state, plugins, tenant files and compiled plugin code
//! live, and the limits every plugin call runs under unless its tenant file
//! says otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::connection::Secret;
use super::duration::{ABOVE_ZERO, parse_duration};
use super::error::{ConfigError, ConfigErrors, Location, parse_toml};
use crate::signing::TrustedKey;

/// Host settings, with every path made absolute.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The file these settings came from.
    pub path: PathBuf,
    /// Where runs, cursors, retry queues and dead letters are kept (`state`).
    pub state: StateConfig,
    /// This host's name among the hosts sharing a state store (`host_id`),
    /// unique to each: by default HOSTNAME:PID.
    pub host_id: String,
    /// How long a pipeline's lease lasts unless its holder renews it
    /// (`lease_time`): how soon another host takes over from a dead one.
    pub lease_time: Duration,
    /// The host's own files: the SQLite state (unless `state` names a
    /// database), run archives, the admin socket, compiled code.
    pub state_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub tenants_dir: PathBuf,
    pub limits: Limits,
    /// What one run of a pipeline may take, unless the pipeline says otherwise.
    pub run_budget: RunBudget,
    /// How many diff-run archives to keep per pipeline.
    pub keep_run_archives: usize,
    /// Keys whose signatures on a plugin file are trusted.
    pub trusted_keys: Vec<TrustedKey>,
    /// Refuse any plugin without a valid signature by a trusted key.
    pub require_signatures: bool,
    /// Where compiled plugins are kept between runs: `compiled_cache_dir`,
    /// by default `<state_dir>/compiled`; `None` if `compiled_cache = false`.
    pub compiled_cache_dir: Option<PathBuf>,
    /// The largest plugin file the host reads and compiles, in bytes. A
    /// host-wide setting, not a plugin limit: a tenant file must not raise it.
    pub max_plugin_size: u64,
    /// How long compiling one plugin may take (`max_compile_time`): a plugin
    /// whose machine code takes longer is refused. Host-wide, like
    /// `max_plugin_size`.
    pub max_compile_time: Duration,
    /// How long `synchost run` waits for the tenant and plugin files to be
    /// quiet after a change before it reloads them (`watch_debounce`).
    pub watch_debounce: Duration,
    /// `[admin]`: where `synchost run` serves its HTTP API, metrics and console.
    pub admin: AdminConfig,
    /// `dev = true`: a local development host, where a tenant file may name
    /// a plugin without pinning its sha256 (loaded as the file is, with a
    /// warning each time). Never set on a host that serves real tenants.
    pub dev: bool,
}

/// `state` of `synchost.toml`: which state store the host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    /// `state.db` in the state directory: the embedded default.
    Sqlite,
    /// A PostgreSQL database several hosts share (`state = "postgres://…"`),
    /// its password from `state_password_env` or `state_password_file`.
    Postgres { url: String, password: Option<Secret> },
}

/// `[admin]` of `synchost.toml`: the daemon's HTTP endpoint (API, metrics,
/// console). The Unix socket in the state directory is served as well, always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The address to listen on; `None` when `bind = "off"`.
    pub bind: Option<std::net::SocketAddr>,
    /// The file holding the bearer token every request but `/healthz` and
    /// `/readyz` must carry; made (mode 0600) with a random token if absent.
    pub token_file: PathBuf,
}

/// `[admin] bind` unless synchost.toml sets it: loopback only.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:7433";

impl HostConfig {
    /// Whether the engine meters fuel: when the host's `[limits]` sets it.
    pub fn fuel_metering(&self) -> bool {
        self.limits.fuel.is_some()
    }
}

/// `max_plugin_size` unless synchost.toml sets it: twenty times the largest
/// bundled plugin's build with every dependency in, and far below what would
/// take a compile to minutes.
pub const DEFAULT_MAX_PLUGIN_SIZE: u64 = 64 * 1024 * 1024;

/// `max_compile_time` unless synchost.toml sets it: the bundled plugins
/// compile in about a second, a Python or JavaScript component (an
/// interpreter inside) in up to a minute on a busy two-core machine.
pub const DEFAULT_MAX_COMPILE_TIME: Duration = Duration::from_secs(120);

/// `lease_time` unless synchost.toml sets it: a dead host's pipelines are
/// taken over within this; renewals come every third of it.
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(15);

/// `watch_debounce` unless synchost.toml sets it: long enough for a deploy
/// that writes a file and renames it, or copies a plugin in several writes,
/// to make one reload; short beside a person's wait.
pub const DEFAULT_WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

/// What one plugin instance and each call into it may use. Every field has a
/// safe default; `synchost.toml` `[limits]` sets the host's defaults and a
/// tenant file's `[plugins.NAME.limits]` overrides them for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take before it is interrupted.
    pub call_timeout: Duration,
    /// Linear memory one plugin instance may grow to, in bytes.
    pub memory_bytes: u64,
    /// Wasm instructions (fuel units) one call may execute, for a CPU bound
    /// that does not depend on the machine's load. `None`: not metered.
    pub fuel: Option<u64>,
    /// Rows (or events) one call may return.
    pub max_rows: u64,
    /// Columns one call may return in a table or an event batch. A table of
    /// many columns and no rows stays under `max_rows` and `max_output`; this
    /// bounds the host's work per column.
    pub max_columns: u64,
    /// Bytes of keys and values one call may return.
    pub max_output_bytes: u64,
    /// Bytes of stdout and stderr one call may write to the log; the rest is dropped.
    pub max_log_bytes: u64,
    /// Time an outgoing HTTP request may take to connect, to its first
    /// response byte, and between two body chunks.
    pub http_timeout: Duration,
    /// Bytes an HTTP response body may have.
    pub http_max_response_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(30),
            memory_bytes: 256 * MIB,
            fuel: None,
            max_rows: 1_000_000,
            // MySQL's and MariaDB's own cap on a table's columns
            // (PostgreSQL's is 1,600): a real data set stays well within it.
            max_columns: 4096,
            max_output_bytes: 256 * MIB,
            max_log_bytes: 64 * 1024,
            http_timeout: Duration::from_secs(30),
            http_max_response_bytes: 16 * MIB,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// What one run of a pipeline may take as a whole, whatever each plugin call
/// stays within: a source that never ends (fresh rows on every page, events
/// without end) must end the run, not take the host down. `synchost.toml`'s
/// `[limits]` sets the defaults; a pipeline overrides them with the same keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBudget {
    /// `max_run_rows`: rows a diff run may read from either side, or events
    /// an event run may read.
    pub max_rows: u64,
    /// `max_run_duration`: wall-clock time a run may take.
    pub max_duration: Duration,
    /// `max_run_memory`: what a diff run's plan may hold (the destination's
    /// index, the changes, desired pages waiting for the index), estimated.
    pub max_memory_bytes: u64,
}

impl Default for RunBudget {
    fn default() -> Self {
        RunBudget {
            // Far above the data sets a single run is for, yet a bound: a
            // source that never ends is stopped long before it fills the host.
            max_rows: 100_000_000,
            max_duration: Duration::from_secs(24 * 3600),
            max_memory_bytes: 4 * 1024 * MIB,
        }
    }
}

/// The run-budget keys, as written where they may be: synchost.toml's
/// `[limits]` or a pipeline's table.
#[derive(Default, Debug, Clone)]
pub(crate) struct RunBudgetKeys {
    pub max_run_rows: Option<toml::Spanned<u64>>,
    pub max_run_duration: Option<toml::Spanned<String>>,
    pub max_run_memory: Option<toml::Spanned<String>>,
}

impl RunBudgetKeys {
    /// `base` with these keys applied, each error at its place in `file`
    /// under `table`.
    pub(crate) fn apply(
        &self,
        base: RunBudget,
        file: &Path,
        text: &str,
        table: &str,
    ) -> Result<RunBudget, ConfigErrors> {
        let site = LimitsSite { file, text, table };
        let mut budget = base;
        let mut errors = ConfigErrors::default();
        let mut set = |result: Result<(), ConfigError>| {
            if let Err(e) = result {
                errors.push(e);
            }
        };
        if let Some(v) = &self.max_run_rows {
            set(site.count(v, "max_run_rows").map(|n| budget.max_rows = n));
        }
        if let Some(v) = &self.max_run_duration {
            set(site.duration(v, "max_run_duration").map(|d| budget.max_duration = d));
        }
        if let Some(v) = &self.max_run_memory {
            set(site.size(v, "max_run_memory", MIB).map(|n| budget.max_memory_bytes = n));
        }
        errors.into_result(budget)
    }

    /// Where the first key set stands, if any: these keys mean nothing in a
    /// plugin's limits, which bound one call.
    pub(crate) fn first_set(&self) -> Option<(&'static str, usize)> {
        [
            ("max_run_rows", self.max_run_rows.as_ref().map(|v| v.span().start)),
            ("max_run_duration", self.max_run_duration.as_ref().map(|v| v.span().start)),
            ("max_run_memory", self.max_run_memory.as_ref().map(|v| v.span().start)),
        ]
        .into_iter()
        .find_map(|(key, at)| at.map(|at| (key, at)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    /// "postgres://USER@HOST/DATABASE"; SQLite in `state_dir` when absent.
    state: Option<toml::Spanned<String>>,
    state_password_env: Option<toml::Spanned<String>>,
    state_password_file: Option<toml::Spanned<String>>,
    host_id: Option<toml::Spanned<String>>,
    /// e.g. "15s".
    lease_time: Option<toml::Spanned<String>>,
    state_dir: Option<String>,
    plugin_dir: Option<String>,
    tenants_dir: Option<String>,
    #[serde(default)]
    limits: LimitsFile,
    keep_run_archives: Option<usize>,
    #[serde(default)]
    trusted_keys: Vec<toml::Spanned<String>>,
    #[serde(default)]
    require_signatures: bool,
    /// `false` keeps no compiled code on disk.
    compiled_cache: Option<toml::Spanned<bool>>,
    compiled_cache_dir: Option<toml::Spanned<String>>,
    /// e.g. "64 MiB".
    max_plugin_size: Option<toml::Spanned<String>>,
    /// e.g. "2m".
    max_compile_time: Option<toml::Spanned<String>>,
    /// e.g. "250ms".
    watch_debounce: Option<toml::Spanned<String>>,
    #[serde(default)]
    admin: AdminFile,
    #[serde(default)]
    dev: bool,
}

/// `[admin]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    /// "HOST:PORT", or "off".
    bind: Option<toml::Spanned<String>>,
    token_file: Option<String>,
}

/// Limits as written in a config file: every field optional, overriding the
/// level above.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    /// e.g. "30s", "500ms".
    call_timeout: Option<toml::Spanned<String>>,
    /// e.g. "256 MiB".
    memory: Option<toml::Spanned<String>>,
    fuel: Option<toml::Spanned<u64>>,
    max_rows: Option<toml::Spanned<u64>>,
    max_columns: Option<toml::Spanned<u64>>,
    max_output: Option<toml::Spanned<String>>,
    max_log: Option<toml::Spanned<String>>,
    http_timeout: Option<toml::Spanned<String>>,
    http_max_response: Option<toml::Spanned<String>>,
    // Run budgets: defaults for every pipeline in synchost.toml, refused in
    // a plugin's limits (see `run_budget`).
    max_run_rows: Option<toml::Spanned<u64>>,
    max_run_duration: Option<toml::Spanned<String>>,
    max_run_memory: Option<toml::Spanned<String>>,
}

/// Where the limits being read stand, for errors.
struct LimitsSite<'a> {
    file: &'a Path,
    text: &'a str,
    table: &'a str,
}

impl LimitsSite<'_> {
    fn error(&self, at: &toml::Spanned<impl Sized>, key: &str, message: String) -> ConfigError {
        // Top-level keys stand in no table.
        let key = if self.table.is_empty() { key.to_string() } else { format!("{}.{key}", self.table) };
        ConfigError::new(Location::at(self.file, self.text, at.span().start), key, message)
    }

    fn duration(&self, value: &toml::Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref(), ABOVE_ZERO).map_err(|message| self.error(value, key, message))
    }

    fn count(&self, value: &toml::Spanned<u64>, key: &str) -> Result<u64, ConfigError> {
        match *value.get_ref() {
            0 => Err(self.error(value, key, "must be more than zero".into())),
            n => Ok(n),
        }
    }

    fn size(&self, value: &toml::Spanned<String>, key: &str, at_least: u64) -> Result<u64, ConfigError> {
        match value.get_ref().parse::<bytesize::ByteSize>() {
            Ok(size) if size.as_u64() >= at_least => Ok(size.as_u64()),
            Ok(_) => Err(self.error(value, key, format!("must be at least {}", bytesize::ByteSize::b(at_least)))),
            Err(e) => Err(self.error(
                value,
                key,
                format!("`{}` is not a size ({e}); write e.g. \"256 MiB\"", value.get_ref()),
            )),
        }
    }
}

impl LimitsFile {
    /// The run-budget keys among these limits.
    pub(crate) fn run_budget(&self) -> RunBudgetKeys {
        RunBudgetKeys {
            max_run_rows: self.max_run_rows.clone(),
            max_run_duration: self.max_run_duration.clone(),
            max_run_memory: self.max_run_memory.clone(),
        }
    }

    /// `base` with these overrides applied; a value that does not parse is an
    /// error at its place in `file`. `fuel_metering` says whether the host
    /// meters fuel at all: only then may a plugin be given a fuel limit.
    pub(crate) fn apply(
        &self,
        base: Limits,
        fuel_metering: bool,
        file: &Path,
        text: &str,
        table: &str,
    ) -> Result<Limits, ConfigErrors> {
        let site = LimitsSite { file, text, table };
        let mut limits = base;
        let mut errors = ConfigErrors::default();
        let mut set = |result: Result<(), ConfigError>| {
            if let Err(e) = result {
                errors.push(e);
            }
        };
        if let Some(v) = &self.call_timeout {
            set(site.duration(v, "call_timeout").map(|d| limits.call_timeout = d));
        }
        if let Some(v) = &self.memory {
            set(site.size(v, "memory", MIB).map(|n| limits.memory_bytes = n));
        }
        if let Some(v) = &self.fuel {
            set(match *v.get_ref() {
                0 => Err(site.error(v, "fuel", "must be more than zero".into())),
                _ if !fuel_metering => Err(site.error(
                    v,
                    "fuel",
                    "fuel metering is off on this host: set `[limits] fuel` in synchost.toml to turn it on".into(),
                )),
                n => {
                    limits.fuel = Some(n);
                    Ok(())
                }
            });
        }
        if let Some(v) = &self.max_rows {
            set(site.count(v, "max_rows").map(|n| limits.max_rows = n));
        }
        if let Some(v) = &self.max_columns {
            set(site.count(v, "max_columns").map(|n| limits.max_columns = n));
        }
        if let Some(v) = &self.max_output {
            set(site.size(v, "max_output", 1024).map(|n| limits.max_output_bytes = n));
        }
        if let Some(v) = &self.max_log {
            set(site.size(v, "max_log", 0).map(|n| limits.max_log_bytes = n));
        }
        if let Some(v) = &self.http_timeout {
            set(site.duration(v, "http_timeout").map(|d| limits.http_timeout = d));
        }
        if let Some(v) = &self.http_max_response {
            set(site.size(v, "http_max_response", 1024).map(|n| limits.http_max_response_bytes = n));
        }
        errors.into_result(limits)
    }
}

impl HostConfig {
    /// Reads `synchost.toml`; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (run synchost in its host directory, or pass --config PATH or set SYNCHOST_CONFIG; \
                     `synchost demo --dir DIR` makes a host directory to start from)"
            } else {
                ""
            };
            ConfigError::new(Location::file(path), "", format!("cannot read the host config: {e}{hint}"))
        })?;
        let file: HostFile = parse_toml(path, &text)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        let resolve = |value: &Option<String>, default: &str| base.join(value.as_deref().unwrap_or(default));
        let limits = file.limits.apply(Limits::default(), true, path, &text, "limits")?;
        let run_budget = file.limits.run_budget().apply(RunBudget::default(), path, &text, "limits")?;
        let trusted_keys = parse_trusted_keys(&file.trusted_keys, path, &text)?;
        let state_dir = resolve(&file.state_dir, "state");
        let cache_on = file.compiled_cache.as_ref().map(|on| *on.get_ref());
        let compiled_cache_dir = match (cache_on, &file.compiled_cache_dir) {
            (Some(false), Some(dir)) => {
                return Err(ConfigError::new(
                    Location::at(path, &text, dir.span().start),
                    "compiled_cache_dir",
                    "is set, but `compiled_cache = false` keeps no compiled code: remove one of the two",
                )
                .into());
            }
            (Some(false), None) => None,
            (_, Some(dir)) => Some(base.join(dir.get_ref())),
            (_, None) => Some(state_dir.join("compiled")),
        };
        let max_plugin_size = match &file.max_plugin_size {
            None => DEFAULT_MAX_PLUGIN_SIZE,
            Some(size) => LimitsSite { file: path, text: &text, table: "" }
                .size(size, "max_plugin_size", 1024)
                .map_err(ConfigErrors::from)?,
        };
        let max_compile_time = match &file.max_compile_time {
            None => DEFAULT_MAX_COMPILE_TIME,
            Some(time) => LimitsSite { file: path, text: &text, table: "" }
                .duration(time, "max_compile_time")
                .map_err(ConfigErrors::from)?,
        };
        let watch_debounce = match &file.watch_debounce {
            None => DEFAULT_WATCH_DEBOUNCE,
            Some(time) => LimitsSite { file: path, text: &text, table: "" }
                .duration(time, "watch_debounce")
                .map_err(ConfigErrors::from)?,
        };
        let admin = AdminConfig {
            bind: match &file.admin.bind {
                None => Some(DEFAULT_ADMIN_BIND.parse().expect("the default bind parses")),
                Some(bind) if bind.get_ref() == "off" => None,
                Some(bind) => Some(bind.get_ref().parse().map_err(|e| {
                    ConfigErrors::from(ConfigError::new(
                        Location::at(path, &text, bind.span().start),
                        "admin.bind",
                        format!(
                            "`{}` is not an IP:PORT address ({e}); write e.g. \"127.0.0.1:7433\" or \"off\"",
                            bind.get_ref()
                        ),
                    ))
                })?),
            },
            token_file: file
                .admin
                .token_file
                .as_deref()
                .map_or_else(|| state_dir.join("admin.token"), |file| base.join(file)),
        };
        let state = parse_state(&file, path, &text, &base)?;
        let lease_time = match &file.lease_time {
            None => DEFAULT_LEASE_TIME,
            Some(time) => LimitsSite { file: path, text: &text, table: "" }
                .duration(time, "lease_time")
                .map_err(ConfigErrors::from)?,
        };
        let host_id = match &file.host_id {
            None => format!("{}:{}", crate::state::machine_name(), std::process::id()),
            Some(id) if id.get_ref().trim().is_empty() => {
                return Err(ConfigError::new(
                    Location::at(path, &text, id.span().start),
                    "host_id",
                    "is empty: name this host uniquely among those sharing the state, or leave it out for \
                     HOSTNAME:PID",
                )
                .into());
            }
            Some(id) => id.get_ref().trim().to_string(),
        };
        Ok(HostConfig {
            path: path.to_path_buf(),
            state,
            host_id,
            lease_time,
            state_dir,
            plugin_dir: resolve(&file.plugin_dir, "plugins"),
            tenants_dir: resolve(&file.tenants_dir, "tenants"),
            limits,
            run_budget,
            keep_run_archives: file.keep_run_archives.unwrap_or(20),
            trusted_keys,
            require_signatures: file.require_signatures,
            compiled_cache_dir,
            max_plugin_size,
            max_compile_time,
            watch_debounce,
            admin,
            dev: file.dev,
        })
    }
}

/// Reads `state` and its password settings, each error at its place.
fn parse_state(file: &HostFile, path: &Path, text: &str, base: &Path) -> Result<StateConfig, ConfigErrors> {
    let error = |at: &toml::Spanned<String>, key: &str, message: String| {
        ConfigErrors::from(ConfigError::new(Location::at(path, text, at.span().start), key, message))
    };
    let Some(url) = &file.state else {
        return match file.state_password_env.as_ref().or(file.state_password_file.as_ref()) {
            Some(at) => Err(error(
                at,
                if file.state_password_env.is_some() { "state_password_env" } else { "state_password_file" },
                "is set, but `state` names no database (the state is the SQLite file in `state_dir`)".into(),
            )),
            None => Ok(StateConfig::Sqlite),
        };
    };
    let text_url = url.get_ref().trim();
    let scheme = text_url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
        return Err(error(
            url,
            "state",
            format!(
                "`{text_url}` is not a PostgreSQL URL: write postgres://USER@HOST/DATABASE, or leave `state` out \
                 for the SQLite file in `state_dir`"
            ),
        ));
    }
    match url::Url::parse(text_url) {
        Err(e) => return Err(error(url, "state", format!("`{text_url}` is not a valid URL: {e}"))),
        Ok(parsed) if parsed.password().is_some() => {
            return Err(error(
                url,
                "state",
                "holds a password; URLs end up in logs and reports, so put it in `state_password_env` or \
                 `state_password_file`"
                    .into(),
            ));
        }
        Ok(_) => {}
    }
    let password = match (&file.state_password_env, &file.state_password_file) {
        (Some(_), Some(file)) => {
            return Err(error(
                file,
                "state_password_file",
                "set either `state_password_env` or `state_password_file`, not both".into(),
            ));
        }
        (Some(env), None) => Some(Secret::new(std::env::var(env.get_ref()).map_err(|e| {
            error(env, "state_password_env", format!("cannot read the environment variable `{}`: {e}", env.get_ref()))
        })?)),
        (None, Some(file)) => {
            let secret = base.join(file.get_ref());
            let password = std::fs::read_to_string(&secret)
                .map_err(|e| error(file, "state_password_file", format!("cannot read `{}`: {e}", secret.display())))?;
            Some(Secret::new(password.trim_end_matches(['\r', '\n']).to_string()))
        }
        (None, None) => None,
    };
    Ok(StateConfig::Postgres { url: text_url.to_string(), password })
}

/// Reads `trusted_keys` of `synchost.toml`, each error at its place.
fn parse_trusted_keys(
    keys: &[toml::Spanned<String>],
    file: &Path,
    text: &str,
) -> Result<Vec<TrustedKey>, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut trusted = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match TrustedKey::parse(key.get_ref()) {
            Ok(k) => trusted.push(k),
            Err(e) => errors.push(ConfigError::new(
                Location::at(file, text, key.span().start),
                format!("trusted_keys[{i}]"),
                e,
            )),
        }
    }
    errors.into_result(trusted)
}
