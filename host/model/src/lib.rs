//! The data that crosses synchost's plugin boundary, as one set of Rust types
//! that the host and the guest SDK share.
//!
//! [`types`] is the `types` interface of `wit/types.wit`, written out by hand
//! rather than generated: the host's wasmtime bindings and the guests'
//! wit-bindgen bindings are both told (with their `with` option) to use these
//! types, so a table a plugin returns is lifted straight into a
//! [`types::Table`] the diff engine reads, and nothing converts it again.
//! Both bindings check at build time that every type matches the WIT (field
//! names, cases, payloads), and wasmtime checks it again when it loads a
//! component.
//!
//! Beside the types:
//! - [`table`]: the column layout (`types.wit` says how a column's bytes are
//!   laid out): reading cells in place, checking a table a plugin sent,
//!   building tables row by row or column by column;
//! - [`json`]: the JSON forms of values and rows, and JSON objects read
//!   straight into table cells;
//! - [`lanes`]: the key hash that picks a key's apply lane, a contract with
//!   destinations that shard by key.

pub mod json;
pub mod lanes;
pub mod table;
pub mod types;

pub use json::{JsonFields, JsonValue, row_to_json, value_from_json, value_to_json};
pub use table::{ColumnBuilder, TableBuilder, ValueRef};
pub use types::*;
