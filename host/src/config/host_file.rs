//! `synchost.toml`: where state, plugins and tenant files live, and the limits
//! every plugin call runs under unless its tenant file says otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, ConfigErrors, Location, parse_toml};

/// Host settings, with every path made absolute.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The file these settings came from.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub tenants_dir: PathBuf,
    pub limits: Limits,
    /// How many diff-run archives to keep per pipeline.
    pub keep_run_archives: usize,
}

/// What one plugin call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take before it is interrupted.
    pub call_timeout: Duration,
    /// Linear memory one plugin instance may grow to, in bytes.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { call_timeout: Duration::from_secs(30), memory_bytes: 256 * 1024 * 1024 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    state_dir: Option<String>,
    plugin_dir: Option<String>,
    tenants_dir: Option<String>,
    #[serde(default)]
    limits: LimitsFile,
    keep_run_archives: Option<usize>,
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
}

impl LimitsFile {
    /// `base` with these overrides applied; a value that does not parse is an
    /// error at its place in `file`.
    pub(crate) fn apply(&self, base: Limits, file: &Path, text: &str, table: &str) -> Result<Limits, ConfigErrors> {
        let mut limits = base;
        let mut errors = ConfigErrors::default();
        if let Some(timeout) = &self.call_timeout {
            match humantime::parse_duration(timeout.get_ref()) {
                Ok(d) if !d.is_zero() => limits.call_timeout = d,
                Ok(_) => errors.push(ConfigError::new(
                    Location::at(file, text, timeout.span().start),
                    format!("{table}.call_timeout"),
                    "must be longer than zero",
                )),
                Err(e) => errors.push(ConfigError::new(
                    Location::at(file, text, timeout.span().start),
                    format!("{table}.call_timeout"),
                    format!("`{}` is not a duration ({e}); write e.g. \"30s\"", timeout.get_ref()),
                )),
            }
        }
        if let Some(memory) = &self.memory {
            match memory.get_ref().parse::<bytesize::ByteSize>() {
                Ok(size) if size.as_u64() >= 1024 * 1024 => limits.memory_bytes = size.as_u64(),
                Ok(_) => errors.push(ConfigError::new(
                    Location::at(file, text, memory.span().start),
                    format!("{table}.memory"),
                    "must be at least 1 MiB",
                )),
                Err(e) => errors.push(ConfigError::new(
                    Location::at(file, text, memory.span().start),
                    format!("{table}.memory"),
                    format!("`{}` is not a size ({e}); write e.g. \"256 MiB\"", memory.get_ref()),
                )),
            }
        }
        errors.into_result(limits)
    }
}

impl HostConfig {
    /// Reads `synchost.toml`; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(Location::file(path), "", format!("cannot read the host config: {e}")))?;
        let file: HostFile = parse_toml(path, &text)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        let resolve = |value: &Option<String>, default: &str| base.join(value.as_deref().unwrap_or(default));
        let limits = file.limits.apply(Limits::default(), path, &text, "limits")?;
        Ok(HostConfig {
            path: path.to_path_buf(),
            state_dir: resolve(&file.state_dir, "state"),
            plugin_dir: resolve(&file.plugin_dir, "plugins"),
            tenants_dir: resolve(&file.tenants_dir, "tenants"),
            limits,
            keep_run_archives: file.keep_run_archives.unwrap_or(20),
        })
    }
}
