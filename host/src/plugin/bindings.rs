//! Host-side bindings for the three plugin worlds. The data types (the
//! `types` interface) are `synchost-model`'s, the crate the guest SDK uses
//! too (see [`types`]); the other shared interfaces (`host`, `sql`,
//! `jetstream`) are generated once, with the source world, and reused by the
//! others.
//!
//! The host binds each world without its `config` export (see
//! `wit/config.wit`): a plugin built against 0.2.0 lacks it and must still
//! load, so the worlds here are the package's own minus that export, and the
//! schema is looked up on its own, where a plugin has it ([`ConfigSchemaIndices`]).

/// The `types` interface, as the bindings expect an interface given with
/// `with`: its types (the model's, which derive wasmtime's component traits)
/// and its host side, which is empty since the interface has no functions.
/// Linking it gives components the (empty) instance they import.
pub mod types {
    pub use synchost_model::types::*;
    use wasmtime::component::{HasData, Linker};

    pub trait Host {}
    impl<H: Host + ?Sized> Host for &mut H {}

    pub trait HostWithStore<T>: HasData {}
    impl<H: ?Sized + HasData, T> HostWithStore<T> for H {}

    pub fn add_to_linker<T, D>(linker: &mut Linker<T>, _host_getter: fn(&mut T) -> D::Data<'_>) -> wasmtime::Result<()>
    where
        D: HostWithStore<T>,
        for<'a> D::Data<'a>: Host,
        T: 'static,
    {
        linker.instance("synchost:plugin/types@0.2.3")?;
        Ok(())
    }
}

mod source_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package synchost:host;
            world source-plugin {
                    import synchost:plugin/host@0.2.3;
                    import synchost:plugin/sql@0.2.3;
                    import synchost:plugin/jetstream@0.2.3;
                    export synchost:plugin/source@0.2.3;
            }
        ",
        world: "synchost:host/source-plugin",
        with: {
            "synchost:plugin/types": super::types,
            "synchost:plugin/sql.connection": crate::plugin::capability::sql::SqlConnection,
            "synchost:plugin/sql.rows": crate::plugin::capability::sql::SqlRows,
        },
    });
}

mod destination_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package synchost:host;
            world destination-plugin {
                    import synchost:plugin/host@0.2.3;
                    import synchost:plugin/sql@0.2.3;
                    export synchost:plugin/destination@0.2.3;
            }
        ",
        world: "synchost:host/destination-plugin",
        with: {
            "synchost:plugin/types": super::types,
            "synchost:plugin/host": super::source_world::synchost::plugin::host,
            "synchost:plugin/sql": super::source_world::synchost::plugin::sql,
        },
    });
}

mod transform_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package synchost:host;
            world transform-plugin {
                    import synchost:plugin/host@0.2.3;
                    import synchost:plugin/sql@0.2.3;
                    export synchost:plugin/transform@0.2.3;
            }
        ",
        world: "synchost:host/transform-plugin",
        with: {
            "synchost:plugin/types": super::types,
            "synchost:plugin/host": super::source_world::synchost::plugin::host,
            "synchost:plugin/sql": super::source_world::synchost::plugin::sql,
        },
    });
}

pub use destination_world::{DestinationPlugin, DestinationPluginPre};
pub use source_world::synchost::plugin::{host, jetstream, sql};
pub use source_world::{SourcePlugin, SourcePluginPre};
pub use transform_world::exports::synchost::plugin::transform::Transformed;
pub use transform_world::{TransformPlugin, TransformPluginPre};

mod config_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package synchost:host;
            world configured {
                export synchost:plugin/config@0.2.3;
            }
        ",
        world: "synchost:host/configured",
    });
}

/// The `config` export of a plugin that has one (WIT 0.2.1 and later; a
/// 0.2.1 plugin's `config@0.2.1` is found under this name too, as wasmtime
/// looks exports up by semver-compatible version).
pub use config_world::exports::synchost::plugin::config::GuestIndices as ConfigSchemaIndices;

/// The name a component exports the `config` interface under.
pub const CONFIG_EXPORT: &str = "synchost:plugin/config@0.2.3";
