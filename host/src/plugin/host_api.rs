//! The `synchost:plugin/host` interface: what every plugin may ask of the host.

use super::bindings::host::{Host, Level};
use super::ctx::PluginCtx;

/// A log line longer than this is cut, so a plugin cannot flood the log.
const MAX_LOG_LINE: usize = 4096;

impl Host for PluginCtx {
    fn log(&mut self, level: Level, message: String) {
        let message = truncate(&message, MAX_LOG_LINE);
        let (tenant, plugin) = (self.tenant.as_str(), self.plugin.as_str());
        match level {
            Level::Trace => tracing::trace!(tenant, plugin, "{message}"),
            Level::Debug => tracing::debug!(tenant, plugin, "{message}"),
            Level::Info => tracing::info!(tenant, plugin, "{message}"),
            Level::Warn => tracing::warn!(tenant, plugin, "{message}"),
            Level::Error => tracing::error!(tenant, plugin, "{message}"),
        }
    }

    fn config(&mut self) -> String {
        self.config_json.clone()
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).cloned()
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl super::bindings::types::Host for PluginCtx {}
