//! Plugins: WebAssembly components that implement the `synchost:plugin` worlds.
//!
//! [`PluginEngine`] compiles each component once per sha256 (keeping the
//! machine code on disk for the next start) and shares it across tenants;
//! [`PluginSetup`] is what one tenant grants one plugin; the instance types
//! ([`SourceInstance`], [`TransformInstance`], [`DestinationInstance`]) are
//! live sandboxes, one store each, whose every call runs under the plugin's
//! limits (deadline, memory, stack, optional fuel, output caps) with only the
//! capabilities its tenant granted (directories, HTTP hosts, secrets, SQL
//! connections, JetStream streams: one unit each, in `capability`).

mod bindings;
mod cache;
mod capability;
mod ctx;
mod deadline;
mod engine;
mod error;
mod instance;
mod kind;
mod legacy;

pub(crate) use bindings::types;
pub use capability::jetstream::Acknowledger;
pub use engine::{CompileStats, CompiledPlugin, DEFAULT_MAX_PLUGIN_SIZE, EngineError, EngineOptions, PluginEngine};
pub use error::{PluginError, WitError};
pub use instance::{
    DestinationInstance, Fence, PluginSetup, SourceInstance, TransformInstance, Transformed, config_schema, plugin_info,
};
pub use kind::{PluginKind, WIT_PACKAGE, WIT_VERSION};
