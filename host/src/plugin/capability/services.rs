//! What the host's capabilities share across plugin instances, owned by the
//! plugin engine (and so by the runtime) rather than by the process: the I/O
//! runtime database and broker connections run on, the tenants' SQL
//! connection pools, and the NATS clients. Dropping the engine closes them,
//! so a runtime that ends leaves no pool, client or I/O thread behind, and
//! two runtimes in one process (tests, benchmarks) share nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sql::pool::Pools;

/// A server's URL and the token used on it.
pub(in crate::plugin) type ClientKey = (String, Option<String>);

/// The shared resources of the capabilities. One per engine.
pub struct HostServices {
    /// `None` only while being dropped.
    io: Option<tokio::runtime::Runtime>,
    /// One pool per tenant connection (see [`super::sql`]).
    pub(in crate::plugin) pools: Mutex<Pools>,
    /// One client per NATS server and token (see [`super::jetstream`]).
    pub(in crate::plugin) nats: Mutex<HashMap<ClientKey, async_nats::Client>>,
}

/// A wait that took longer than its timeout.
pub(in crate::plugin) struct Elapsed;

impl HostServices {
    pub(in crate::plugin) fn new() -> std::io::Result<Arc<HostServices>> {
        // Its own small runtime: plugin calls block on it from their threads,
        // outside any async runtime.
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("synchost-io")
            .enable_all()
            .build()?;
        let services = Arc::new(HostServices { io: Some(io), pools: Mutex::default(), nats: Mutex::default() });
        services.io().spawn(close_idle_sessions(Arc::downgrade(&services)));
        Ok(services)
    }

    /// The runtime every database and broker connection runs on.
    pub(in crate::plugin) fn io(&self) -> &tokio::runtime::Handle {
        self.io.as_ref().expect("the I/O runtime lives as long as the services").handle()
    }

    /// Runs `future` on the I/O runtime and waits for it, at most `timeout`
    /// and never past the deadline of the plugin call waiting on it.
    pub(in crate::plugin) fn block_on<T>(
        &self,
        timeout: Duration,
        future: impl Future<Output = T>,
    ) -> Result<T, Elapsed> {
        let timeout = crate::plugin::deadline::bounded(timeout);
        self.io().block_on(async { tokio::time::timeout(timeout, future).await.map_err(|_| Elapsed) })
    }
}

/// Closes the PostgreSQL pools' sessions idle for longer than their
/// connection's `idle_timeout`, every second, for as long as the services
/// live. A host serving many tenants would otherwise keep a session per
/// tenant connection it ever used, and a fleet of hosts, among which
/// pipelines move, one per host: past the server's connection limit. (MySQL
/// pools do the same themselves: see `pool.rs`.)
async fn close_idle_sessions(services: std::sync::Weak<HostServices>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(services) = services.upgrade() else { return };
        let pools: Vec<(Duration, deadpool_postgres::Pool)> = services
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter_map(|(config, pool)| match pool {
                super::sql::pool::Pool::Postgres(pool) => Some((config.idle_timeout, pool.clone())),
                super::sql::pool::Pool::Mysql(_) => None,
            })
            .collect();
        for (idle_timeout, pool) in pools {
            pool.retain(|_, metrics| metrics.last_used() < idle_timeout);
        }
    }
}

impl Drop for HostServices {
    fn drop(&mut self) {
        for (_, pool) in self.pools.get_mut().map(std::mem::take).unwrap_or_default().into_values() {
            pool.close();
        }
        self.nats.get_mut().map(HashMap::clear).unwrap_or_default();
        // Not a blocking shutdown: the engine may be dropped inside an async
        // context (the daemon's), where waiting for tasks is not allowed.
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}
