//! The shared state store: PostgreSQL, chosen with `state = "postgres://…"`
//! in `synchost.toml`, so that the state outlives any one machine and every
//! host (and every `synchost` command) reading the same database sees the
//! same runs, cursors, retry queues and dead letters.
//!
//! The store's calls are synchronous, like the SQLite store's, and are made
//! from plugin threads and from async handlers alike. The database's
//! connections therefore live on a small runtime of the store's own; a call
//! waits for its queries with a plain executor, which may block any thread
//! (a runtime's `block_on` may not, inside another runtime).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object, Pool};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::{
    ApprovalRequest, ArchivedFile, BatchStats, DeadLetter, EventCommit, Fenced, HostInfo, Lease, LeaseAnswer,
    LeaseStep, Pause, PermittedLoad, PipelineId, RequeueOutcome, RetryItem, RunFilter, RunId, RunRecord, RunStats,
    RunStatus, StateError, StateResult, StateStore, abandoned_because, grant_reason, holder_gone, lease_step, now,
    operation_from_text, parse_mode,
};
use crate::config::Mode;

/// Each entry moves the schema one version on; the table
/// `synchost_schema_version` records how many have been applied. The
/// tables go into the connection's current schema: give synchost a database
/// of its own, or a schema (`options=-csearch_path%3Dsynchost` in the URL).
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE runs (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant      TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        mode        TEXT NOT NULL,
        status      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        stats       JSONB NOT NULL,
        error       TEXT,
        plugins     JSONB NOT NULL,
        host        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        token       BIGINT NOT NULL
    );
    CREATE INDEX runs_by_pipeline ON runs (tenant, pipeline, id);
    CREATE INDEX runs_running ON runs (tenant, pipeline) WHERE status = 'running';
    CREATE TABLE cursors (
        tenant     TEXT NOT NULL,
        pipeline   TEXT NOT NULL,
        cursor     TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant, pipeline)
    );
    CREATE TABLE dead_letters (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant        TEXT NOT NULL,
        pipeline      TEXT NOT NULL,
        run           BIGINT NOT NULL,
        position      TEXT NOT NULL,
        key           TEXT NOT NULL,
        operation     TEXT NOT NULL,
        reason        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        superseded_by TEXT
    );
    CREATE INDEX dead_letters_by_pipeline ON dead_letters (tenant, pipeline, key);
    CREATE TABLE managed_keys (
        tenant   TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        key      TEXT NOT NULL,
        PRIMARY KEY (tenant, pipeline, key)
    );
    CREATE TABLE retry_queue (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant          TEXT NOT NULL,
        pipeline        TEXT NOT NULL,
        key             TEXT NOT NULL,
        position        TEXT NOT NULL,
        operation       TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        last_error      TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        UNIQUE (tenant, pipeline, key)
    );
    CREATE TABLE event_batches (
        run          BIGINT NOT NULL,
        seq          BIGINT NOT NULL,
        stats        JSONB NOT NULL,
        committed_at TEXT NOT NULL,
        PRIMARY KEY (run, seq)
    );
    CREATE TABLE permitted_loads (
        tenant   TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        run      BIGINT NOT NULL,
        why      TEXT NOT NULL,
        writes   BIGINT NOT NULL,
        deletes  BIGINT NOT NULL,
        PRIMARY KEY (tenant, pipeline)
    );
    CREATE TABLE paused_pipelines (
        tenant    TEXT NOT NULL,
        pipeline  TEXT NOT NULL,
        paused_at TEXT NOT NULL,
        reason    TEXT,
        PRIMARY KEY (tenant, pipeline)
    );
    CREATE TABLE leases (
        tenant        TEXT NOT NULL,
        pipeline      TEXT NOT NULL,
        holder        TEXT NOT NULL,
        token         BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        version       TEXT,
        -- the holder's process, so that a lease of a process that is gone
        -- can be taken at once by another process of its machine
        machine       TEXT NOT NULL DEFAULT '',
        pid           INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, pipeline)
    );
    CREATE TABLE lease_grants (
        tenant        TEXT NOT NULL,
        pipeline      TEXT NOT NULL,
        token         BIGINT NOT NULL,
        holder        TEXT NOT NULL,
        granted_at_ms BIGINT NOT NULL,
        -- the lease it replaced, as the grant found it: it had ended, or its
        -- holder's process on this machine was gone (`why`)
        why                    TEXT NOT NULL,
        previous_holder        TEXT NOT NULL,
        previous_expires_at_ms BIGINT NOT NULL,
        PRIMARY KEY (tenant, pipeline, token)
    );
    CREATE TABLE fenced_writes (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant      TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        run         BIGINT,
        run_token   BIGINT NOT NULL,
        lease_token BIGINT NOT NULL,
        holder      TEXT,
        at          TEXT NOT NULL
    );
    CREATE TABLE hosts (
        id            TEXT PRIMARY KEY,
        started_at    TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        pipelines     BIGINT NOT NULL,
        versions      JSONB NOT NULL
    );
"#,
    // Run archives, so that any host can show, approve and replay any run.
    // The files are zstd already: EXTERNAL spares PostgreSQL compressing
    // them again.
    r#"
    CREATE TABLE run_archives (
        run  BIGINT NOT NULL,
        name TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (run, name)
    );
    ALTER TABLE run_archives ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE approvals (
        run          BIGINT PRIMARY KEY,
        tenant       TEXT NOT NULL,
        pipeline     TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        claimed_by   TEXT,
        answer       TEXT
    );
"#,
    // Which state this is (see the SQLite store's migration).
    r#"
    CREATE TABLE state_identity (id TEXT NOT NULL);
    INSERT INTO state_identity (id) VALUES (md5(random()::text || clock_timestamp()::text));
"#,
];

// The statements of every event batch's commit, prepared once per connection.
const UPSERT_CURSOR: &str = "INSERT INTO cursors (tenant, pipeline, cursor, updated_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (tenant, pipeline) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at";
const LATE_QUEUE_ITEMS: &str = "SELECT key FROM retry_queue WHERE tenant = $1 AND pipeline = $2 AND id > $3";
const UNQUEUE: &str = "DELETE FROM retry_queue WHERE tenant = $1 AND pipeline = $2 AND key = ANY($3)";
const INSERT_BATCH: &str = "INSERT INTO event_batches (run, seq, stats, committed_at) VALUES ($1, $2, $3, $4)";
const UPDATE_RUN_STATS: &str = "UPDATE runs SET stats = $2 WHERE id = $1";

/// The retry items a commit queues, as one array per column.
struct QueuedColumns<'a> {
    keys: Vec<&'a str>,
    positions: Vec<&'a str>,
    operations: Vec<String>,
    attempts: Vec<i32>,
    due: Vec<i64>,
    errors: Vec<&'a str>,
}

impl<'a> QueuedColumns<'a> {
    fn of(items: &[&'a super::NewRetry]) -> QueuedColumns<'a> {
        QueuedColumns {
            keys: items.iter().map(|item| item.key.as_str()).collect(),
            positions: items.iter().map(|item| item.position.as_str()).collect(),
            operations: items.iter().map(|item| item.operation.to_string()).collect(),
            attempts: items.iter().map(|item| item.attempts as i32).collect(),
            due: items.iter().map(|item| item.next_attempt_at).collect(),
            errors: items.iter().map(|item| item.last_error.as_str()).collect(),
        }
    }
}

const APPROVAL_COLUMNS: &str =
    "SELECT run, tenant, pipeline, requested_by, requested_at, claimed_by, answer FROM approvals";

fn approval_request(row: &tokio_postgres::Row) -> ApprovalRequest {
    ApprovalRequest {
        run: row.get(0),
        pipeline: PipelineId::new(row.get(1), row.get(2)),
        requested_by: row.get(3),
        requested_at: row.get(4),
        claimed_by: row.get(5),
        answer: row.get(6),
    }
}

/// The database's clock in milliseconds since the epoch: leases end by it,
/// whatever the hosts' clocks say.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Any lock number will do, as long as every synchost uses the same one:
/// migrations of one database run one at a time.
const MIGRATION_LOCK: i64 = 0x73796e63686f7374; // "synchost"

/// How long one call may wait for a connection and for its queries: a
/// database that hangs fails the call (and so the run) instead of holding it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections kept open: enough for a few of the daemon's pipelines
/// committing side by side while the API reads (a commit is one short
/// transaction), and few, since every host of a fleet keeps its own.
const MAX_CONNECTIONS: usize = 4;

pub struct PostgresStore {
    /// `None` only while being dropped.
    io: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Where the store was opened, as written (no password), for errors.
    url: String,
    /// This machine's name: runs are recorded with it and their process id,
    /// and only this machine can tell whether one of its processes is gone.
    machine: String,
    /// The runs this process started and has not finished (see `SqliteStore`).
    live_runs: Mutex<HashSet<RunId>>,
    /// See [`StateStore::identity`]; read once the schema is up to date.
    identity: String,
}

fn failed(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StateError {
    let context = context.into();
    move |e| StateError { context, source: Box::new(e) }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL without a
    /// password; `password` stands beside it) and brings its schema up to
    /// date. `lease_time` is the fleet's (see [`StateStore::acquire_lease`]).
    pub fn open(url: &str, password: Option<&str>, lease_time: Duration) -> StateResult<PostgresStore> {
        let refused = |why: String| StateError { context: format!("state `{url}`"), source: why.into() };
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| refused(format!("not a PostgreSQL URL: {e}")))?;
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(10));
        // A host that stalls (paused, swapped out, its network hung) inside
        // one of its short transactions would keep that transaction's locks,
        // the lease row's among them, and with them keep every other host
        // from taking its pipelines over for as long as the stall lasts. The
        // server ends a transaction left idle for a third of the lease time.
        let idle_limit = (lease_time / 3).max(Duration::from_millis(500));
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            idle_limit.as_millis()
        );
        config.options(options.trim_start());
        if config.get_application_name().is_none() {
            // Told apart from the plugins' sessions (`synchost`) in
            // pg_stat_activity.
            config.application_name("synchost-state");
        }
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("synchost-state")
            .enable_all()
            .build()
            .map_err(|e| refused(format!("cannot start its I/O thread: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| refused(format!("cannot make a connection pool: {e}")))?;
        let mut store = PostgresStore {
            io: Some(io),
            pool,
            url: url.to_string(),
            machine: super::machine_name(),
            live_runs: Mutex::default(),
            identity: String::new(),
        };
        store.migrate()?;
        store.identity = store.with("cannot read the state's identity", async |client| {
            Ok(client.query_one("SELECT id FROM state_identity", &[]).await?.get(0))
        })?;
        Ok(store)
    }

    /// Runs `call` with a connection of the pool and waits for it, at most
    /// [`CALL_TIMEOUT`].
    fn with<T>(
        &self,
        context: impl Into<String>,
        call: impl AsyncFnOnce(&mut Object) -> Result<T, tokio_postgres::Error>,
    ) -> StateResult<T> {
        let context = context.into();
        let io = self.io.as_ref().expect("the I/O runtime lives as long as the store");
        // Entered, so that the pool's timers and new connections run on the
        // store's runtime whichever thread waits here.
        let _entered = io.enter();
        let work = async {
            let mut client = self.pool.get().await.map_err(|e| StateError {
                context: format!("{context}: no connection to `{}`", self.url),
                source: Box::new(e),
            })?;
            call(&mut client).await.map_err(failed(context.clone()))
        };
        block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, work).await.unwrap_or_else(|_| {
                Err(StateError {
                    context: context.clone(),
                    source: format!("`{}` did not answer within {CALL_TIMEOUT:?}", self.url).into(),
                })
            })
        })
    }

    fn migrate(&self) -> StateResult<()> {
        let known = MIGRATIONS.len() as i32;
        let version = self.with("cannot bring the schema up to date", async |client| {
            let tx = client.transaction().await?;
            tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS synchost_schema_version (version INTEGER NOT NULL)").await?;
            let version: i32 =
                tx.query_one("SELECT coalesce(max(version), 0) FROM synchost_schema_version", &[]).await?.get(0);
            if version > known {
                return Ok(version);
            }
            for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.batch_execute(migration).await?;
                tx.execute("DELETE FROM synchost_schema_version", &[]).await?;
                tx.execute("INSERT INTO synchost_schema_version (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
            }
            tx.commit().await?;
            Ok(version)
        })?;
        if version > known {
            return Err(StateError {
                context: format!("state `{}` has schema version {version}", self.url),
                source: format!("this synchost knows versions up to {known}; use a newer synchost").into(),
            });
        }
        Ok(())
    }

    fn live_runs(&self) -> std::sync::MutexGuard<'_, HashSet<RunId>> {
        self.live_runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` in one transaction that first checks that `run` still
    /// holds its pipeline's lease (see [`StateStore`]), keeping the lease row
    /// locked against a new grant until the write commits; `write` gets the
    /// run's pipeline.
    fn fenced<T>(
        &self,
        run: RunId,
        context: String,
        write: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>, &PipelineId) -> Result<T, tokio_postgres::Error>,
    ) -> StateResult<T> {
        let outcome = self.with(context, async |client| {
            let tx = client.transaction().await?;
            // One round trip in the usual case: the run with its lease.
            let check = tx
                .prepare_cached(
                    "SELECT r.tenant, r.pipeline, r.token, l.token, l.holder FROM runs r
                     JOIN leases l ON l.tenant = r.tenant AND l.pipeline = r.pipeline
                     WHERE r.id = $1 FOR SHARE OF l",
                )
                .await?;
            let (pipeline, run_token, lease) = match tx.query_opt(&check, &[&run]).await? {
                Some(row) => (
                    PipelineId::new(row.get(0), row.get(1)),
                    row.get::<_, i64>(2),
                    Some((row.get::<_, i64>(3), row.get::<_, String>(4))),
                ),
                // No lease row: the run's pipeline, to name it in the refusal.
                None => {
                    let row = tx.query_one("SELECT tenant, pipeline, token FROM runs WHERE id = $1", &[&run]).await?;
                    (PipelineId::new(row.get(0), row.get(1)), row.get(2), None)
                }
            };
            if lease.as_ref().is_none_or(|(token, _)| *token != run_token) {
                let (token, holder) = lease.map_or((0, None), |(token, holder)| (token, Some(holder)));
                return Ok(Err(Fenced { run: Some(run), pipeline, run_token, holder, token }));
            }
            let value = write(&tx, &pipeline).await?;
            tx.commit().await?;
            Ok(Ok(value))
        })?;
        outcome.map_err(|fenced| self.refuse(fenced))
    }

    /// Counts a refused write (outside its rolled-back transaction) and
    /// makes its error. The count is best effort: the refusal stands.
    fn refuse(&self, fenced: Fenced) -> StateError {
        let _ = self.with("cannot count a fenced write", async |client| {
            client
                .execute(
                    "INSERT INTO fenced_writes (tenant, pipeline, run, run_token, lease_token, holder, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &fenced.pipeline.tenant,
                        &fenced.pipeline.pipeline,
                        &fenced.run,
                        &fenced.run_token,
                        &fenced.token,
                        &fenced.holder,
                        &now(),
                    ],
                )
                .await
        });
        StateError::fenced(fenced)
    }
}

/// Checks, in `tx`, that `lease` is still its pipeline's lease (locking it
/// against a new grant until `tx` ends); what refuses the write if not.
async fn check_lease(
    tx: &deadpool_postgres::Transaction<'_>,
    lease: &Lease,
    run: Option<RunId>,
) -> Result<Option<Fenced>, tokio_postgres::Error> {
    let current = tx
        .query_opt(
            "SELECT token, holder FROM leases WHERE tenant = $1 AND pipeline = $2 FOR SHARE",
            &[&lease.pipeline.tenant, &lease.pipeline.pipeline],
        )
        .await?
        .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)));
    if current.as_ref().is_some_and(|(token, holder)| *token == lease.token && *holder == lease.holder) {
        return Ok(None);
    }
    let (token, holder) = current.map_or((0, None), |(token, holder)| (token, Some(holder)));
    Ok(Some(Fenced { run, pipeline: lease.pipeline.clone(), run_token: lease.token, holder, token }))
}

fn lease_from_row(row: &tokio_postgres::Row) -> Lease {
    Lease {
        pipeline: PipelineId::new(row.get("tenant"), row.get("pipeline")),
        holder: row.get("holder"),
        token: row.get("token"),
        expires_at_ms: row.get("expires_at_ms"),
        version: row.get("version"),
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.pool.close();
        // Not a blocking shutdown: the store may be dropped inside an async
        // context (the daemon's), where waiting for tasks is not allowed.
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

/// Waits for `future` on this thread, whatever runtime it may be part of.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    futures_executor::block_on(future)
}

fn run_from_row(row: &tokio_postgres::Row) -> RunRecord {
    RunRecord {
        id: row.get("id"),
        pipeline: PipelineId { tenant: row.get("tenant"), pipeline: row.get("pipeline") },
        mode: parse_mode(row.get("mode")),
        status: RunStatus::parse(row.get("status")),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        stats: serde_json::from_value(row.get("stats")).unwrap_or_default(),
        error: row.get("error"),
        plugins: serde_json::from_value(row.get("plugins")).unwrap_or_default(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("state values serialise")
}

/// The last of each key's entries, in their order: one statement may touch
/// a row once only.
fn last_per_key<T>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut seen = HashSet::new();
    let mut last: Vec<&T> = items.iter().rev().filter(|item| seen.insert(key(item).to_string())).collect();
    last.reverse();
    last
}

impl StateStore for PostgresStore {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn acquire_lease(
        &self,
        pipeline: &PipelineId,
        holder: &str,
        ttl: Duration,
        version: Option<&str>,
    ) -> StateResult<LeaseAnswer> {
        self.with(format!("cannot take the lease of {pipeline}"), async |client| {
            let tx = client.transaction().await?;
            let names: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&pipeline.tenant, &pipeline.pipeline];
            tx.execute(
                "INSERT INTO leases (tenant, pipeline, holder, token, expires_at_ms) VALUES ($1, $2, '', 0, 0)
                 ON CONFLICT DO NOTHING",
                &names,
            )
            .await?;
            let row = tx
                .query_one(
                    &format!("SELECT *, {NOW_MS} AS now_ms FROM leases WHERE tenant = $1 AND pipeline = $2 FOR UPDATE"),
                    &names,
                )
                .await?;
            let (current, now): (Lease, i64) = (lease_from_row(&row), row.get("now_ms"));
            let gone = holder_gone(row.get("machine"), row.get::<_, i32>("pid") as u32);
            let token = match lease_step(&current, holder, now, gone) {
                LeaseStep::Refuse => return Ok(LeaseAnswer::HeldBy(current)),
                LeaseStep::Renew => current.token,
                LeaseStep::Grant(token) => {
                    tx.execute(
                        "INSERT INTO lease_grants (tenant, pipeline, token, holder, granted_at_ms, previous_holder,
                                                   previous_expires_at_ms, why)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &pipeline.tenant,
                            &pipeline.pipeline,
                            &token,
                            &holder,
                            &now,
                            &current.holder,
                            &current.expires_at_ms,
                            &grant_reason(&current, now),
                        ],
                    )
                    .await?;
                    token
                }
            };
            let lease = Lease {
                pipeline: pipeline.clone(),
                holder: holder.to_string(),
                token,
                expires_at_ms: now + ttl.as_millis() as i64,
                version: version.map(str::to_string),
            };
            tx.execute(
                "UPDATE leases SET holder = $3, token = $4, expires_at_ms = $5, version = $6, machine = $7, pid = $8
                 WHERE tenant = $1 AND pipeline = $2",
                &[
                    &pipeline.tenant,
                    &pipeline.pipeline,
                    &lease.holder,
                    &lease.token,
                    &lease.expires_at_ms,
                    &lease.version,
                    &self.machine,
                    &(std::process::id() as i32),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(LeaseAnswer::Granted(lease))
        })
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StateResult<Option<Lease>> {
        self.with(format!("cannot renew the lease of {}", lease.pipeline), async |client| {
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE leases SET expires_at_ms = {NOW_MS} + $5
                         WHERE tenant = $1 AND pipeline = $2 AND holder = $3 AND token = $4 RETURNING expires_at_ms"
                    ),
                    &[
                        &lease.pipeline.tenant,
                        &lease.pipeline.pipeline,
                        &lease.holder,
                        &lease.token,
                        &(ttl.as_millis() as i64),
                    ],
                )
                .await?;
            Ok(row.map(|row| Lease { expires_at_ms: row.get(0), ..lease.clone() }))
        })
    }

    fn release_lease(&self, lease: &Lease) -> StateResult<()> {
        self.with(format!("cannot release the lease of {}", lease.pipeline), async |client| {
            client
                .execute(
                    &format!(
                        "UPDATE leases SET expires_at_ms = least(expires_at_ms, {NOW_MS})
                         WHERE tenant = $1 AND pipeline = $2 AND holder = $3 AND token = $4"
                    ),
                    &[&lease.pipeline.tenant, &lease.pipeline.pipeline, &lease.holder, &lease.token],
                )
                .await
                .map(drop)
        })
    }

    fn leases(&self) -> StateResult<Vec<Lease>> {
        self.with("cannot list leases", async |client| {
            let rows = client.query("SELECT * FROM leases WHERE token > 0 ORDER BY tenant, pipeline", &[]).await?;
            Ok(rows.iter().map(lease_from_row).collect())
        })
    }

    fn lease(&self, pipeline: &PipelineId) -> StateResult<Option<Lease>> {
        self.with(format!("cannot read the lease of {pipeline}"), async |client| {
            let row = client
                .query_opt(
                    "SELECT * FROM leases WHERE tenant = $1 AND pipeline = $2 AND token > 0",
                    &[&pipeline.tenant, &pipeline.pipeline],
                )
                .await?;
            Ok(row.as_ref().map(lease_from_row))
        })
    }

    fn heartbeat(
        &self,
        id: &str,
        ttl: Duration,
        pipelines: u64,
        versions: &BTreeMap<String, String>,
    ) -> StateResult<()> {
        self.with(format!("cannot record the heartbeat of host `{id}`"), async |client| {
            client
                .execute(
                    &format!(
                        "INSERT INTO hosts (id, started_at, expires_at_ms, pipelines, versions)
                         VALUES ($1, $2, {NOW_MS} + $3, $4, $5)
                         ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms,
                             pipelines = excluded.pipelines, versions = excluded.versions"
                    ),
                    &[&id, &now(), &(ttl.as_millis() as i64), &(pipelines as i64), &json(versions)],
                )
                .await
                .map(drop)
        })
    }

    fn hosts(&self) -> StateResult<Vec<HostInfo>> {
        self.with("cannot list hosts", async |client| {
            let rows = client
                .query(
                    &format!(
                        "SELECT id, started_at, expires_at_ms, pipelines, versions FROM hosts
                         WHERE expires_at_ms > {NOW_MS} ORDER BY id"
                    ),
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| HostInfo {
                    id: row.get(0),
                    started_at: row.get(1),
                    expires_at_ms: row.get(2),
                    pipelines: row.get::<_, i64>(3) as u64,
                    versions: serde_json::from_value(row.get(4)).unwrap_or_default(),
                })
                .collect())
        })
    }

    fn leave(&self, id: &str) -> StateResult<()> {
        self.with(format!("cannot remove host `{id}`"), async |client| {
            client.execute("DELETE FROM hosts WHERE id = $1", &[&id]).await.map(drop)
        })
    }

    fn fenced_writes(&self) -> StateResult<BTreeMap<PipelineId, u64>> {
        self.with("cannot count fenced writes", async |client| {
            let rows = client
                .query("SELECT tenant, pipeline, count(*) FROM fenced_writes GROUP BY tenant, pipeline", &[])
                .await?;
            Ok(rows.iter().map(|row| (PipelineId::new(row.get(0), row.get(1)), row.get::<_, i64>(2) as u64)).collect())
        })
    }

    fn start_run(&self, lease: &Lease, mode: Mode, plugins: &BTreeMap<String, String>) -> StateResult<RunId> {
        let pipeline = &lease.pipeline;
        let mut live_runs = self.live_runs();
        let live = live_runs.clone();
        let started = self.with(format!("cannot record a run of {pipeline}"), async |client| {
            let tx = client.transaction().await?;
            if let Some(fenced) = check_lease(&tx, lease, None).await? {
                return Ok(Err(fenced));
            }
            let unfinished = tx
                .query(
                    "SELECT id, host, pid, token FROM runs WHERE tenant = $1 AND pipeline = $2 AND status = 'running'",
                    &[&pipeline.tenant, &pipeline.pipeline],
                )
                .await?;
            for row in unfinished {
                let (run, host, pid, token): (RunId, String, i32, i64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let pid = (host == self.machine).then_some(pid as u32);
                if let Some(why) = abandoned_because(run, pid, Some(token), lease.token, &live) {
                    tx.execute(
                        "UPDATE runs SET status = 'abandoned', finished_at = $2, error = $3 WHERE id = $1",
                        &[&run, &now(), &why],
                    )
                    .await?;
                }
            }
            let row = tx
                .query_one(
                    "INSERT INTO runs (tenant, pipeline, mode, status, started_at, stats, plugins, host, pid, token)
                     VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9) RETURNING id",
                    &[
                        &pipeline.tenant,
                        &pipeline.pipeline,
                        &mode.to_string(),
                        &now(),
                        &json(&RunStats::default()),
                        &json(plugins),
                        &self.machine,
                        &(std::process::id() as i32),
                        &lease.token,
                    ],
                )
                .await?;
            tx.commit().await?;
            Ok(Ok(row.get::<_, RunId>(0)))
        })?;
        let run = started.map_err(|fenced| self.refuse(fenced))?;
        live_runs.insert(run);
        Ok(run)
    }

    fn finish_run(&self, run: RunId, status: RunStatus, stats: &RunStats, error: Option<&str>) -> StateResult<()> {
        self.live_runs().remove(&run);
        self.fenced(run, format!("cannot record the end of run {run}"), async |tx, _| {
            tx.execute(
                "UPDATE runs SET status = $2, finished_at = $3, stats = $4, error = $5 WHERE id = $1",
                &[&run, &status.as_str(), &now(), &json(stats), &error],
            )
            .await
            .map(drop)
        })
    }

    fn supersede_run(&self, by: RunId, old: RunId, why: &str) -> StateResult<()> {
        self.fenced(by, format!("cannot mark run {old} superseded"), async |tx, pipeline| {
            tx.execute(
                "UPDATE runs SET status = 'superseded', finished_at = $4, error = $5
                 WHERE id = $1 AND tenant = $2 AND pipeline = $3",
                &[&old, &pipeline.tenant, &pipeline.pipeline, &now(), &why],
            )
            .await
            .map(drop)
        })
    }

    fn forget_run(&self, run: RunId) -> StateResult<()> {
        self.live_runs().remove(&run);
        self.fenced(run, format!("cannot forget run {run}"), async |tx, _| {
            tx.execute("DELETE FROM run_archives WHERE run = $1", &[&run]).await?;
            tx.execute("DELETE FROM runs WHERE id = $1", &[&run]).await.map(drop)
        })
    }

    fn append_archive(&self, run: RunId, name: &str, data: &[u8]) -> StateResult<()> {
        self.fenced(run, format!("cannot archive `{name}` of run {run}"), async |tx, _| {
            tx.execute(
                "INSERT INTO run_archives (run, name, data) VALUES ($1, $2, $3)
                 ON CONFLICT (run, name) DO UPDATE SET data = run_archives.data || excluded.data",
                &[&run, &name, &data],
            )
            .await
            .map(drop)
        })
    }

    fn archive(&self, run: RunId, name: &str) -> StateResult<Option<Vec<u8>>> {
        self.with(format!("cannot read `{name}` of run {run}'s archive"), async |client| {
            let row =
                client.query_opt("SELECT data FROM run_archives WHERE run = $1 AND name = $2", &[&run, &name]).await?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn archive_files(&self, run: RunId) -> StateResult<Vec<ArchivedFile>> {
        self.with(format!("cannot list run {run}'s archive"), async |client| {
            let rows = client
                .query("SELECT name, octet_length(data) FROM run_archives WHERE run = $1 ORDER BY name", &[&run])
                .await?;
            Ok(rows.iter().map(|row| ArchivedFile { name: row.get(0), bytes: row.get::<_, i32>(1) as u64 }).collect())
        })
    }

    fn request_approval(&self, run: RunId, pipeline: &PipelineId, by: &str) -> StateResult<()> {
        self.with(format!("cannot ask for run {run}'s approval"), async |client| {
            client
                .execute(
                    "INSERT INTO approvals (run, tenant, pipeline, requested_by, requested_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (run) DO UPDATE SET requested_by = excluded.requested_by,
                         requested_at = excluded.requested_at, claimed_by = NULL, answer = NULL",
                    &[&run, &pipeline.tenant, &pipeline.pipeline, &by, &now()],
                )
                .await
                .map(drop)
        })
    }

    fn approval_requests(&self) -> StateResult<Vec<ApprovalRequest>> {
        self.with("cannot read the approval requests", async |client| {
            let rows = client.query(&format!("{APPROVAL_COLUMNS} WHERE answer IS NULL ORDER BY run"), &[]).await?;
            Ok(rows.iter().map(approval_request).collect())
        })
    }

    fn claim_approval(&self, run: RunId, host: &str) -> StateResult<bool> {
        self.with(format!("cannot take run {run}'s approval"), async |client| {
            let claimed = client
                .execute(
                    &format!(
                        "UPDATE approvals SET claimed_by = $2 WHERE run = $1 AND answer IS NULL AND (claimed_by IS NULL
                         OR claimed_by NOT IN (SELECT id FROM hosts WHERE expires_at_ms > {NOW_MS}))"
                    ),
                    &[&run, &host],
                )
                .await?;
            Ok(claimed == 1)
        })
    }

    fn answer_approval(&self, run: RunId, answer: &str) -> StateResult<()> {
        self.with(format!("cannot answer run {run}'s approval"), async |client| {
            client.execute("UPDATE approvals SET answer = $2 WHERE run = $1", &[&run, &answer]).await.map(drop)
        })
    }

    fn approval(&self, run: RunId) -> StateResult<Option<ApprovalRequest>> {
        self.with(format!("cannot read run {run}'s approval"), async |client| {
            let row = client.query_opt(&format!("{APPROVAL_COLUMNS} WHERE run = $1"), &[&run]).await?;
            Ok(row.as_ref().map(approval_request))
        })
    }

    fn drop_archives_except(&self, pipeline: &PipelineId, keep: &[RunId]) -> StateResult<()> {
        self.with(format!("cannot remove old run archives of {pipeline}"), async |client| {
            client
                .execute(
                    "DELETE FROM run_archives a USING runs r
                     WHERE a.run = r.id AND r.tenant = $1 AND r.pipeline = $2 AND NOT (a.run = ANY($3))",
                    &[&pipeline.tenant, &pipeline.pipeline, &keep],
                )
                .await
                .map(drop)
        })
    }

    fn cursor(&self, pipeline: &PipelineId) -> StateResult<Option<String>> {
        self.with(format!("cannot read the cursor of {pipeline}"), async |client| {
            let row = client
                .query_opt(
                    "SELECT cursor FROM cursors WHERE tenant = $1 AND pipeline = $2",
                    &[&pipeline.tenant, &pipeline.pipeline],
                )
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn runs(&self, pipeline: Option<&PipelineId>, limit: usize) -> StateResult<Vec<RunRecord>> {
        let (tenant, name) = pipeline.map_or((None, None), |p| (Some(&p.tenant), Some(&p.pipeline)));
        self.with("cannot list runs", async |client| {
            let rows = client
                .query(
                    "SELECT * FROM runs WHERE ($1::text IS NULL OR (tenant = $1 AND pipeline = $2::text))
                     ORDER BY id DESC LIMIT $3",
                    &[&tenant, &name, &(limit as i64)],
                )
                .await?;
            Ok(rows.iter().map(run_from_row).collect())
        })
    }

    fn find_runs(&self, filter: &RunFilter) -> StateResult<Vec<RunRecord>> {
        let status = filter.status.map(RunStatus::as_str);
        let mode = filter.mode.map(|mode| mode.to_string());
        self.with("cannot list runs", async |client| {
            let rows = client
                .query(
                    "SELECT * FROM runs WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR pipeline = $2)
                     AND ($3::text IS NULL OR status = $3) AND ($4::bigint IS NULL OR id < $4)
                     AND ($6::text IS NULL OR mode = $6)
                     ORDER BY id DESC LIMIT $5",
                    &[&filter.tenant, &filter.pipeline, &status, &filter.before, &(filter.limit as i64), &mode],
                )
                .await?;
            Ok(rows.iter().map(run_from_row).collect())
        })
    }

    fn run(&self, id: RunId) -> StateResult<Option<RunRecord>> {
        self.with(format!("cannot read run {id}"), async |client| {
            Ok(client.query_opt("SELECT * FROM runs WHERE id = $1", &[&id]).await?.as_ref().map(run_from_row))
        })
    }

    fn pauses(&self) -> StateResult<BTreeMap<PipelineId, Pause>> {
        self.with("cannot list paused pipelines", async |client| {
            let rows = client.query("SELECT tenant, pipeline, paused_at, reason FROM paused_pipelines", &[]).await?;
            Ok(rows
                .iter()
                .map(|row| (PipelineId::new(row.get(0), row.get(1)), Pause { at: row.get(2), reason: row.get(3) }))
                .collect())
        })
    }

    fn set_pause(&self, pipeline: &PipelineId, pause: Option<&Pause>) -> StateResult<()> {
        self.with(format!("cannot record the pause of {pipeline}"), async |client| {
            match pause {
                Some(pause) => {
                    client
                        .execute(
                            "INSERT INTO paused_pipelines (tenant, pipeline, paused_at, reason) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (tenant, pipeline) DO UPDATE SET paused_at = excluded.paused_at,
                                 reason = excluded.reason",
                            &[&pipeline.tenant, &pipeline.pipeline, &pause.at, &pause.reason],
                        )
                        .await
                }
                None => {
                    client
                        .execute(
                            "DELETE FROM paused_pipelines WHERE tenant = $1 AND pipeline = $2",
                            &[&pipeline.tenant, &pipeline.pipeline],
                        )
                        .await
                }
            }
            .map(drop)
        })
    }

    fn dead_letters(&self, pipeline: &PipelineId) -> StateResult<Vec<DeadLetter>> {
        self.with("cannot list dead letters", async |client| {
            let rows = client
                .query(
                    "SELECT id, run, position, key, operation, reason, created_at, superseded_by FROM dead_letters
                     WHERE tenant = $1 AND pipeline = $2 ORDER BY id",
                    &[&pipeline.tenant, &pipeline.pipeline],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| DeadLetter {
                    id: row.get(0),
                    run: row.get(1),
                    position: row.get(2),
                    key: row.get(3),
                    operation: operation_from_text(row.get(4)),
                    reason: row.get(5),
                    created_at: row.get(6),
                    superseded_by: row.get(7),
                })
                .collect())
        })
    }

    // --- diff sync state ---

    fn restart_run(&self, run: RunId, lease: &Lease) -> StateResult<()> {
        let mut live_runs = self.live_runs();
        let restarted = self.with(format!("cannot restart run {run}"), async |client| {
            let tx = client.transaction().await?;
            if let Some(fenced) = check_lease(&tx, lease, Some(run)).await? {
                return Ok(Err(fenced));
            }
            tx.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, host = $2, pid = $3, token = $4 WHERE id = $1",
                &[&run, &self.machine, &(std::process::id() as i32), &lease.token],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })?;
        restarted.map_err(|fenced| self.refuse(fenced))?;
        live_runs.insert(run);
        Ok(())
    }

    fn managed_keys(&self, pipeline: &PipelineId) -> StateResult<HashSet<String>> {
        self.with(format!("cannot read the managed keys of {pipeline}"), async |client| {
            let rows = client
                .query(
                    "SELECT key FROM managed_keys WHERE tenant = $1 AND pipeline = $2",
                    &[&pipeline.tenant, &pipeline.pipeline],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn update_managed_keys(&self, run: RunId, created: &[String], deleted: &[String]) -> StateResult<()> {
        self.fenced(run, format!("cannot record the managed keys of run {run}"), async |tx, pipeline| {
            tx.execute(
                "INSERT INTO managed_keys (tenant, pipeline, key) SELECT $1, $2, unnest($3::text[])
                 ON CONFLICT DO NOTHING",
                &[&pipeline.tenant, &pipeline.pipeline, &created],
            )
            .await?;
            tx.execute(
                "DELETE FROM managed_keys WHERE tenant = $1 AND pipeline = $2 AND key = ANY($3)",
                &[&pipeline.tenant, &pipeline.pipeline, &deleted],
            )
            .await
            .map(drop)
        })
    }

    fn permitted_load(&self, pipeline: &PipelineId) -> StateResult<Option<PermittedLoad>> {
        self.with(format!("cannot read the permitted load of {pipeline}"), async |client| {
            let row = client
                .query_opt(
                    "SELECT run, why, writes, deletes FROM permitted_loads WHERE tenant = $1 AND pipeline = $2",
                    &[&pipeline.tenant, &pipeline.pipeline],
                )
                .await?;
            Ok(row.map(|row| PermittedLoad {
                run: row.get(0),
                why: row.get(1),
                writes: row.get::<_, i64>(2) as u64,
                deletes: row.get::<_, i64>(3) as u64,
            }))
        })
    }

    fn set_permitted_load(&self, run: RunId, load: Option<&PermittedLoad>) -> StateResult<()> {
        self.fenced(run, format!("cannot record the permitted load of run {run}"), async |tx, pipeline| {
            match load {
                Some(load) => {
                    tx.execute(
                        "INSERT INTO permitted_loads (tenant, pipeline, run, why, writes, deletes)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (tenant, pipeline) DO UPDATE SET run = excluded.run, why = excluded.why,
                             writes = excluded.writes, deletes = excluded.deletes",
                        &[
                            &pipeline.tenant,
                            &pipeline.pipeline,
                            &load.run,
                            &load.why,
                            &(load.writes as i64),
                            &(load.deletes as i64),
                        ],
                    )
                    .await
                }
                None => {
                    tx.execute(
                        "DELETE FROM permitted_loads WHERE tenant = $1 AND pipeline = $2",
                        &[&pipeline.tenant, &pipeline.pipeline],
                    )
                    .await
                }
            }
            .map(drop)
        })
    }

    // --- event sync state ---

    fn retry_queue(&self, pipeline: &PipelineId) -> StateResult<Vec<RetryItem>> {
        self.with(format!("cannot read the retry queue of {pipeline}"), async |client| {
            // Read before every event batch: prepared once per connection.
            let query = client
                .prepare_cached(
                    "SELECT id, key, position, operation, attempts, next_attempt_at, last_error FROM retry_queue
                     WHERE tenant = $1 AND pipeline = $2 ORDER BY id",
                )
                .await?;
            let rows = client.query(&query, &[&pipeline.tenant, &pipeline.pipeline]).await?;
            Ok(rows
                .iter()
                .map(|row| RetryItem {
                    id: row.get(0),
                    key: row.get(1),
                    position: row.get(2),
                    operation: operation_from_text(row.get(3)),
                    attempts: row.get::<_, i32>(4) as u32,
                    next_attempt_at: row.get(5),
                    last_error: row.get(6),
                })
                .collect())
        })
    }

    fn commit_event_batch(&self, commit: &EventCommit<'_>) -> StateResult<()> {
        let pipeline = commit.pipeline;
        let (tenant, name) = (&pipeline.tenant, &pipeline.pipeline);
        // Whole columns per statement: a batch costs a fixed number of round
        // trips, however many items it queues or dead-letters.
        let queued = last_per_key(commit.queued, |item| &item.key);
        let superseded = {
            // The first position per key, as one UPDATE per pair would leave it.
            let mut seen = HashSet::new();
            commit.superseded_letters.iter().filter(|(key, _)| seen.insert(key.as_str())).collect::<Vec<_>>()
        };
        self.fenced(commit.run, format!("cannot commit a batch of {pipeline}"), async |tx, _| {
            let at = now();
            // Prepared once per connection, and sent without waiting for each
            // answer (tokio-postgres pipelines the queries of one client):
            // the commit costs three round trips besides the fence check,
            // not two per statement.
            let statements = futures_util::future::try_join_all(
                [UPSERT_CURSOR, LATE_QUEUE_ITEMS, UNQUEUE, INSERT_BATCH, UPDATE_RUN_STATS]
                    .map(|sql| tx.prepare_cached(sql)),
            )
            .await?;
            let [upsert_cursor, late_items, unqueue, insert_batch, update_run] = &statements[..] else {
                unreachable!("five statements")
            };
            // Items queued by someone else since the batch read the queue, for
            // a key the batch applied: older than what is now in the destination.
            let cursor_params: [&(dyn ToSql + Sync); 4] = [tenant, name, &commit.cursor, &at];
            let late_params: [&(dyn ToSql + Sync); 3] = [tenant, name, &commit.queue_seen_up_to];
            let (_, late) =
                tokio::try_join!(tx.execute(upsert_cursor, &cursor_params), tx.query(late_items, &late_params))?;
            let mut unqueued: Vec<&str> =
                late.iter().map(|row| row.get::<_, &str>(0)).filter(|key| (commit.applied_keys)(key)).collect();
            unqueued.extend(commit.unqueued.iter().map(String::as_str));

            let queued_columns = (!queued.is_empty()).then(|| QueuedColumns::of(&queued));
            let superseded_columns = (!superseded.is_empty()).then(|| {
                let keys: Vec<&str> = superseded.iter().map(|(key, _)| key.as_str()).collect();
                let positions: Vec<&str> = superseded.iter().map(|(_, position)| position.as_str()).collect();
                (keys, positions)
            });
            let letters = commit.dead_letters;
            let letter_columns = (!letters.is_empty()).then(|| {
                let positions: Vec<&str> = letters.iter().map(|l| l.position.as_str()).collect();
                let keys: Vec<&str> = letters.iter().map(|l| l.key.as_str()).collect();
                let operations: Vec<String> = letters.iter().map(|l| l.operation.to_string()).collect();
                let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
                (positions, keys, operations, reasons)
            });
            let (batch_stats, run_stats) = (json(commit.batch), json(commit.stats));
            let seq = commit.batch.seq as i64;
            let optional = async {
                if let Some(q) = &queued_columns {
                    tx.execute(
                        "INSERT INTO retry_queue (tenant, pipeline, key, position, operation, attempts, next_attempt_at,
                                                  last_error, created_at, updated_at)
                         SELECT $1, $2, key, position, operation, attempts, due, error, $9, $9
                         FROM unnest($3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::text[])
                             AS item (key, position, operation, attempts, due, error)
                         ON CONFLICT (tenant, pipeline, key) DO UPDATE SET position = excluded.position,
                             operation = excluded.operation, attempts = excluded.attempts,
                             next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
                             updated_at = excluded.updated_at",
                        &[tenant, name, &q.keys, &q.positions, &q.operations, &q.attempts, &q.due, &q.errors, &at],
                    )
                    .await?;
                }
                if let Some((keys, positions)) = &superseded_columns {
                    tx.execute(
                        "UPDATE dead_letters SET superseded_by = later.position
                         FROM unnest($3::text[], $4::text[]) AS later (key, position)
                         WHERE tenant = $1 AND pipeline = $2 AND dead_letters.key = later.key
                           AND superseded_by IS NULL",
                        &[tenant, name, keys, positions],
                    )
                    .await?;
                }
                if let Some((positions, keys, operations, reasons)) = &letter_columns {
                    tx.execute(
                        "INSERT INTO dead_letters (tenant, pipeline, run, position, key, operation, reason, created_at)
                         SELECT $1, $2, $3, position, key, operation, reason, $8
                         FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY
                             AS letter (position, key, operation, reason, n)
                         ORDER BY n",
                        &[tenant, name, &commit.run, positions, keys, operations, reasons, &at],
                    )
                    .await?;
                }
                if let Some((seq, ms)) = commit.previous_commit_ms {
                    set_commit_time(tx, commit.run, seq, ms).await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            };
            // The queue's items go before the new ones are queued: a key
            // both unqueued and queued again ends queued, as one statement
            // after the other would leave it.
            tx.execute(unqueue, &[tenant, name, &unqueued]).await?;
            let batch_params: [&(dyn ToSql + Sync); 4] = [&commit.run, &seq, &batch_stats, &at];
            let run_params: [&(dyn ToSql + Sync); 2] = [&commit.run, &run_stats];
            tokio::try_join!(optional, tx.execute(insert_batch, &batch_params), tx.execute(update_run, &run_params))?;
            Ok(())
        })
    }

    fn set_batch_commit_time(&self, run: RunId, seq: u64, commit_ms: f64) -> StateResult<()> {
        self.fenced(run, format!("cannot record the commit time of batch {seq} of run {run}"), async |tx, _| {
            set_commit_time(tx, run, seq, commit_ms).await
        })
    }

    fn batches(&self, run: RunId) -> StateResult<Vec<BatchStats>> {
        self.with(format!("cannot read the batches of run {run}"), async |client| {
            let rows = client.query("SELECT stats FROM event_batches WHERE run = $1 ORDER BY seq", &[&run]).await?;
            Ok(rows.iter().map(|row| serde_json::from_value(row.get(0)).unwrap_or_default()).collect())
        })
    }

    fn requeue_dead_letters(&self, pipeline: &PipelineId, ids: Option<&[i64]>) -> StateResult<RequeueOutcome> {
        let letters = self.dead_letters(pipeline)?;
        self.with(format!("cannot requeue the dead letters of {pipeline}"), async |client| {
            let tx = client.transaction().await?;
            let mut outcome = RequeueOutcome::default();
            let at = now();
            let due = chrono::Utc::now().timestamp_millis();
            for letter in letters.iter().filter(|l| ids.is_none_or(|ids| ids.contains(&l.id))) {
                if let Some(position) = &letter.superseded_by {
                    outcome.refused.push((letter.id, super::superseded_refusal(&letter.key, position)));
                    continue;
                }
                let inserted = tx
                    .execute(
                        "INSERT INTO retry_queue (tenant, pipeline, key, position, operation, attempts,
                                                  next_attempt_at, last_error, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $8)
                         ON CONFLICT (tenant, pipeline, key) DO NOTHING",
                        &[
                            &pipeline.tenant,
                            &pipeline.pipeline,
                            &letter.key,
                            &letter.position,
                            &letter.operation.to_string(),
                            &due,
                            &format!("requeued from dead letter {}: {}", letter.id, letter.reason),
                            &at,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    outcome.refused.push((letter.id, super::already_queued_refusal(&letter.key)));
                    continue;
                }
                tx.execute("DELETE FROM dead_letters WHERE id = $1", &[&letter.id]).await?;
                outcome.requeued.push(letter.id);
            }
            tx.commit().await?;
            Ok(outcome)
        })
    }

    fn drop_dead_letters(&self, pipeline: &PipelineId, ids: Option<&[i64]>) -> StateResult<usize> {
        self.with(format!("cannot drop the dead letters of {pipeline}"), async |client| {
            let dropped = match ids {
                None => {
                    client
                        .execute(
                            "DELETE FROM dead_letters WHERE tenant = $1 AND pipeline = $2",
                            &[&pipeline.tenant, &pipeline.pipeline],
                        )
                        .await?
                }
                Some(ids) => {
                    client
                        .execute(
                            "DELETE FROM dead_letters WHERE tenant = $1 AND pipeline = $2 AND id = ANY($3)",
                            &[&pipeline.tenant, &pipeline.pipeline, &ids],
                        )
                        .await?
                }
            };
            Ok(dropped as usize)
        })
    }
}

/// Fills in a batch's commit time inside its stats (known only after its commit).
async fn set_commit_time(
    client: &impl GenericClient,
    run: RunId,
    seq: u64,
    commit_ms: f64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE event_batches SET stats = jsonb_set(stats, '{commit_ms}', to_jsonb($3::float8))
             WHERE run = $1 AND seq = $2",
            &[&run, &(seq as i64), &commit_ms],
        )
        .await
        .map(drop)
}
