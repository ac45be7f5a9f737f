//! A destination that keeps a keyed data set in a directory the tenant grants
//! write access to.
//!
//! Records are spread over shard files (`shard-NN.jsonl`, one JSON object per
//! line, sorted by key) by a stable hash of their key, so that applying a batch
//! rewrites only the shards it touches, and each rewrite is atomic (a temporary
//! file renamed over the old one). People may edit the files by hand: fields a
//! sync does not own are kept as they are.

mod store;

use serde::Deserialize;
use synchost_plugin_sdk::{self as sdk, Error, OperationBatch, Page, PluginInfo};

wit_bindgen::generate!({
    path: "../../wit",
    world: "synchost:plugin/destination-plugin",
    with: {
        "synchost:plugin/types@0.1.0": synchost_plugin_sdk::types,
        "synchost:plugin/host@0.1.0": synchost_plugin_sdk::host,
    },
});

/// The plugin's `config` table in the tenant file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The directory that holds the data set, e.g. "/out".
    pub dir: String,
    /// How many shard files a new data set is spread over; an existing data set
    /// keeps the number it was created with.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Records per snapshot page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

fn default_shards() -> u32 {
    16
}

fn default_page_size() -> usize {
    5000
}

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
        let config: Config = sdk::config()?;
        store::DataSet::open(&config)?.page(token, config.page_size)
    }

    fn apply(batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        let config: Config = sdk::config()?;
        store::DataSet::open_or_create(&config)?.apply(batch)
    }
}

export!(FileDestination);
