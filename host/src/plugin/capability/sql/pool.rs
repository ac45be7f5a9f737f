//! The host's connection pools (kept with the engine's services): one per tenant connection, made on first use
//! and shared by every plugin instance of that tenant, so that a pipeline run
//! every few seconds does not log in to its database every time. A connection
//! whose config changed (a reload) gets a new pool; the old one closes once
//! its last session is returned.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use crate::config::{ConnectionConfig, SqlDialect};
use crate::plugin::capability::services::HostServices;
use crate::plugin::types::Error as WitError;

#[derive(Clone)]
pub(in crate::plugin) enum Pool {
    Postgres(deadpool_postgres::Pool),
    Mysql(mysql_async::Pool),
}

/// The pools of an engine's services, by tenant and connection name.
pub(in crate::plugin) type Pools = HashMap<(String, String), (Arc<ConnectionConfig>, Pool)>;

impl Pool {
    /// Closes the pool: idle sessions go now, lent ones when they come back.
    pub(in crate::plugin) fn close(&self) {
        match self {
            Pool::Postgres(pool) => pool.close(),
            // Disconnecting is async; the I/O runtime's shutdown drops the
            // idle connections, which closes them.
            Pool::Mysql(_) => {}
        }
    }
}

/// The pool of `tenant`'s connection `config`, made if need be.
pub(super) fn pool(services: &HostServices, tenant: &str, config: &Arc<ConnectionConfig>) -> Result<Pool, WitError> {
    let key = (tenant.to_string(), config.name.clone());
    let mut pools = services.pools.lock().expect("pool registry poisoned");
    if let Some((made_for, pool)) = pools.get(&key)
        && made_for.same_target(config)
    {
        return Ok(pool.clone());
    }
    let pool = make(services, config)?;
    pools.insert(key, (config.clone(), pool.clone()));
    Ok(pool)
}

fn make(services: &HostServices, config: &ConnectionConfig) -> Result<Pool, WitError> {
    let invalid = |e: &dyn std::fmt::Display| {
        WitError::Config(format!("connection `{}`: invalid URL `{}`: {e}", config.name, config.url))
    };
    match config.dialect {
        SqlDialect::Postgres => {
            let mut pg = tokio_postgres::Config::from_str(&config.url).map_err(|e| invalid(&e))?;
            if let Some(password) = &config.password {
                pg.password(password.expose());
            }
            pg.connect_timeout(config.connect_timeout);
            if pg.get_application_name().is_none() {
                pg.application_name("synchost");
            }
            let manager = deadpool_postgres::Manager::from_config(
                pg,
                tokio_postgres::NoTls,
                // A session that comes back from a plugin is checked for being
                // open; anything it left (a transaction) was rolled back.
                deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
            );
            let pool = deadpool_postgres::Pool::builder(manager)
                .max_size(config.max_connections as usize)
                .wait_timeout(Some(config.connect_timeout))
                .create_timeout(Some(config.connect_timeout))
                .recycle_timeout(Some(config.connect_timeout))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| WitError::Config(format!("connection `{}`: cannot make a pool: {e}", config.name)))?;
            Ok(Pool::Postgres(pool))
        }
        SqlDialect::Mysql => {
            // mysql_async spells the scheme `mysql`; MariaDB speaks the same protocol.
            let url = match config.url.split_once("://") {
                Some((_, rest)) => format!("mysql://{rest}"),
                None => config.url.clone(),
            };
            let opts = mysql_async::Opts::from_url(&url).map_err(|e| invalid(&e))?;
            let constraints =
                mysql_async::PoolConstraints::new(0, config.max_connections as usize).expect("0 <= max_connections");
            let pool_opts = mysql_async::PoolOpts::default()
                .with_constraints(constraints)
                .with_inactive_connection_ttl(config.idle_timeout)
                .with_ttl_check_interval(std::time::Duration::from_secs(1));
            let opts = mysql_async::OptsBuilder::from_opts(opts)
                .pass(config.password.as_ref().map(|p| p.expose().to_string()))
                .pool_opts(pool_opts);
            // The pool's background work runs on the I/O runtime.
            let _runtime = services.io().enter();
            Ok(Pool::Mysql(mysql_async::Pool::new(opts)))
        }
        SqlDialect::Sqlite => Err(WitError::Config(format!(
            "connection `{}`: SQLite connections are opened per session, not pooled",
            config.name
        ))),
    }
}
