//! What can go wrong with a plugin: loading it, or calling it.

/// An error a plugin returned through the WIT `error` variant: it tells the
/// host what to do next. Its `Display` reads "transient error: …".
pub type WitError = synchost_model::Error;

/// A plugin could not be loaded or a call to it failed. Every variant names the
/// plugin, so an operator reading a log knows whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}` is not a WebAssembly component: {detail}")]
    NotAComponent { plugin: String, detail: String },

    /// Compiling takes time and memory that grow with a component's size:
    /// one beyond the host's `max_plugin_size` is refused before any of it.
    #[error("plugin `{plugin}` is {size}, more than the host's max_plugin_size of {max}: it is not compiled")]
    TooLarge { plugin: String, size: bytesize::ByteSize, max: bytesize::ByteSize },

    /// Compiling took longer than the host's `max_compile_time`: the
    /// component is refused (its compile runs on, and its result is dropped).
    #[error(
        "plugin `{plugin}` took longer than the host's max_compile_time of {max} to compile: it is refused \
         (raise max_compile_time in synchost.toml if the plugin is trusted and only big)"
    )]
    CompileTooSlow { plugin: String, max: humantime::FormattedDuration },

    #[error("plugin `{plugin}` does not implement a synchost plugin world: it exports {exports}")]
    NotAPlugin { plugin: String, exports: String },

    #[error("plugin `{plugin}` exports several plugin interfaces ({kinds}); a plugin implements one world")]
    SeveralKinds { plugin: String, kinds: String },

    #[error("plugin `{plugin}` was built against {package}@{found}, but this host supports {package}@{supported}")]
    IncompatibleVersion { plugin: String, package: &'static str, found: String, supported: String },

    #[error("plugin `{plugin}` cannot be linked: {detail}")]
    Link { plugin: String, detail: String },

    #[error("plugin `{plugin}` cannot be given its grants: {detail}")]
    Grant { plugin: String, detail: String },

    /// A call went past one of the plugin's limits; `limit` is its name in the
    /// `[limits]` tables (`call_timeout`, `memory`, `fuel`, `max_rows`,
    /// `max_columns`, `max_output`) or `stack`.
    #[error("tenant `{tenant}`, plugin `{plugin}`: `{call}` exceeded its `{limit}` limit ({detail})")]
    LimitExceeded { tenant: String, plugin: String, call: &'static str, limit: &'static str, detail: String },

    #[error("tenant `{tenant}`, plugin `{plugin}`: `{call}` trapped: {detail}")]
    Trapped { tenant: String, plugin: String, call: &'static str, detail: String },

    #[error("tenant `{tenant}`, plugin `{plugin}`: `{call}` returned a {error}")]
    Returned { tenant: String, plugin: String, call: &'static str, error: WitError },

    #[error("tenant `{tenant}`, plugin `{plugin}`: `{call}` broke the contract: {detail}")]
    Contract { tenant: String, plugin: String, call: &'static str, detail: String },
}

impl PluginError {
    /// The error the plugin itself returned, if that is what this is.
    pub fn returned(&self) -> Option<&WitError> {
        match self {
            PluginError::Returned { error, .. } => Some(error),
            _ => None,
        }
    }
}
