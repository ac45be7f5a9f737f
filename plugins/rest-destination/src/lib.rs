//! A destination that keeps a collection of a JSON REST API in step: records
//! are listed with `GET {base_url}{collection}` (paged) and written one request
//! per operation (`POST`, `PATCH`/`PUT`, `DELETE` on `{collection}/{key}`).
//!
//! It reaches the network through `wasi:http`, so the tenant must allow its
//! host: `allowed_hosts = ["api.example.com"]` (an IP address or a loopback
//! host only when listed with its port, e.g. `"127.0.0.1:8080"`).
//!
//! Config (the plugin's `config` table):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `base_url` | required | e.g. `"https://api.example.com/v1"` |
//! | `collection` | `""` | path of the collection under `base_url`, e.g. `"/people"` |
//! | `key_field` | `"id"` | the API field that holds a record's key |
//! | `pagination` | `"cursor"` | `"cursor"`, `"page"` or `"none"` (one request lists everything) |
//! | `page_size` | `500` | records asked for per page |
//! | `items_field`, `next_field` | `"items"`, `"next"` | where a page's records and the next cursor are; a bare JSON array is a last page |
//! | `cursor_param` | `"cursor"` | query parameter carrying the cursor |
//! | `page_param`, `first_page` | `"page"`, `1` | page paging: the page number parameter and where it starts |
//! | `page_size_param` | `"limit"` (`"per_page"` for page paging) | query parameter carrying `page_size` |
//! | `update_method` | `"patch"` | `"patch"` sends the changed fields; `"put"` the whole row |
//! | `upsert_method` | `"put"` | an event's upsert: `"put"` (the API's PUT creates a missing record), `"put-then-post"` (POST when PUT answers 404), `"patch-then-post"` (PATCH merges, POST when it answers 404) |
//! | `put_merges` | `false` | before each PUT, GET the record and merge the row into it, for APIs whose PUT replaces the whole record: fields the sync does not write survive |
//! | `fields` | `{}` | synchost field → API field, e.g. `{ name = "full_name" }`; others pass through unchanged |
//! | `auth_secret` | none | name of a secret (the plugin's `secrets`) sent in the auth header |
//! | `auth_header`, `auth_scheme` | `"Authorization"`, `"Bearer"` | header `auth_header: auth_scheme <secret>` (an empty scheme sends the secret alone) |
//! | `headers` | `{}` | more headers sent with every request |
//!
//! Outcomes: 2xx is done (and 404/410 for a delete); 408, 425, 429, 5xx and
//! lost connections are transient; other 4xx reject the operation with the
//! status and the start of the response; 401/403, redirects and a destination
//! the host refuses fail the whole batch as a config error.

mod apply;
mod client;
mod config;
mod snapshot;

use synchost_plugin_sdk::{self as sdk, Error, OperationBatch, Page, PluginInfo};

use crate::config::{Api, RestConfig};

/// The destination of one plugin instance: the config is checked and the
/// secret resolved once, when the first call needs them, not again for every
/// page and batch of the run.
struct RestDestination {
    api: Api,
}

impl sdk::Plugin for RestDestination {
    type Config = RestConfig;

    fn info() -> PluginInfo {
        sdk::plugin_info(
            "rest-destination",
            env!("CARGO_PKG_VERSION"),
            "Keeps a collection of a JSON REST API in step, over wasi:http",
        )
    }

    fn new(config: RestConfig) -> Result<Self, Error> {
        Ok(RestDestination { api: config.build()? })
    }
}

impl sdk::Destination for RestDestination {
    fn snapshot(&mut self, token: Option<String>) -> Result<Page, Error> {
        snapshot::page(&self.api, token)
    }

    fn apply(&mut self, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
        apply::apply(&self.api, batch)
    }
}

sdk::export_destination!(RestDestination);
