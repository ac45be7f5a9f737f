//! Host-side bindings for the three plugin worlds. The data types (the
//! `types` interface) are `synchost-model`'s, the crate the guest SDK uses
//! too (see [`types`]); the other shared interfaces (`host`, `sql`,
//! `jetstream`) are generated once, with the source world, and reused by the
//! others.

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
        linker.instance("synchost:plugin/types@0.2.0")?;
        Ok(())
    }
}

mod source_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "synchost:plugin/source-plugin",
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
        world: "synchost:plugin/destination-plugin",
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
        world: "synchost:plugin/transform-plugin",
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
