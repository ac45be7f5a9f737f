//! The guest-side kit for synchost plugins written in Rust.
//!
//! A plugin implements [`Plugin`] and one of [`Source`], [`Destination`] or
//! [`Transform`], and exports itself with [`export_source!`],
//! [`export_destination!`] or [`export_transform!`] (docs/connectors.md in
//! synchost's repository walks through one). The SDK carries the WIT package it targets
//! ([`WIT_VERSION`], in its `wit/`) and re-exports the [`wit_bindgen`] its
//! macros use, so a plugin crate needs neither.
//!
//! It generates the bindings for what every plugin imports (the `host`,
//! `sql` and `jetstream` interfaces of `synchost:plugin`) once, takes the
//! data types (the `types` interface) from `synchost-model`, the crate the
//! host uses for them too, and adds what each plugin would otherwise write
//! again: reading its typed config, logging, converting values to and from
//! JSON, building and reading the column-laid tables that snapshot pages and
//! transforms carry ([`table`], [`json`]), and HTTP requests ([`http`]).

mod bindings {
    wit_bindgen::generate!({
        // The SDK's own copy of the WIT, so that it builds wherever it is.
        path: "wit",
        inline: "
            package synchost:sdk;
            world imports {
                import synchost:plugin/types@0.2.3;
                import synchost:plugin/host@0.2.3;
                import synchost:plugin/sql@0.2.3;
                import synchost:plugin/jetstream@0.2.3;
            }
        ",
        world: "synchost:sdk/imports",
        // The data types are the host's own (see `synchost-model`): a table
        // is laid out, checked and read by the same code on both sides.
        with: { "synchost:plugin/types@0.2.3": synchost_model::types },
        generate_unused_types: true,
        generate_all,
    });
}

pub mod http;
mod plugin;

pub use plugin::{Destination, Plugin, Source, Transform, Transformed, unsupported, with_instance};
/// The wit-bindgen this SDK's macros generate bindings with: a plugin needs
/// no other (and should depend on none of its own).
pub use wit_bindgen;

pub use bindings::synchost::plugin::{host, jetstream, sql};
pub use synchost_model::{ColumnBuilder, TableBuilder, ValueRef};
pub use synchost_model::{JsonFields, JsonValue, value_from_json, value_to_json};
pub use synchost_model::{json, lanes, table, types};
pub use types::{
    Action, Change, Column, Error, Event, EventBatch, Kind, Operation, OperationBatch, Page, PluginInfo, Row,
    RowUpdate, Table, Value,
};

/// The version of the `synchost:plugin` WIT package this SDK targets: a host
/// that knows this version or a later 0.2.x runs its plugins.
pub const WIT_VERSION: &str = "0.2.3";

/// The `info()` answer for a plugin built with this SDK.
pub fn plugin_info(name: &str, version: &str, description: &str) -> PluginInfo {
    PluginInfo {
        name: name.to_string(),
        version: version.to_string(),
        description: description.to_string(),
        wit_version: WIT_VERSION.to_string(),
    }
}

/// Reads the plugin's `config` table from the tenant file into `T`.
///
/// A config that does not fit `T` is a [`Error::Config`] naming what is wrong,
/// so the host stops the pipeline and shows the operator the reason.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, Error> {
    let text = host::config();
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // The JSON is the host's rendering of the tenant's TOML: a position
        // in it would point nowhere the operator can look; the key does.
        let message = match message.rfind(" at line ") {
            Some(at) => &message[..at],
            None => &message,
        };
        if path == "." || path == "?" || message.contains(&format!("`{path}`")) {
            Error::Config(format!("invalid plugin config: {message}"))
        } else {
            Error::Config(format!("invalid plugin config: `{path}`: {message}"))
        }
    })
}

/// The answer to the `config` export's `schema()` (WIT 0.2.1): the JSON
/// Schema of `T`, the type the plugin reads its config into with
/// [`config`]. Derive `schemars::JsonSchema` beside `serde::Deserialize` on
/// it, so that what the host checks a tenant file against is what the
/// plugin reads: serde's attributes shape both (`deny_unknown_fields` becomes
/// `"additionalProperties": false`, `default` a default, an `Option` a key
/// that may be left out), and doc comments become descriptions.
pub fn config_schema<T: schemars::JsonSchema>() -> Option<String> {
    Some(schemars::schema_for!(T).as_value().to_string())
}

/// Logging through the host, which tags each line with the tenant and plugin.
pub mod log {
    use super::host::{self, Level};

    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
}

/// Renders a value as plain text, as a template or a key would show it (see
/// [`ValueRef`]'s `Display`).
pub fn value_to_text(value: &Value) -> String {
    ValueRef::from(value).to_string()
}

/// `EIO` as wasi-libc numbers it. A write to a file goes through a WASI
/// output stream, and wasi-libc reports every write the stream refused as
/// this, whatever the host's file system said: a full disk is the usual cause.
const WASI_EIO: i32 = 29;

/// Turns a failed file or I/O operation into the WIT error the host acts on:
/// a missing file or a denied path needs an operator; anything else may pass.
pub fn io_error(context: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound | K::PermissionDenied | K::InvalidInput | K::ReadOnlyFilesystem => {
            Error::Config(format!("{context}: {e}"))
        }
        K::InvalidData => Error::Rejected(format!("{context}: {e}")),
        _ if e.raw_os_error() == Some(WASI_EIO) => Error::Transient(format!(
            "{context}: {e}: the host refused the write; through WASI a full disk or an exhausted quota shows only so"
        )),
        _ => Error::Transient(format!("{context}: {e}")),
    }
}
