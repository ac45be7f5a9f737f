//! A destination that keeps a keyed data set in a directory the tenant grants
//! write access to.
//!
//! Records are spread over shards by a stable hash of their key. A shard is a
//! file of records (`shard-NNN.jsonl`, one JSON object per line, sorted by
//! key) and a log of the changes since it was last written (`shard-NNN.log`,
//! the same lines, appended): a batch costs one synced append per shard it
//! touches, and a log that outgrows its shard is folded into it, atomically
//! (a temporary file renamed over the old one). People may edit the files by
//! hand: a key's record is its last line, in the shard and then its log, and
//! fields a sync does not own are kept as they are.
//!
//! Each shard also keeps the newest lease token it was written under
//! (`fence-NNN.json`): a host whose lease passed on while it stalled cannot
//! write over the new holder's writes (see [`fence`]).
//!
//! Config: `dir`, `shards` (for a new data set; default 16), `page_size`,
//! `lock_stale_ms` (see [`files`]: several writers may share a data set).

mod fence;
mod files;
mod shard;
mod store;

use synchost_plugin_sdk::{self as sdk, Error, OperationBatch, Page, PluginInfo};

/// The destination of one plugin instance: its config, read once. The data
/// set is opened afresh by each call, since other writers may share it.
struct FileDestination {
    config: store::Config,
}

impl sdk::Plugin for FileDestination {
    type Config = store::Config;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "file-destination",
            env!("CARGO_PKG_VERSION"),
            "Keeps a keyed data set as sharded JSON-lines files in a granted directory",
        )
    }

    fn new(config: store::Config) -> Result<Self, Error> {
        Ok(FileDestination { config })
    }
}

impl sdk::Destination for FileDestination {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        store::DataSet::open(&self.config)?.page(token, self.config.page_size)
    }

    fn apply(&mut self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        store::DataSet::open_or_create(&self.config)?.apply(batch)
    }
}

sdk::export_destination!(FileDestination);
