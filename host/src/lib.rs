//! synchost keeps destination data sets in step with sources, for many tenants
//! at once, through connectors and transforms that run as sandboxed
//! WebAssembly components.
//!
//! How the parts fit, in reading order (each uses only those above it):
//! - [`model`] (the `synchost-model` crate): values, rows, tables and
//!   operations, the data that crosses the plugin boundary, shared with the
//!   guest SDK;
//! - [`fault`]: the last word of a process that faults on a mapped file;
//! - [`signing`]: ed25519 signatures on plugin files;
//! - [`config`]: `synchost.toml` and `tenants/*.toml`, checked with file:line
//!   errors;
//! - [`plugin`]: compiling components once per digest, and calling them in a
//!   sandbox under their limits, with only the capabilities their tenant granted;
//! - [`state`]: runs, cursors, retry queues and dead letters (SQLite by default);
//! - [`sync`]: one diff or event sync of one pipeline, through one apply layer,
//!   telling observers what it does ([`sync::events`]);
//! - [`runtime`]: config, compiled plugins and state assembled; reload, rollback;
//! - [`metrics`]: what the daemon counts, for Prometheus;
//! - [`daemon`]: every pipeline on its schedule, with a clean shutdown, and
//!   [`admin`]: its HTTP API, metrics endpoint and web console;
//! - [`cli`] and [`demo`]: the `synchost` command (anyhow lives only here).
//!
//! `docs/architecture.md` follows one row through each kind of sync.

pub mod admin;
pub mod bundled;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fault;
pub mod metrics;
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
