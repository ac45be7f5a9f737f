//! The `synchost:plugin/host` interface: what every plugin may ask of the host.

use super::bindings::host::{Host, Level};
use super::ctx::PluginCtx;

impl Host for PluginCtx {
    /// Logged with the tenant and plugin, within the call's `max_log` budget
    /// that stdout and stderr share: a plugin logging in a loop is cut off
    /// like one printing in a loop.
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.output.log_line(level, &message);
    }

    fn config(&mut self) -> String {
        self.config_json.clone()
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).cloned()
    }
}

impl super::bindings::types::Host for PluginCtx {}
