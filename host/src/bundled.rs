//! The plugins that ship inside the `synchost` binary, built from `plugins/` by
//! the build script. `synchost demo` writes them out; tests load them.
//! [`file_records`] reads what the file destination keeps.

pub mod file_records;

/// A plugin shipped with synchost.
pub struct BundledPlugin {
    /// The file name it is written out as, e.g. `file_source.wasm`.
    pub file_name: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! bundled {
    ($file:literal) => {
        BundledPlugin { file_name: $file, bytes: include_bytes!(concat!(env!("SYNCHOST_PLUGIN_DIR"), "/", $file)) }
    };
}

pub const FILE_SOURCE: BundledPlugin = bundled!("file_source.wasm");
pub const FILE_DESTINATION: BundledPlugin = bundled!("file_destination.wasm");
pub const FIELD_MAPPER: BundledPlugin = bundled!("field_mapper.wasm");
pub const REST_DESTINATION: BundledPlugin = bundled!("rest_destination.wasm");
pub const SQL_SOURCE: BundledPlugin = bundled!("sql_source.wasm");
pub const SQL_DESTINATION: BundledPlugin = bundled!("sql_destination.wasm");
pub const JETSTREAM_SOURCE: BundledPlugin = bundled!("jetstream_source.wasm");

/// Every bundled plugin.
pub const ALL: [BundledPlugin; 7] =
    [FILE_SOURCE, FILE_DESTINATION, FIELD_MAPPER, REST_DESTINATION, SQL_SOURCE, SQL_DESTINATION, JETSTREAM_SOURCE];

/// Where the build script put the plugin files.
pub const PLUGIN_DIR: &str = env!("SYNCHOST_PLUGIN_DIR");
