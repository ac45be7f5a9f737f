//! What a plugin may be granted, one unit per capability, in the manner of
//! Spin's factors. Each unit holds what one instance gets (its grants and the
//! state they need), checks each use against the grant and its limits, and
//! registers its interfaces with the linker ([`add_to_linker`]):
//!
//! - [`files`]: the directories a tenant grants (`dirs`), preopened in WASI;
//! - [`http`]: outgoing `wasi:http`, to the plugin's `allowed_hosts` only;
//! - [`sql`]: the `sql` interface, on the connections granted by name;
//! - [`jetstream`]: the `jetstream` interface, on the streams granted by name;
//! - [`logging`]: stdout, stderr and `host.log`, one `max_log` budget a call;
//! - secrets and config: `host.secret` gives only the plugin's own secrets,
//!   `host.config` its own config table, `host.run-fence` the lease of the run
//!   it works for (the `host` interface, below).
//!
//! What the units share across instances (the I/O runtime, pools, clients)
//! is the engine's ([`services`]), closed with it. Every interface of the
//! plugin worlds is linked for every plugin, since every world imports
//! them: what a plugin was not granted is refused when it asks, naming the
//! grant it lacks. The config side of each grant (its keys and their checks)
//! is in [`crate::config`], which knows nothing of plugins.

pub(super) mod files;
pub(super) mod grants;
pub(super) mod http;
pub(super) mod jetstream;
pub(super) mod logging;
pub(super) mod services;
pub(super) mod sql;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::host::{self, Fence, Host, Level};
use super::ctx::PluginCtx;

/// Links every capability's interfaces, WASI's first.
pub(super) fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // WASI's timers, cut off at each call's deadline.
    super::deadline::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    super::bindings::types::add_to_linker::<_, HasSelf<PluginCtx>>(linker, |ctx| ctx)?;
    host::add_to_linker::<_, HasSelf<PluginCtx>>(linker, |ctx| ctx)?;
    sql::add_to_linker(linker)?;
    jetstream::add_to_linker(linker)?;
    // The same capabilities under the 0.1 names, for plugins built against them.
    super::legacy::add_to_linker(linker)
}

/// The `synchost:plugin/host` interface: what every plugin may ask of the host.
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

    /// Only the plugin's own secrets, as its tenant file grants them.
    fn secret(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).cloned()
    }

    /// The lease of the run this instance works for (see [`crate::sync`]).
    fn run_fence(&mut self) -> Option<Fence> {
        self.fence.clone()
    }
}

impl super::bindings::types::Host for PluginCtx {}
