//! The embedded state store: one SQLite file, `state.db`, in the state directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DeadLetter, NewDeadLetter, PipelineId, RunId, RunRecord, RunStats, RunStatus, StateError, StateResult, StateStore,
    now,
};
use crate::config::Mode;

/// Each entry moves the schema one version on; `PRAGMA user_version` records
/// how many have been applied.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

pub struct SqliteStore {
    connection: Mutex<Connection>,
}

fn failed(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StateError {
    let context = context.into();
    move |e| StateError { context, source: Box::new(e) }
}

impl SqliteStore {
    /// Opens (creating if needed) `state.db` in `state_dir`.
    pub fn open(state_dir: &Path) -> StateResult<SqliteStore> {
        std::fs::create_dir_all(state_dir).map_err(|e| StateError {
            context: format!("cannot create the state directory `{}`", state_dir.display()),
            source: Box::new(e),
        })?;
        let path = state_dir.join("state.db");
        let connection = Connection::open(&path).map_err(failed(format!("cannot open `{}`", path.display())))?;
        Self::prepare(connection, &path.display().to_string())
    }

    /// A store that lives in memory only, for tests.
    pub fn in_memory() -> StateResult<SqliteStore> {
        Self::prepare(Connection::open_in_memory().map_err(failed("cannot open an in-memory database"))?, ":memory:")
    }

    fn prepare(mut connection: Connection, name: &str) -> StateResult<SqliteStore> {
        // WAL lets `synchost runs list` read while the daemon writes; FULL
        // makes every committed cursor survive a power cut, not just a crash.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(failed(format!("cannot configure `{name}`")))?;
        connection.busy_timeout(Duration::from_secs(10)).map_err(failed("cannot set the busy timeout"))?;
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(failed("cannot read the schema version"))?;
        if version as usize > MIGRATIONS.len() {
            return Err(StateError {
                context: format!("`{name}` has schema version {version}"),
                source: format!("this synchost knows versions up to {}; use a newer synchost", MIGRATIONS.len()).into(),
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = connection.transaction().map_err(failed("cannot begin a migration"))?;
            tx.execute_batch(migration).map_err(failed(format!("migration {} failed", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(failed("cannot record the schema version"))?;
            tx.commit().map_err(failed("cannot commit a migration"))?;
        }
        Ok(SqliteStore { connection: Mutex::new(connection) })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (it rolls back
        // an open transaction), so a poisoned lock is safe to take.
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
        mode: if mode == "event" { Mode::Event } else { Mode::Diff },
        status: RunStatus::parse(&row.get::<_, String>("status")?),
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        stats: serde_json::from_str(&stats).unwrap_or_default(),
        error: row.get("error")?,
        plugins: serde_json::from_str(&plugins).unwrap_or_default(),
    })
}

impl StateStore for SqliteStore {
    fn start_run(&self, pipeline: &PipelineId, mode: Mode, plugins: &BTreeMap<String, String>) -> StateResult<RunId> {
        let connection = self.connection();
        connection
            .execute(
                "INSERT INTO runs (tenant, pipeline, mode, status, started_at, stats, plugins)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
                params![
                    pipeline.tenant,
                    pipeline.pipeline,
                    mode.to_string(),
                    now(),
                    to_json(&RunStats::default()),
                    to_json(plugins)
                ],
            )
            .map_err(failed(format!("cannot record a run of {pipeline}")))?;
        Ok(connection.last_insert_rowid())
    }

    fn finish_run(&self, run: RunId, status: RunStatus, stats: &RunStats, error: Option<&str>) -> StateResult<()> {
        self.connection()
            .execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, stats = ?4, error = ?5 WHERE id = ?1",
                params![run, status.as_str(), now(), to_json(stats), error],
            )
            .map_err(failed(format!("cannot record the end of run {run}")))?;
        Ok(())
    }

    fn forget_run(&self, run: RunId) -> StateResult<()> {
        self.connection()
            .execute("DELETE FROM runs WHERE id = ?1", params![run])
            .map_err(failed(format!("cannot forget run {run}")))?;
        Ok(())
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

    fn commit_batch(
        &self,
        run: RunId,
        pipeline: &PipelineId,
        cursor: &str,
        dead_letters: &[NewDeadLetter],
        stats: &RunStats,
    ) -> StateResult<()> {
        let mut connection = self.connection();
        let context = format!("cannot commit a batch of {pipeline}");
        let tx = connection.transaction().map_err(failed(context.clone()))?;
        let at = now();
        tx.execute(
            "INSERT INTO cursors (tenant, pipeline, cursor, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, pipeline) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
            params![pipeline.tenant, pipeline.pipeline, cursor, at],
        )
        .map_err(failed(context.clone()))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (tenant, pipeline, run, position, key, operation, reason, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(failed(context.clone()))?;
            for letter in dead_letters {
                insert
                    .execute(params![
                        pipeline.tenant,
                        pipeline.pipeline,
                        run,
                        letter.position,
                        letter.key,
                        letter.operation.to_string(),
                        letter.reason,
                        at
                    ])
                    .map_err(failed(context.clone()))?;
            }
        }
        tx.execute("UPDATE runs SET stats = ?2 WHERE id = ?1", params![run, to_json(stats)])
            .map_err(failed(context.clone()))?;
        tx.commit().map_err(failed(context))
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
                "SELECT id, run, position, key, operation, reason, created_at FROM dead_letters
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
                    operation: serde_json::from_str(&operation).unwrap_or(serde_json::Value::String(operation)),
                    reason: row.get(5)?,
                    created_at: row.get(6)?,
                })
            })
            .map_err(failed("cannot list dead letters"))?;
        rows.collect::<Result<_, _>>().map_err(failed("cannot list dead letters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_batch_moves_the_cursor_and_keeps_dead_letters() {
        let store = SqliteStore::in_memory().unwrap();
        let pipeline = PipelineId::new("acme", "orders");
        assert_eq!(store.cursor(&pipeline).unwrap(), None);
        let run = store.start_run(&pipeline, Mode::Event, &BTreeMap::new()).unwrap();
        let letter = NewDeadLetter {
            position: "42".into(),
            key: "k1".into(),
            operation: serde_json::json!({"delete": "k1"}),
            reason: "rejected error: no such record".into(),
        };
        let stats = RunStats { read: 3, batches: 1, ..RunStats::default() };
        store.commit_batch(run, &pipeline, "120", &[letter], &stats).unwrap();
        assert_eq!(store.cursor(&pipeline).unwrap().as_deref(), Some("120"));
        let letters = store.dead_letters(&pipeline).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!((letters[0].key.as_str(), letters[0].run), ("k1", run));
        assert_eq!(store.run(run).unwrap().unwrap().stats, stats);
        // Another pipeline's cursor is its own.
        assert_eq!(store.cursor(&PipelineId::new("acme", "other")).unwrap(), None);
    }

    #[test]
    fn runs_are_listed_newest_first_with_their_outcome() {
        let store = SqliteStore::in_memory().unwrap();
        let pipeline = PipelineId::new("acme", "roster");
        let first = store.start_run(&pipeline, Mode::Diff, &BTreeMap::new()).unwrap();
        store.finish_run(first, RunStatus::Failed, &RunStats::default(), Some("source failed")).unwrap();
        let second = store.start_run(&pipeline, Mode::Diff, &BTreeMap::new()).unwrap();
        let runs = store.runs(Some(&pipeline), 10).unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![second, first]);
        assert_eq!(runs[1].status, RunStatus::Failed);
        assert_eq!(runs[1].error.as_deref(), Some("source failed"));
        assert_eq!(runs[0].status, RunStatus::Running);
    }
}
