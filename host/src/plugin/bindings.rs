//! Host-side bindings for the three plugin worlds. The shared interfaces
//! (`types`, `host`, `sql`) are generated once, with the source world, and
//! reused by the others so that a row is the same Rust type whichever plugin
//! it crosses.

mod source_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "synchost:plugin/source-plugin",
        additional_derives: [PartialEq],
        with: {
            "synchost:plugin/sql.connection": crate::plugin::sql::SqlConnection,
            "synchost:plugin/sql.rows": crate::plugin::sql::SqlRows,
        },
    });
}

mod destination_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "synchost:plugin/destination-plugin",
        with: {
            "synchost:plugin/types": super::source_world::synchost::plugin::types,
            "synchost:plugin/host": super::source_world::synchost::plugin::host,
            "synchost:plugin/sql": super::source_world::synchost::plugin::sql,
        },
    });
}

mod transform_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "synchost:plugin/transform-plugin",
        with: {
            "synchost:plugin/types": super::source_world::synchost::plugin::types,
            "synchost:plugin/host": super::source_world::synchost::plugin::host,
            "synchost:plugin/sql": super::source_world::synchost::plugin::sql,
        },
    });
}

pub use destination_world::{DestinationPlugin, DestinationPluginPre};
pub use source_world::synchost::plugin::{host, jetstream, sql, types};
pub use source_world::{SourcePlugin, SourcePluginPre};
pub use transform_world::exports::synchost::plugin::transform::Transformed;
pub use transform_world::{TransformPlugin, TransformPluginPre};
