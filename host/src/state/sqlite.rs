//! The embedded state store: one SQLite file, `state.db`, in the state directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    ApprovalRequest, ArchivedFile, BatchStats, DeadLetter, EventCommit, Fenced, HostInfo, Lease, LeaseAnswer,
    LeaseStep, Pause, PermittedLoad, PipelineId, RequeueOutcome, RetryItem, RunFilter, RunId, RunRecord, RunStats,
    RunStatus, StateError, StateResult, StateStore, abandoned_because, already_queued_refusal, grant_reason,
    holder_gone, lease_step, machine_name, now, operation_from_text, parse_mode, superseded_refusal,
};
use crate::config::Mode;

/// Each entry moves the schema one version on; `PRAGMA user_version` records
/// how many have been applied.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        tenant      TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        mode        TEXT NOT NULL,
        status      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        stats       TEXT NOT NULL,
        error       TEXT,
        plugins     TEXT NOT NULL
    );
    CREATE INDEX runs_by_pipeline ON runs (tenant, pipeline, id);
    CREATE TABLE cursors (
        tenant     TEXT NOT NULL,
        pipeline   TEXT NOT NULL,
        cursor     TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant, pipeline)
    );
    CREATE TABLE dead_letters (
        id         INTEGER PRIMARY KEY,
        tenant     TEXT NOT NULL,
        pipeline   TEXT NOT NULL,
        run        INTEGER NOT NULL,
        position   TEXT NOT NULL,
        key        TEXT NOT NULL,
        operation  TEXT NOT NULL,
        reason     TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX dead_letters_by_pipeline ON dead_letters (tenant, pipeline, id);
"#,
    // Diff syncs: the records each pipeline created, for `deletes = "managed"`.
    r#"
    CREATE TABLE managed_keys (
        tenant   TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        key      TEXT NOT NULL,
        PRIMARY KEY (tenant, pipeline, key)
    ) WITHOUT ROWID;
"#,
    // Event syncs: the retry queue (one item per key at most), per-batch stats,
    // and dead letters that a later event for their key made obsolete.
    r#"
    ALTER TABLE dead_letters ADD COLUMN superseded_by TEXT;
    CREATE TABLE retry_queue (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant          TEXT NOT NULL,
        pipeline        TEXT NOT NULL,
        key             TEXT NOT NULL,
        position        TEXT NOT NULL,
        operation       TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        last_error      TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        UNIQUE (tenant, pipeline, key)
    );
    CREATE TABLE event_batches (
        run          INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        stats        TEXT NOT NULL,
        committed_at TEXT NOT NULL,
        PRIMARY KEY (run, seq)
    ) WITHOUT ROWID;
"#,
    // Which process runs a run, so that a run whose process died can be told
    // from one still going.
    r#"
    ALTER TABLE runs ADD COLUMN pid INTEGER;
"#,
    // Diff loads let past the change guard whose apply has not finished: an
    // interrupted one resumes under the same permission.
    r#"
    CREATE TABLE permitted_loads (
        tenant   TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        run      INTEGER NOT NULL,
        why      TEXT NOT NULL,
        writes   INTEGER NOT NULL,
        deletes  INTEGER NOT NULL,
        PRIMARY KEY (tenant, pipeline)
    ) WITHOUT ROWID;
"#,
    // Pipelines an operator paused: the daemon runs them neither on schedule
    // nor on request until they are resumed, across restarts.
    r#"
    CREATE TABLE paused_pipelines (
        tenant    TEXT NOT NULL,
        pipeline  TEXT NOT NULL,
        paused_at TEXT NOT NULL,
        reason    TEXT,
        PRIMARY KEY (tenant, pipeline)
    ) WITHOUT ROWID;
"#,
    // Leases (one holder per pipeline at a time, fenced by a token each run
    // records), the audit of their grants, refused writes, and live hosts.
    r#"
    ALTER TABLE runs ADD COLUMN token INTEGER;
    CREATE TABLE leases (
        tenant        TEXT NOT NULL,
        pipeline      TEXT NOT NULL,
        holder        TEXT NOT NULL,
        token         INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        version       TEXT,
        -- the holder's process, so that a lease of a process that is gone
        -- can be taken at once
        machine       TEXT NOT NULL DEFAULT '',
        pid           INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, pipeline)
    ) WITHOUT ROWID;
    CREATE TABLE lease_grants (
        tenant        TEXT NOT NULL,
        pipeline      TEXT NOT NULL,
        token         INTEGER NOT NULL,
        holder        TEXT NOT NULL,
        granted_at_ms INTEGER NOT NULL,
        -- the lease it replaced, as the grant found it: it had ended, or its
        -- holder's process on this machine was gone (`why`)
        why                    TEXT NOT NULL,
        previous_holder        TEXT NOT NULL,
        previous_expires_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, pipeline, token)
    ) WITHOUT ROWID;
    CREATE TABLE fenced_writes (
        id          INTEGER PRIMARY KEY,
        tenant      TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        run         INTEGER,
        run_token   INTEGER NOT NULL,
        lease_token INTEGER NOT NULL,
        holder      TEXT,
        at          TEXT NOT NULL
    );
    CREATE TABLE hosts (
        id            TEXT PRIMARY KEY,
        started_at    TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        pipelines     INTEGER NOT NULL,
        versions      TEXT NOT NULL
    ) WITHOUT ROWID;
"#,
    // Run archives kept with the rest of the state rather than beside it.
    r#"
    CREATE TABLE run_archives (
        run  INTEGER NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run, name)
    ) WITHOUT ROWID;
    CREATE TABLE approvals (
        run          INTEGER PRIMARY KEY,
        tenant       TEXT NOT NULL,
        pipeline     TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        claimed_by   TEXT,
        answer       TEXT
    );
"#,
    // Which state this is, for the scope of the fences handed to
    // destinations: a new state (its tokens starting again from 1) is not
    // taken for a stale holder of the old one's leases.
    r#"
    CREATE TABLE state_identity (id TEXT NOT NULL);
    INSERT INTO state_identity (id) VALUES (lower(hex(randomblob(16))));
"#,
];

const APPROVAL_COLUMNS: &str =
    "SELECT run, tenant, pipeline, requested_by, requested_at, claimed_by, answer FROM approvals";

fn approval_request(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRequest> {
    Ok(ApprovalRequest {
        run: row.get(0)?,
        pipeline: PipelineId::new(&row.get::<_, String>(1)?, &row.get::<_, String>(2)?),
        requested_by: row.get(3)?,
        requested_at: row.get(4)?,
        claimed_by: row.get(5)?,
        answer: row.get(6)?,
    })
}

pub struct SqliteStore {
    connection: Mutex<Connection>,
    /// See [`StateStore::identity`].
    identity: String,
    /// The runs this process started and has not finished: a run of this
    /// process that is `running` in the store but not here is one whose end
    /// could not be recorded (the disk was full, say), and is abandoned.
    live_runs: Mutex<std::collections::HashSet<RunId>>,
}

fn failed(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StateError {
    let context = context.into();
    move |e| StateError { context, source: Box::new(e) }
}

/// How long a connection waits for another one's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` again while SQLite answers "busy" without having waited (it does
/// not call its busy handler where waiting could deadlock, as when two
/// connections switch a new file to WAL at once), for up to [`BUSY_TIMEOUT`].
fn retry_while_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `state.db` in `state_dir`.
    pub fn open(state_dir: &Path) -> StateResult<SqliteStore> {
        std::fs::create_dir_all(state_dir).map_err(|e| StateError {
            context: format!("cannot create the state directory `{}`", state_dir.display()),
            source: Box::new(e),
        })?;
        let path = state_dir.join("state.db");
        crate::fault::note_state_file(&path);
        let connection = Connection::open(&path).map_err(failed(format!("cannot open `{}`", path.display())))?;
        Self::prepare(connection, &path.display().to_string())
    }

    /// A store that lives in memory only, for tests.
    pub fn in_memory() -> StateResult<SqliteStore> {
        Self::prepare(Connection::open_in_memory().map_err(failed("cannot open an in-memory database"))?, ":memory:")
    }

    fn prepare(connection: Connection, name: &str) -> StateResult<SqliteStore> {
        // WAL lets `synchost runs list` read while the daemon writes; FULL
        // makes every committed cursor survive a power cut, not just a crash.
        connection.busy_timeout(BUSY_TIMEOUT).map_err(failed("cannot set the busy timeout"))?;
        retry_while_busy(|| {
            connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        })
        .map_err(failed(format!("cannot configure `{name}`")))?;
        let schema_version = |connection: &Connection| -> StateResult<usize> {
            let version: i64 = connection
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(failed("cannot read the schema version"))?;
            if version as usize > MIGRATIONS.len() {
                return Err(StateError {
                    context: format!("`{name}` has schema version {version}"),
                    source: format!("this synchost knows versions up to {}; use a newer synchost", MIGRATIONS.len())
                        .into(),
                });
            }
            Ok(version as usize)
        };
        if schema_version(&connection)? < MIGRATIONS.len() {
            // Another process (a daemon starting beside a `synchost runs
            // list`) may be migrating the same file: take the write lock
            // first and read the version again under it, so that each
            // migration runs once.
            retry_while_busy(|| connection.execute_batch("BEGIN IMMEDIATE"))
                .map_err(failed("cannot begin a migration"))?;
            let migrated = (|| {
                for (i, migration) in MIGRATIONS.iter().enumerate().skip(schema_version(&connection)?) {
                    connection.execute_batch(migration).map_err(failed(format!("migration {} failed", i + 1)))?;
                    connection
                        .pragma_update(None, "user_version", (i + 1) as i64)
                        .map_err(failed("cannot record the schema version"))?;
                }
                connection.execute_batch("COMMIT").map_err(failed("cannot commit the migrations"))
            })();
            if migrated.is_err() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            migrated?;
        }
        let identity = connection
            .query_row("SELECT id FROM state_identity", [], |row| row.get(0))
            .map_err(failed(format!("cannot read the identity of `{name}`")))?;
        Ok(SqliteStore { connection: Mutex::new(connection), identity, live_runs: Mutex::default() })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (it rolls back
        // an open transaction), so a poisoned lock is safe to take.
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `write` in one transaction that first checks that `run` still
    /// holds its pipeline's lease (see [`StateStore`]); `write` gets the
    /// run's pipeline.
    fn fenced<T>(
        &self,
        run: RunId,
        context: String,
        write: impl FnOnce(&Transaction<'_>, &PipelineId) -> rusqlite::Result<T>,
    ) -> StateResult<T> {
        let mut connection = self.connection();
        let err = || failed(context.clone());
        // Immediate: the check and the write see one state, with no other
        // writer between them.
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err())?;
        let (pipeline, run_token, lease): (PipelineId, Option<i64>, Option<(i64, String)>) = tx
            .query_row(
                "SELECT r.tenant, r.pipeline, r.token, l.token, l.holder FROM runs r
                 LEFT JOIN leases l ON l.tenant = r.tenant AND l.pipeline = r.pipeline WHERE r.id = ?1",
                params![run],
                |row| {
                    let lease = match (row.get::<_, Option<i64>>(3)?, row.get::<_, Option<String>>(4)?) {
                        (Some(token), Some(holder)) => Some((token, holder)),
                        _ => None,
                    };
                    Ok((PipelineId::new(&row.get::<_, String>(0)?, &row.get::<_, String>(1)?), row.get(2)?, lease))
                },
            )
            .map_err(err())?;
        let run_token = run_token.unwrap_or(0);
        if lease.as_ref().is_none_or(|(token, _)| *token != run_token) {
            drop(tx);
            let (token, holder) = lease.map_or((0, None), |(token, holder)| (token, Some(holder)));
            let fenced = Fenced { run: Some(run), pipeline, run_token, holder, token };
            note_fenced(&connection, &fenced);
            return Err(StateError::fenced(fenced));
        }
        let value = write(&tx, &pipeline).map_err(err())?;
        tx.commit().map_err(err())?;
        Ok(value)
    }

    /// Checks, in `tx`, that `lease` is still its pipeline's lease; what
    /// refuses the write if not.
    fn check_lease(tx: &Transaction<'_>, lease: &Lease, run: Option<RunId>) -> StateResult<Option<Fenced>> {
        let current: Option<(i64, String)> = tx
            .query_row(
                "SELECT token, holder FROM leases WHERE tenant = ?1 AND pipeline = ?2",
                params![lease.pipeline.tenant, lease.pipeline.pipeline],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(failed(format!("cannot read the lease of {}", lease.pipeline)))?;
        if current.as_ref().is_some_and(|(token, holder)| *token == lease.token && *holder == lease.holder) {
            return Ok(None);
        }
        let (token, holder) = current.map_or((0, None), |(token, holder)| (token, Some(holder)));
        Ok(Some(Fenced { run, pipeline: lease.pipeline.clone(), run_token: lease.token, holder, token }))
    }
}

/// Counts a refused write (outside its rolled-back transaction). Best
/// effort: the refusal stands whether or not it is counted.
fn note_fenced(connection: &Connection, fenced: &Fenced) {
    let _ = connection.execute(
        "INSERT INTO fenced_writes (tenant, pipeline, run, run_token, lease_token, holder, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            fenced.pipeline.tenant,
            fenced.pipeline.pipeline,
            fenced.run,
            fenced.run_token,
            fenced.token,
            fenced.holder,
            now()
        ],
    );
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn lease_from_row(pipeline: &PipelineId, row: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        pipeline: pipeline.clone(),
        holder: row.get("holder")?,
        token: row.get("token")?,
        expires_at_ms: row.get("expires_at_ms")?,
        version: row.get("version")?,
    })
}

/// Fills in a batch's commit time inside its stats (known only after its commit).
fn set_commit_time(connection: &Connection, run: RunId, seq: u64, commit_ms: f64) -> rusqlite::Result<usize> {
    connection.execute(
        "UPDATE event_batches SET stats = json_set(stats, '$.commit_ms', ?3) WHERE run = ?1 AND seq = ?2",
        params![run, seq as i64, commit_ms],
    )
}

/// Marks the pipeline's runs that are still `running` but over as
/// `abandoned`: those [`abandoned_because`] finds over, and those under an
/// older lease token than `token` (the new holder's).
fn mark_abandoned(
    connection: &Connection,
    pipeline: &PipelineId,
    token: i64,
    live_runs: &std::collections::HashSet<RunId>,
) -> StateResult<()> {
    let context = format!("cannot check the unfinished runs of {pipeline}");
    let mut query = connection
        .prepare_cached("SELECT id, pid, token FROM runs WHERE tenant = ?1 AND pipeline = ?2 AND status = 'running'")
        .map_err(failed(context.clone()))?;
    let unfinished: Vec<(RunId, Option<u32>, Option<i64>)> = query
        .query_map(params![pipeline.tenant, pipeline.pipeline], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map_err(failed(context.clone()))?
        .collect::<Result<_, _>>()
        .map_err(failed(context.clone()))?;
    for (run, pid, run_token) in unfinished {
        let Some(why) = abandoned_because(run, pid, run_token, token, live_runs) else { continue };
        connection
            .execute(
                "UPDATE runs SET status = 'abandoned', finished_at = ?2, error = ?3 WHERE id = ?1",
                params![run, now(), why],
            )
            .map_err(failed(context.clone()))?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("state values serialise")
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let mode: String = row.get("mode")?;
    let stats: String = row.get("stats")?;
    let plugins: String = row.get("plugins")?;
    Ok(RunRecord {
        id: row.get("id")?,
        pipeline: PipelineId { tenant: row.get("tenant")?, pipeline: row.get("pipeline")? },
        mode: parse_mode(&mode),
        status: RunStatus::parse(&row.get::<_, String>("status")?),
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        stats: serde_json::from_str(&stats).unwrap_or_default(),
        error: row.get("error")?,
        plugins: serde_json::from_str(&plugins).unwrap_or_default(),
    })
}

impl StateStore for SqliteStore {
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
        let mut connection = self.connection();
        let context = format!("cannot take the lease of {pipeline}");
        let err = || failed(context.clone());
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err())?;
        let names = params![pipeline.tenant, pipeline.pipeline];
        tx.execute(
            "INSERT OR IGNORE INTO leases (tenant, pipeline, holder, token, expires_at_ms) VALUES (?1, ?2, '', 0, 0)",
            names,
        )
        .map_err(err())?;
        let (current, machine, pid) = tx
            .query_row("SELECT * FROM leases WHERE tenant = ?1 AND pipeline = ?2", names, |row| {
                Ok((lease_from_row(pipeline, row)?, row.get::<_, String>("machine")?, row.get::<_, u32>("pid")?))
            })
            .map_err(err())?;
        let now = now_ms();
        let token = match lease_step(&current, holder, now, holder_gone(&machine, pid)) {
            LeaseStep::Refuse => return Ok(LeaseAnswer::HeldBy(current)),
            LeaseStep::Renew => current.token,
            LeaseStep::Grant(token) => {
                tx.execute(
                    "INSERT INTO lease_grants (tenant, pipeline, token, holder, granted_at_ms, previous_holder,
                                               previous_expires_at_ms, why) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        pipeline.tenant,
                        pipeline.pipeline,
                        token,
                        holder,
                        now,
                        current.holder,
                        current.expires_at_ms,
                        grant_reason(&current, now)
                    ],
                )
                .map_err(err())?;
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
            "UPDATE leases SET holder = ?3, token = ?4, expires_at_ms = ?5, version = ?6, machine = ?7, pid = ?8
             WHERE tenant = ?1 AND pipeline = ?2",
            params![
                pipeline.tenant,
                pipeline.pipeline,
                lease.holder,
                lease.token,
                lease.expires_at_ms,
                lease.version,
                machine_name(),
                std::process::id()
            ],
        )
        .map_err(err())?;
        tx.commit().map_err(err())?;
        Ok(LeaseAnswer::Granted(lease))
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StateResult<Option<Lease>> {
        let expires_at_ms = now_ms() + ttl.as_millis() as i64;
        let renewed = self
            .connection()
            .execute(
                "UPDATE leases SET expires_at_ms = ?5 WHERE tenant = ?1 AND pipeline = ?2 AND holder = ?3 AND token = ?4",
                params![lease.pipeline.tenant, lease.pipeline.pipeline, lease.holder, lease.token, expires_at_ms],
            )
            .map_err(failed(format!("cannot renew the lease of {}", lease.pipeline)))?;
        Ok((renewed == 1).then(|| Lease { expires_at_ms, ..lease.clone() }))
    }

    fn release_lease(&self, lease: &Lease) -> StateResult<()> {
        self.connection()
            .execute(
                "UPDATE leases SET expires_at_ms = min(expires_at_ms, ?5)
                 WHERE tenant = ?1 AND pipeline = ?2 AND holder = ?3 AND token = ?4",
                params![lease.pipeline.tenant, lease.pipeline.pipeline, lease.holder, lease.token, now_ms()],
            )
            .map(drop)
            .map_err(failed(format!("cannot release the lease of {}", lease.pipeline)))
    }

    fn leases(&self) -> StateResult<Vec<Lease>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached("SELECT * FROM leases WHERE token > 0 ORDER BY tenant, pipeline")
            .map_err(failed("cannot list leases"))?;
        let rows = query
            .query_map([], |row| {
                let pipeline = PipelineId::new(&row.get::<_, String>("tenant")?, &row.get::<_, String>("pipeline")?);
                lease_from_row(&pipeline, row)
            })
            .map_err(failed("cannot list leases"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list leases"))
    }

    fn lease(&self, pipeline: &PipelineId) -> StateResult<Option<Lease>> {
        self.connection()
            .query_row(
                "SELECT * FROM leases WHERE tenant = ?1 AND pipeline = ?2 AND token > 0",
                params![pipeline.tenant, pipeline.pipeline],
                |row| lease_from_row(pipeline, row),
            )
            .optional()
            .map_err(failed(format!("cannot read the lease of {pipeline}")))
    }

    fn heartbeat(
        &self,
        id: &str,
        ttl: Duration,
        pipelines: u64,
        versions: &BTreeMap<String, String>,
    ) -> StateResult<()> {
        self.connection()
            .execute(
                "INSERT INTO hosts (id, started_at, expires_at_ms, pipelines, versions) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms, pipelines = excluded.pipelines,
                     versions = excluded.versions",
                params![id, now(), now_ms() + ttl.as_millis() as i64, pipelines as i64, to_json(versions)],
            )
            .map(drop)
            .map_err(failed(format!("cannot record the heartbeat of host `{id}`")))
    }

    fn hosts(&self) -> StateResult<Vec<HostInfo>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached(
                "SELECT id, started_at, expires_at_ms, pipelines, versions FROM hosts WHERE expires_at_ms > ?1
                 ORDER BY id",
            )
            .map_err(failed("cannot list hosts"))?;
        let rows = query
            .query_map(params![now_ms()], |row| {
                Ok(HostInfo {
                    id: row.get(0)?,
                    started_at: row.get(1)?,
                    expires_at_ms: row.get(2)?,
                    pipelines: row.get::<_, i64>(3)? as u64,
                    versions: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
                })
            })
            .map_err(failed("cannot list hosts"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list hosts"))
    }

    fn leave(&self, id: &str) -> StateResult<()> {
        self.connection()
            .execute("DELETE FROM hosts WHERE id = ?1", params![id])
            .map(drop)
            .map_err(failed(format!("cannot remove host `{id}`")))
    }

    fn fenced_writes(&self) -> StateResult<BTreeMap<PipelineId, u64>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached("SELECT tenant, pipeline, count(*) FROM fenced_writes GROUP BY tenant, pipeline")
            .map_err(failed("cannot count fenced writes"))?;
        let rows = query
            .query_map([], |row| {
                Ok((
                    PipelineId::new(&row.get::<_, String>(0)?, &row.get::<_, String>(1)?),
                    row.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(failed("cannot count fenced writes"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot count fenced writes"))
    }

    fn start_run(&self, lease: &Lease, mode: Mode, plugins: &BTreeMap<String, String>) -> StateResult<RunId> {
        let pipeline = &lease.pipeline;
        let mut connection = self.connection();
        let mut live_runs = self.live_runs.lock().unwrap_or_else(PoisonError::into_inner);
        let context = format!("cannot record a run of {pipeline}");
        let tx =
            connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed(context.clone()))?;
        if let Some(fenced) = Self::check_lease(&tx, lease, None)? {
            drop(tx);
            note_fenced(&connection, &fenced);
            return Err(StateError::fenced(fenced));
        }
        mark_abandoned(&tx, pipeline, lease.token, &live_runs)?;
        tx.execute(
            "INSERT INTO runs (tenant, pipeline, mode, status, started_at, stats, plugins, pid, token)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8)",
            params![
                pipeline.tenant,
                pipeline.pipeline,
                mode.to_string(),
                now(),
                to_json(&RunStats::default()),
                to_json(plugins),
                std::process::id(),
                lease.token
            ],
        )
        .map_err(failed(context.clone()))?;
        let run = tx.last_insert_rowid();
        tx.commit().map_err(failed(context))?;
        live_runs.insert(run);
        Ok(run)
    }

    fn finish_run(&self, run: RunId, status: RunStatus, stats: &RunStats, error: Option<&str>) -> StateResult<()> {
        // Over whether or not the end is recorded: the run is over.
        self.live_runs.lock().unwrap_or_else(PoisonError::into_inner).remove(&run);
        self.fenced(run, format!("cannot record the end of run {run}"), |tx, _| {
            tx.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, stats = ?4, error = ?5 WHERE id = ?1",
                params![run, status.as_str(), now(), to_json(stats), error],
            )
            .map(drop)
        })
    }

    fn supersede_run(&self, by: RunId, old: RunId, why: &str) -> StateResult<()> {
        self.fenced(by, format!("cannot mark run {old} superseded"), |tx, pipeline| {
            tx.execute(
                "UPDATE runs SET status = 'superseded', finished_at = ?4, error = ?5
                 WHERE id = ?1 AND tenant = ?2 AND pipeline = ?3",
                params![old, pipeline.tenant, pipeline.pipeline, now(), why],
            )
            .map(drop)
        })
    }

    fn forget_run(&self, run: RunId) -> StateResult<()> {
        self.live_runs.lock().unwrap_or_else(PoisonError::into_inner).remove(&run);
        self.fenced(run, format!("cannot forget run {run}"), |tx, _| {
            tx.execute("DELETE FROM run_archives WHERE run = ?1", params![run])?;
            tx.execute("DELETE FROM runs WHERE id = ?1", params![run]).map(drop)
        })
    }

    fn append_archive(&self, run: RunId, name: &str, data: &[u8]) -> StateResult<()> {
        self.fenced(run, format!("cannot archive `{name}` of run {run}"), |tx, _| {
            // `||` would make text of a blob: append here.
            let kept: Option<Vec<u8>> = tx
                .query_row("SELECT data FROM run_archives WHERE run = ?1 AND name = ?2", params![run, name], |row| {
                    row.get(0)
                })
                .optional()?;
            let whole = match kept {
                Some(mut kept) => {
                    kept.extend_from_slice(data);
                    std::borrow::Cow::Owned(kept)
                }
                None => std::borrow::Cow::Borrowed(data),
            };
            tx.execute(
                "INSERT OR REPLACE INTO run_archives (run, name, data) VALUES (?1, ?2, ?3)",
                params![run, name, whole.as_ref()],
            )
            .map(drop)
        })
    }

    fn archive(&self, run: RunId, name: &str) -> StateResult<Option<Vec<u8>>> {
        self.connection()
            .query_row("SELECT data FROM run_archives WHERE run = ?1 AND name = ?2", params![run, name], |row| {
                row.get(0)
            })
            .optional()
            .map_err(failed(format!("cannot read `{name}` of run {run}'s archive")))
    }

    fn archive_files(&self, run: RunId) -> StateResult<Vec<ArchivedFile>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached("SELECT name, length(data) FROM run_archives WHERE run = ?1 ORDER BY name")
            .map_err(failed(format!("cannot list run {run}'s archive")))?;
        query
            .query_map(params![run], |row| Ok(ArchivedFile { name: row.get(0)?, bytes: row.get::<_, i64>(1)? as u64 }))
            .and_then(Iterator::collect)
            .map_err(failed(format!("cannot list run {run}'s archive")))
    }

    fn request_approval(&self, run: RunId, pipeline: &PipelineId, by: &str) -> StateResult<()> {
        self.connection()
            .execute(
                "INSERT OR REPLACE INTO approvals (run, tenant, pipeline, requested_by, requested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, pipeline.tenant, pipeline.pipeline, by, now()],
            )
            .map(drop)
            .map_err(failed(format!("cannot ask for run {run}'s approval")))
    }

    fn approval_requests(&self) -> StateResult<Vec<ApprovalRequest>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached(&format!("{APPROVAL_COLUMNS} WHERE answer IS NULL ORDER BY run"))
            .map_err(failed("cannot read the approval requests"))?;
        query
            .query_map([], approval_request)
            .and_then(Iterator::collect)
            .map_err(failed("cannot read the approval requests"))
    }

    fn claim_approval(&self, run: RunId, host: &str) -> StateResult<bool> {
        self.connection()
            .execute(
                "UPDATE approvals SET claimed_by = ?2 WHERE run = ?1 AND answer IS NULL AND (claimed_by IS NULL
                 OR claimed_by NOT IN (SELECT id FROM hosts WHERE expires_at_ms > ?3))",
                params![run, host, chrono::Utc::now().timestamp_millis()],
            )
            .map(|claimed| claimed == 1)
            .map_err(failed(format!("cannot take run {run}'s approval")))
    }

    fn answer_approval(&self, run: RunId, answer: &str) -> StateResult<()> {
        self.connection()
            .execute("UPDATE approvals SET answer = ?2 WHERE run = ?1", params![run, answer])
            .map(drop)
            .map_err(failed(format!("cannot answer run {run}'s approval")))
    }

    fn approval(&self, run: RunId) -> StateResult<Option<ApprovalRequest>> {
        self.connection()
            .query_row(&format!("{APPROVAL_COLUMNS} WHERE run = ?1"), params![run], approval_request)
            .optional()
            .map_err(failed(format!("cannot read run {run}'s approval")))
    }

    fn drop_archives_except(&self, pipeline: &PipelineId, keep: &[RunId]) -> StateResult<()> {
        let keep = serde_json::to_string(keep).expect("run ids serialise");
        self.connection()
            .execute(
                "DELETE FROM run_archives WHERE run IN (SELECT id FROM runs WHERE tenant = ?1 AND pipeline = ?2)
                 AND run NOT IN (SELECT value FROM json_each(?3))",
                params![pipeline.tenant, pipeline.pipeline, keep],
            )
            .map(drop)
            .map_err(failed(format!("cannot remove old run archives of {pipeline}")))
    }

    fn cursor(&self, pipeline: &PipelineId) -> StateResult<Option<String>> {
        self.connection()
            .query_row(
                "SELECT cursor FROM cursors WHERE tenant = ?1 AND pipeline = ?2",
                params![pipeline.tenant, pipeline.pipeline],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed(format!("cannot read the cursor of {pipeline}")))
    }

    fn runs(&self, pipeline: Option<&PipelineId>, limit: usize) -> StateResult<Vec<RunRecord>> {
        let connection = self.connection();
        let (tenant, name) = pipeline.map_or((None, None), |p| (Some(&p.tenant), Some(&p.pipeline)));
        let mut query = connection
            .prepare_cached(
                "SELECT * FROM runs WHERE (?1 IS NULL OR (tenant = ?1 AND pipeline = ?2))
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(failed("cannot list runs"))?;
        let rows =
            query.query_map(params![tenant, name, limit as i64], run_from_row).map_err(failed("cannot list runs"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list runs"))
    }

    fn find_runs(&self, filter: &RunFilter) -> StateResult<Vec<RunRecord>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached(
                "SELECT * FROM runs WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR pipeline = ?2)
                 AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR id < ?4) AND (?6 IS NULL OR mode = ?6)
                 ORDER BY id DESC LIMIT ?5",
            )
            .map_err(failed("cannot list runs"))?;
        let status = filter.status.map(RunStatus::as_str);
        let mode = filter.mode.map(|mode| mode.to_string());
        let rows = query
            .query_map(
                params![filter.tenant, filter.pipeline, status, filter.before, filter.limit as i64, mode],
                run_from_row,
            )
            .map_err(failed("cannot list runs"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list runs"))
    }

    fn pauses(&self) -> StateResult<BTreeMap<PipelineId, Pause>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached("SELECT tenant, pipeline, paused_at, reason FROM paused_pipelines")
            .map_err(failed("cannot list paused pipelines"))?;
        let rows = query
            .query_map([], |row| {
                Ok((
                    PipelineId::new(&row.get::<_, String>(0)?, &row.get::<_, String>(1)?),
                    Pause { at: row.get(2)?, reason: row.get(3)? },
                ))
            })
            .map_err(failed("cannot list paused pipelines"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list paused pipelines"))
    }

    fn set_pause(&self, pipeline: &PipelineId, pause: Option<&Pause>) -> StateResult<()> {
        let connection = self.connection();
        let context = format!("cannot record the pause of {pipeline}");
        retry_while_busy(|| match pause {
            Some(pause) => connection.execute(
                "INSERT INTO paused_pipelines (tenant, pipeline, paused_at, reason) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, pipeline) DO UPDATE SET paused_at = excluded.paused_at, reason = excluded.reason",
                params![pipeline.tenant, pipeline.pipeline, pause.at, pause.reason],
            ),
            None => connection.execute(
                "DELETE FROM paused_pipelines WHERE tenant = ?1 AND pipeline = ?2",
                params![pipeline.tenant, pipeline.pipeline],
            ),
        })
        .map(drop)
        .map_err(failed(context))
    }

    fn run(&self, id: RunId) -> StateResult<Option<RunRecord>> {
        self.connection()
            .query_row("SELECT * FROM runs WHERE id = ?1", params![id], run_from_row)
            .optional()
            .map_err(failed(format!("cannot read run {id}")))
    }

    fn dead_letters(&self, pipeline: &PipelineId) -> StateResult<Vec<DeadLetter>> {
        let connection = self.connection();
        let mut query = connection
            .prepare_cached(
                "SELECT id, run, position, key, operation, reason, created_at, superseded_by FROM dead_letters
                 WHERE tenant = ?1 AND pipeline = ?2 ORDER BY id",
            )
            .map_err(failed("cannot list dead letters"))?;
        let rows = query
            .query_map(params![pipeline.tenant, pipeline.pipeline], |row| {
                let operation: String = row.get(4)?;
                Ok(DeadLetter {
                    id: row.get(0)?,
                    run: row.get(1)?,
                    position: row.get(2)?,
                    key: row.get(3)?,
                    operation: operation_from_text(operation),
                    reason: row.get(5)?,
                    created_at: row.get(6)?,
                    superseded_by: row.get(7)?,
                })
            })
            .map_err(failed("cannot list dead letters"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list dead letters"))
    }

    // --- diff sync state ---

    fn restart_run(&self, run: RunId, lease: &Lease) -> StateResult<()> {
        // It runs in this process now (an approval may come from another
        // process than the one that planned it), under this process's lease.
        let mut connection = self.connection();
        let mut live_runs = self.live_runs.lock().unwrap_or_else(PoisonError::into_inner);
        let context = format!("cannot restart run {run}");
        let tx =
            connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed(context.clone()))?;
        if let Some(fenced) = Self::check_lease(&tx, lease, Some(run))? {
            drop(tx);
            note_fenced(&connection, &fenced);
            return Err(StateError::fenced(fenced));
        }
        tx.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, pid = ?2, token = ?3 WHERE id = ?1",
            params![run, std::process::id(), lease.token],
        )
        .map_err(failed(context.clone()))?;
        tx.commit().map_err(failed(context))?;
        live_runs.insert(run);
        Ok(())
    }

    fn managed_keys(&self, pipeline: &PipelineId) -> StateResult<std::collections::HashSet<String>> {
        let connection = self.connection();
        let context = format!("cannot read the managed keys of {pipeline}");
        let mut query = connection
            .prepare_cached("SELECT key FROM managed_keys WHERE tenant = ?1 AND pipeline = ?2")
            .map_err(failed(context.clone()))?;
        let keys = query
            .query_map(params![pipeline.tenant, pipeline.pipeline], |row| row.get(0))
            .map_err(failed(context.clone()))?;
        keys.collect::<Result<_, _>>().map_err(failed(context))
    }

    fn update_managed_keys(&self, run: RunId, created: &[String], deleted: &[String]) -> StateResult<()> {
        self.fenced(run, format!("cannot record the managed keys of run {run}"), |tx, pipeline| {
            let mut insert =
                tx.prepare_cached("INSERT OR IGNORE INTO managed_keys (tenant, pipeline, key) VALUES (?1, ?2, ?3)")?;
            for key in created {
                insert.execute(params![pipeline.tenant, pipeline.pipeline, key])?;
            }
            let mut delete =
                tx.prepare_cached("DELETE FROM managed_keys WHERE tenant = ?1 AND pipeline = ?2 AND key = ?3")?;
            for key in deleted {
                delete.execute(params![pipeline.tenant, pipeline.pipeline, key])?;
            }
            Ok(())
        })
    }

    fn permitted_load(&self, pipeline: &PipelineId) -> StateResult<Option<PermittedLoad>> {
        self.connection()
            .query_row(
                "SELECT run, why, writes, deletes FROM permitted_loads WHERE tenant = ?1 AND pipeline = ?2",
                params![pipeline.tenant, pipeline.pipeline],
                |row| {
                    Ok(PermittedLoad {
                        run: row.get(0)?,
                        why: row.get(1)?,
                        writes: row.get::<_, i64>(2)? as u64,
                        deletes: row.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()
            .map_err(failed(format!("cannot read the permitted load of {pipeline}")))
    }

    fn set_permitted_load(&self, run: RunId, load: Option<&PermittedLoad>) -> StateResult<()> {
        self.fenced(run, format!("cannot record the permitted load of run {run}"), |tx, pipeline| {
            match load {
                Some(load) => tx.execute(
                    "INSERT OR REPLACE INTO permitted_loads (tenant, pipeline, run, why, writes, deletes) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        pipeline.tenant,
                        pipeline.pipeline,
                        load.run,
                        load.why,
                        load.writes as i64,
                        load.deletes as i64
                    ],
                ),
                None => tx.execute(
                    "DELETE FROM permitted_loads WHERE tenant = ?1 AND pipeline = ?2",
                    params![pipeline.tenant, pipeline.pipeline],
                ),
            }
            .map(drop)
        })
    }

    // --- event sync state ---

    fn retry_queue(&self, pipeline: &PipelineId) -> StateResult<Vec<RetryItem>> {
        let connection = self.connection();
        let context = format!("cannot read the retry queue of {pipeline}");
        let mut query = connection
            .prepare_cached(
                "SELECT id, key, position, operation, attempts, next_attempt_at, last_error FROM retry_queue
                 WHERE tenant = ?1 AND pipeline = ?2 ORDER BY id",
            )
            .map_err(failed(context.clone()))?;
        let rows = query
            .query_map(params![pipeline.tenant, pipeline.pipeline], |row| {
                let operation: String = row.get(3)?;
                Ok(RetryItem {
                    id: row.get(0)?,
                    key: row.get(1)?,
                    position: row.get(2)?,
                    operation: operation_from_text(operation),
                    attempts: row.get(4)?,
                    next_attempt_at: row.get(5)?,
                    last_error: row.get(6)?,
                })
            })
            .map_err(failed(context.clone()))?;
        rows.collect::<Result<_, _>>().map_err(failed(context))
    }

    fn commit_event_batch(&self, commit: &EventCommit<'_>) -> StateResult<()> {
        let pipeline = commit.pipeline;
        let (tenant, name) = (&pipeline.tenant, &pipeline.pipeline);
        self.fenced(commit.run, format!("cannot commit a batch of {pipeline}"), |tx, _| {
            let at = now();
            tx.execute(
                "INSERT INTO cursors (tenant, pipeline, cursor, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, pipeline) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                params![tenant, name, commit.cursor, at],
            )?;
            {
                // Items queued by someone else since the batch read the queue, for a
                // key the batch applied: older than what is now in the destination.
                let mut late =
                    tx.prepare_cached("SELECT key FROM retry_queue WHERE tenant = ?1 AND pipeline = ?2 AND id > ?3")?;
                let late_keys: Vec<String> = late
                    .query_map(params![tenant, name, commit.queue_seen_up_to], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut unqueue =
                    tx.prepare_cached("DELETE FROM retry_queue WHERE tenant = ?1 AND pipeline = ?2 AND key = ?3")?;
                for key in late_keys.iter().filter(|key| (commit.applied_keys)(key)) {
                    unqueue.execute(params![tenant, name, key])?;
                }
                for key in commit.unqueued {
                    unqueue.execute(params![tenant, name, key])?;
                }
                let mut queue = tx.prepare_cached(
                    "INSERT INTO retry_queue (tenant, pipeline, key, position, operation, attempts, next_attempt_at,
                                              last_error, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
                     ON CONFLICT (tenant, pipeline, key) DO UPDATE SET position = excluded.position,
                         operation = excluded.operation, attempts = excluded.attempts,
                         next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
                         updated_at = excluded.updated_at",
                )?;
                for item in commit.queued {
                    queue.execute(params![
                        tenant,
                        name,
                        item.key,
                        item.position,
                        item.operation.to_string(),
                        item.attempts,
                        item.next_attempt_at,
                        item.last_error,
                        at
                    ])?;
                }
                let mut supersede = tx.prepare_cached(
                    "UPDATE dead_letters SET superseded_by = ?4
                     WHERE tenant = ?1 AND pipeline = ?2 AND key = ?3 AND superseded_by IS NULL",
                )?;
                for (key, position) in commit.superseded_letters {
                    supersede.execute(params![tenant, name, key, position])?;
                }
                let mut insert = tx.prepare_cached(
                    "INSERT INTO dead_letters (tenant, pipeline, run, position, key, operation, reason, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for letter in commit.dead_letters {
                    insert.execute(params![
                        tenant,
                        name,
                        commit.run,
                        letter.position,
                        letter.key,
                        letter.operation.to_string(),
                        letter.reason,
                        at
                    ])?;
                }
            }
            if let Some((seq, ms)) = commit.previous_commit_ms {
                set_commit_time(tx, commit.run, seq, ms)?;
            }
            tx.execute(
                "INSERT INTO event_batches (run, seq, stats, committed_at) VALUES (?1, ?2, ?3, ?4)",
                params![commit.run, commit.batch.seq as i64, to_json(commit.batch), at],
            )?;
            tx.execute("UPDATE runs SET stats = ?2 WHERE id = ?1", params![commit.run, to_json(commit.stats)])?;
            Ok(())
        })
    }

    fn set_batch_commit_time(&self, run: RunId, seq: u64, commit_ms: f64) -> StateResult<()> {
        let context = format!("cannot record the commit time of batch {seq} of run {run}");
        self.fenced(run, context, |tx, _| set_commit_time(tx, run, seq, commit_ms).map(drop))
    }

    fn batches(&self, run: RunId) -> StateResult<Vec<BatchStats>> {
        let connection = self.connection();
        let context = format!("cannot read the batches of run {run}");
        let mut query = connection
            .prepare_cached("SELECT stats FROM event_batches WHERE run = ?1 ORDER BY seq")
            .map_err(failed(context.clone()))?;
        let rows = query.query_map(params![run], |row| row.get::<_, String>(0)).map_err(failed(context.clone()))?;
        let texts: Vec<String> = rows.collect::<Result<_, _>>().map_err(failed(context))?;
        Ok(texts.iter().map(|text| serde_json::from_str(text).unwrap_or_default()).collect())
    }

    fn requeue_dead_letters(&self, pipeline: &PipelineId, ids: Option<&[i64]>) -> StateResult<RequeueOutcome> {
        let letters = self.dead_letters(pipeline)?;
        let mut connection = self.connection();
        let context = format!("cannot requeue the dead letters of {pipeline}");
        let err = || failed(context.clone());
        let tx = connection.transaction().map_err(err())?;
        let mut outcome = RequeueOutcome::default();
        let at = now();
        let due = chrono::Utc::now().timestamp_millis();
        for letter in letters.iter().filter(|l| ids.is_none_or(|ids| ids.contains(&l.id))) {
            if let Some(position) = &letter.superseded_by {
                outcome.refused.push((letter.id, superseded_refusal(&letter.key, position)));
                continue;
            }
            let inserted = tx
                .execute(
                    "INSERT INTO retry_queue (tenant, pipeline, key, position, operation, attempts, next_attempt_at,
                                              last_error, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?8)
                     ON CONFLICT (tenant, pipeline, key) DO NOTHING",
                    params![
                        pipeline.tenant,
                        pipeline.pipeline,
                        letter.key,
                        letter.position,
                        letter.operation.to_string(),
                        due,
                        format!("requeued from dead letter {}: {}", letter.id, letter.reason),
                        at
                    ],
                )
                .map_err(err())?;
            if inserted == 0 {
                outcome.refused.push((letter.id, already_queued_refusal(&letter.key)));
                continue;
            }
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", params![letter.id]).map_err(err())?;
            outcome.requeued.push(letter.id);
        }
        tx.commit().map_err(err())?;
        Ok(outcome)
    }

    fn drop_dead_letters(&self, pipeline: &PipelineId, ids: Option<&[i64]>) -> StateResult<usize> {
        let mut connection = self.connection();
        let context = format!("cannot drop the dead letters of {pipeline}");
        let tx = connection.transaction().map_err(failed(context.clone()))?;
        let dropped = match ids {
            None => tx
                .execute(
                    "DELETE FROM dead_letters WHERE tenant = ?1 AND pipeline = ?2",
                    params![pipeline.tenant, pipeline.pipeline],
                )
                .map_err(failed(context.clone()))?,
            Some(ids) => {
                let mut dropped = 0;
                for id in ids {
                    dropped += tx
                        .execute(
                            "DELETE FROM dead_letters WHERE tenant = ?1 AND pipeline = ?2 AND id = ?3",
                            params![pipeline.tenant, pipeline.pipeline, id],
                        )
                        .map_err(failed(context.clone()))?;
                }
                dropped
            }
        };
        tx.commit().map_err(failed(context))?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_opening_a_new_state_file_at_once_each_migrate_it_once() {
        // A daemon starting while a `synchost runs list` opens the same new
        // file: every opener must get a working store.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let dir = dir.path().to_path_buf();
                    std::thread::spawn(move || SqliteStore::open(&dir).map(|_| ()).map_err(|e| e.to_string()))
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().expect("every opener gets the store");
            }
            let store = SqliteStore::open(dir.path()).unwrap();
            let version: i64 = store.connection().query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
            assert_eq!(version as usize, MIGRATIONS.len());
        }
    }

    #[test]
    fn a_run_whose_end_could_not_be_recorded_is_abandoned_by_the_next_run_not_left_running() {
        let store = SqliteStore::in_memory().unwrap();
        let pipeline = PipelineId::new("acme", "orders");
        let LeaseAnswer::Granted(lease) =
            store.acquire_lease(&pipeline, "test", Duration::from_secs(60), None).unwrap()
        else {
            panic!("a free lease")
        };
        let first = store.start_run(&lease, Mode::Event, &BTreeMap::new()).unwrap();
        // The run ends, but recording it fails (the disk was full): make the
        // write fail by taking the table away for that one statement.
        store.connection().execute_batch("ALTER TABLE runs RENAME TO runs_away").unwrap();
        assert!(store.finish_run(first, RunStatus::Succeeded, &RunStats::default(), None).is_err());
        store.connection().execute_batch("ALTER TABLE runs_away RENAME TO runs").unwrap();
        assert_eq!(store.run(first).unwrap().unwrap().status, RunStatus::Running);
        // The pipeline's next run, in the same process, finds it over.
        let second = store.start_run(&lease, Mode::Event, &BTreeMap::new()).unwrap();
        let first = store.run(first).unwrap().unwrap();
        assert_eq!(first.status, RunStatus::Abandoned);
        assert!(first.error.unwrap().contains("its end could not be recorded"));
        // While a run of this process is live, it is never marked.
        let _third = store.start_run(&lease, Mode::Event, &BTreeMap::new()).unwrap();
        assert_eq!(store.run(second).unwrap().unwrap().status, RunStatus::Running);
    }
}
