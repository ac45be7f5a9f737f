//! A destination that keeps a keyed data set in a directory the tenant grants
//! write access to.
//!
//! Records are spread over shard files (`shard-NN.jsonl`, one JSON object per
//! line, sorted by key) by a stable hash of their key, so that applying a batch
//! rewrites only the shards it touches, and each rewrite is atomic (a temporary
//! file renamed over the old one). People may edit the files by hand: fields a
//! sync does not own are kept as they are.
//!
//! Config: `dir`, `shards` (for a new data set; default 16), `page_size`,
//! `lock_stale_ms` (see [`store`]: several writers may share a data set).

mod store;

use synchost_plugin_sdk::{self as sdk, Error, OperationBatch, Page, PluginInfo};

wit_bindgen::generate!({
    path: "../../wit",
    world: "synchost:plugin/destination-plugin",
    with: {
        "synchost:plugin/types@0.2.1": synchost_plugin_sdk::types,
        "synchost:plugin/host@0.2.1": synchost_plugin_sdk::host,
        "synchost:plugin/sql@0.2.1": synchost_plugin_sdk::sql,
    },
});

struct FileDestination;

impl exports::synchost::plugin::destination::Guest for FileDestination {
    fn info() -> PluginInfo {
        sdk::plugin_info(
            "file-destination",
            env!("CARGO_PKG_VERSION"),
            "Keeps a keyed data set as sharded JSON-lines files in a granted directory",
        )
    }

    fn snapshot(token: Option<String>) -> Result<Page, Error> {
        let config: store::Config = sdk::config()?;
        store::DataSet::open(&config)?.page(token, config.page_size)
    }

    fn apply(batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        let config: store::Config = sdk::config()?;
        store::DataSet::open_or_create(&config)?.apply(batch)
    }
}

impl exports::synchost::plugin::config::Guest for FileDestination {
    fn schema() -> Option<String> {
        sdk::config_schema::<store::Config>()
    }
}

export!(FileDestination);
