//! synchost keeps destination data sets in step with sources, for many tenants
//! at once, through connectors and transforms that run as sandboxed
//! WebAssembly components.
//!
//! The main flow, in reading order:
//! - [`config`]: `synchost.toml` and `tenants/*.toml`, checked with file:line errors;
//! - [`plugin`]: compiling components and calling them inside their sandbox;
//! - [`signing`]: ed25519 signatures on plugin files;
//! - [`runtime`]: the two assembled, with the state store;
//! - [`sync`]: one diff sync or event sync of one pipeline;
//! - [`state`]: runs, cursors and dead letters (SQLite by default);
//! - [`daemon`]: every pipeline on its schedule, with a clean shutdown;
//! - [`cli`] and [`demo`]: the `synchost` command.

pub mod bundled;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod plugin;
pub mod runtime;
pub mod signing;
pub mod state;
pub mod sync;

pub use config::Config;
pub use runtime::{Runtime, Tenants};
pub use state::{PipelineId, StateStore};
pub use sync::{SyncError, SyncOptions, SyncReport};
pub use synchost_model as model;
