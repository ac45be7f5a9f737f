//! The state a host keeps between runs: the record of every run, event
//! cursors and dead letters. [`StateStore`] is the seam; [`SqliteStore`] (one
//! file in the state directory) is the embedded default.

mod sqlite;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
pub use sqlite::SqliteStore;

/// A pipeline, named as the CLI names it: `tenant/pipeline`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineId {
    pub tenant: String,
    pub pipeline: String,
}

impl PipelineId {
    pub fn new(tenant: &str, pipeline: &str) -> PipelineId {
        PipelineId { tenant: tenant.to_string(), pipeline: pipeline.to_string() }
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.pipeline)
    }
}

impl std::str::FromStr for PipelineId {
    type Err = String;

    fn from_str(text: &str) -> Result<PipelineId, String> {
        match text.split_once('/') {
            Some((tenant, pipeline)) if !tenant.is_empty() && !pipeline.is_empty() => {
                Ok(PipelineId::new(tenant, pipeline))
            }
            _ => Err(format!("`{text}` is not TENANT/PIPELINE")),
        }
    }
}

pub type RunId = i64;

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    /// It ran to its end, but some operations did not apply: rejected,
    /// dead-lettered, or given up after their attempts (see the run's
    /// failures and the dead letters).
    SucceededWithErrors,
    Failed,
    /// Stopped early by a shutdown; what it committed stands.
    Stopped,
    /// A diff plan held back by a guard, waiting for `synchost approve`.
    Blocked,
    /// An event sync stopped by a config error, cursor unchanged: an operator
    /// must fix the cause; `synchost run` stops scheduling the pipeline.
    Paused,
    /// The process running it ended without finishing it (killed, say); found
    /// when the pipeline's next run starts. What it committed stands.
    Abandoned,
    /// A blocked plan that a later run planned afresh: it can no longer be
    /// approved.
    Superseded,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::SucceededWithErrors => "succeeded_with_errors",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
            RunStatus::Blocked => "blocked",
            RunStatus::Paused => "paused",
            RunStatus::Abandoned => "abandoned",
            RunStatus::Superseded => "superseded",
        }
    }

    fn parse(text: &str) -> RunStatus {
        match text {
            "succeeded" => RunStatus::Succeeded,
            "succeeded_with_errors" => RunStatus::SucceededWithErrors,
            "failed" => RunStatus::Failed,
            "stopped" => RunStatus::Stopped,
            "blocked" => RunStatus::Blocked,
            "paused" => RunStatus::Paused,
            "abandoned" => RunStatus::Abandoned,
            "superseded" => RunStatus::Superseded,
            _ => RunStatus::Running,
        }
    }
}

/// As people read it: "succeeded with errors", "blocked".
impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str().replace('_', " "))
    }
}

/// What a run did, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RunStats {
    /// Rows read from the source snapshot, or events read.
    pub read: u64,
    /// Rows the transforms produced (the desired state, for diffs).
    pub desired: u64,
    /// Rows in the destination snapshot (diffs).
    pub destination: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub upserted: u64,
    pub unchanged: u64,
    /// Diff runs: operations that gave up after their attempts within the
    /// run (the next run plans them again). Event runs: transient failures
    /// seen, each carried to the retry queue or, out of attempts,
    /// dead-lettered (counted in `dead_lettered` too).
    pub failed: u64,
    /// Operations the destination rejected for good (dead-lettered, for events).
    pub rejected: u64,
    /// Event batches committed.
    pub batches: u64,
    /// Event syncs: operations dropped because a later event for the same key
    /// in the same batch superseded them.
    pub collapsed: u64,
    /// Further attempts at operations that had failed transiently (diff syncs:
    /// within the run, with backoff; event syncs: from the retry queue).
    pub retried: u64,
    /// Event syncs: operations that failed transiently and wait in the retry queue.
    pub queued: u64,
    /// Event syncs: operations that went to the dead letters (rejected, or out
    /// of attempts).
    pub dead_lettered: u64,
    /// Event syncs: items in the retry queue when the run ended.
    pub pending_retries: u64,
    pub cursor_before: Option<String>,
    pub cursor_after: Option<String>,
    /// Diff syncs: desired rows held back by a uniqueness conflict.
    pub held: u64,
    /// Milliseconds spent per phase (diff syncs: read, apply).
    pub timings_ms: BTreeMap<String, u64>,
}

impl RunStats {
    /// Adds what one committed event batch did, which dead-lettered
    /// `dead_lettered` operations, to the run's totals.
    pub fn add_batch(&mut self, batch: &BatchStats, dead_lettered: u64) {
        self.batches += 1;
        self.read += batch.events;
        self.upserted += batch.upserted;
        self.deleted += batch.deleted;
        self.rejected += batch.rejected;
        self.collapsed += batch.collapsed;
        self.retried += batch.retried;
        self.queued += batch.queued;
        self.dead_lettered += dead_lettered;
        self.pending_retries = batch.pending_retries;
        self.cursor_after = Some(batch.cursor_after.clone());
    }
}

/// One run, as kept in the state store.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: RunId,
    pub pipeline: PipelineId,
    pub mode: Mode,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub stats: RunStats,
    pub error: Option<String>,
    /// Plugin name → sha256 of the version the run used.
    pub plugins: BTreeMap<String, String>,
}

/// Which runs to list; every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub tenant: Option<String>,
    pub pipeline: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs older than this one (paging back through the history).
    pub before: Option<RunId>,
    pub limit: usize,
}

/// An operator's pause of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pause {
    /// When it was paused (RFC 3339).
    pub at: String,
    pub reason: Option<String>,
}

/// A diff load let past the change guard (an initial load into an empty
/// destination, an approved plan, a forced run) whose apply has not finished.
/// The run after an interruption resumes under the same permission when what
/// it plans is what is left of this load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermittedLoad {
    /// The run that was let through.
    pub run: RunId,
    /// Why: "initial load", "approved plan", "forced".
    pub why: String,
    /// The plan it was let through with.
    pub writes: u64,
    pub deletes: u64,
}

/// An operation that can never apply, kept with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub run: RunId,
    /// The source position of the event it came from.
    pub position: String,
    pub key: String,
    /// The operation, as JSON.
    pub operation: serde_json::Value,
    pub reason: String,
    pub created_at: String,
    /// The position of a later event for the same key that has since been
    /// applied or queued: retrying this letter would go back in time.
    #[serde(default)]
    pub superseded_by: Option<String>,
}

/// A failure of the state store itself.
#[derive(Debug, thiserror::Error)]
#[error("state store: {context}: {source}")]
pub struct StateError {
    pub context: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

pub type StateResult<T> = Result<T, StateError>;

/// Where runs, cursors and dead letters are kept.
pub trait StateStore: Send + Sync {
    fn start_run(&self, pipeline: &PipelineId, mode: Mode, plugins: &BTreeMap<String, String>) -> StateResult<RunId>;

    fn finish_run(&self, run: RunId, status: RunStatus, stats: &RunStats, error: Option<&str>) -> StateResult<()>;

    /// Removes the record of a run that did nothing worth keeping.
    fn forget_run(&self, run: RunId) -> StateResult<()>;

    /// The cursor an event pipeline resumes after; `None` before its first batch.
    fn cursor(&self, pipeline: &PipelineId) -> StateResult<Option<String>>;

    /// The newest runs first, of one pipeline or of all.
    fn runs(&self, pipeline: Option<&PipelineId>, limit: usize) -> StateResult<Vec<RunRecord>>;

    /// The newest runs first that match `filter`.
    fn find_runs(&self, filter: &RunFilter) -> StateResult<Vec<RunRecord>>;

    fn run(&self, id: RunId) -> StateResult<Option<RunRecord>>;

    /// The pipelines an operator paused, with when and why.
    fn pauses(&self) -> StateResult<BTreeMap<PipelineId, Pause>>;

    /// Pauses (`Some`) or resumes (`None`) a pipeline, for good: the pause
    /// outlives the daemon.
    fn set_pause(&self, pipeline: &PipelineId, pause: Option<&Pause>) -> StateResult<()>;

    fn dead_letters(&self, pipeline: &PipelineId) -> StateResult<Vec<DeadLetter>>;

    // --- diff sync state ---

    /// Marks a finished run as running again (an approved plan being applied).
    fn restart_run(&self, run: RunId) -> StateResult<()>;

    /// The keys of the destination records this pipeline created and has not
    /// deleted since (for `deletes = "managed"`).
    fn managed_keys(&self, pipeline: &PipelineId) -> StateResult<std::collections::HashSet<String>>;

    /// Records records created and deleted by a batch, in one transaction.
    fn update_managed_keys(&self, pipeline: &PipelineId, created: &[String], deleted: &[String]) -> StateResult<()>;

    /// The load let past the guard whose apply has not finished, if any.
    fn permitted_load(&self, pipeline: &PipelineId) -> StateResult<Option<PermittedLoad>>;

    /// Records (`Some`) a load about to apply under a permission, or clears
    /// it (`None`) once its apply has finished.
    fn set_permitted_load(&self, pipeline: &PipelineId, load: Option<&PermittedLoad>) -> StateResult<()>;

    // --- event sync state ---

    /// The retry queue of an event pipeline, oldest item first.
    fn retry_queue(&self, pipeline: &PipelineId) -> StateResult<Vec<RetryItem>>;

    /// In one transaction: moves the cursor, changes the retry queue, adds dead
    /// letters, marks superseded ones, records the batch's stats and the run's
    /// progress. A crash before it leaves everything as it was before the batch.
    fn commit_event_batch(&self, commit: &EventCommit<'_>) -> StateResult<()>;

    /// Records how long a batch's commit took, once it is known (after the commit).
    fn set_batch_commit_time(&self, run: RunId, seq: u64, commit_ms: f64) -> StateResult<()>;

    /// The per-batch stats of an event run, in order.
    fn batches(&self, run: RunId) -> StateResult<Vec<BatchStats>>;

    /// Moves dead letters (all, or those with these ids) back into the retry
    /// queue, due now. Letters a later event superseded, or whose key already
    /// has a queued operation, are refused with the reason.
    fn requeue_dead_letters(&self, pipeline: &PipelineId, ids: Option<&[i64]>) -> StateResult<RequeueOutcome>;

    /// Deletes dead letters (all, or those with these ids); returns how many.
    fn drop_dead_letters(&self, pipeline: &PipelineId, ids: Option<&[i64]>) -> StateResult<usize>;
}

/// A dead letter about to be stored.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub position: String,
    pub key: String,
    pub operation: serde_json::Value,
    pub reason: String,
}

// --- event sync state ---

/// An operation waiting in an event pipeline's retry queue. A key has at most
/// one: a later event for the key replaces the operation (events carry full
/// state) and keeps the item's attempts and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryItem {
    pub id: i64,
    pub key: String,
    /// The source position of the event the operation came from.
    pub position: String,
    /// The operation, as JSON (the form dead letters show).
    pub operation: serde_json::Value,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is due, in milliseconds since the Unix epoch.
    pub next_attempt_at: i64,
    pub last_error: String,
}

/// A retry item about to be stored (inserted, or replacing the key's item).
#[derive(Debug, Clone)]
pub struct NewRetry {
    pub key: String,
    pub position: String,
    pub operation: serde_json::Value,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: String,
}

/// Everything one event batch commits.
pub struct EventCommit<'a> {
    pub run: RunId,
    pub pipeline: &'a PipelineId,
    pub cursor: &'a str,
    /// Retry items to insert, or to replace the item of their key.
    pub queued: &'a [NewRetry],
    /// Keys whose retry item is done with (applied, dead-lettered, superseded).
    pub unqueued: &'a [String],
    pub dead_letters: &'a [NewDeadLetter],
    /// (key, position): the key's earlier dead letters are superseded by the
    /// later event at `position`.
    pub superseded_letters: &'a [(String, String)],
    /// The highest retry item id the batch read: an item added after it (by
    /// `dlq retry`) whose key the batch applied is older than what was applied,
    /// so it is dropped rather than run later and go back in time.
    pub queue_seen_up_to: i64,
    pub applied_keys: &'a (dyn Fn(&str) -> bool + Sync),
    pub batch: &'a BatchStats,
    /// The commit time of the run's previous batch, known only now.
    pub previous_commit_ms: Option<(u64, f64)>,
    pub stats: &'a RunStats,
}

/// What one event batch did, kept per batch for `synchost runs show`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct BatchStats {
    /// 1 for the run's first batch.
    pub seq: u64,
    pub cursor_before: Option<String>,
    pub cursor_after: String,
    /// Events read from the source.
    pub events: u64,
    /// Operations the transforms made of them.
    pub operations: u64,
    /// Operations a later one for the same key superseded within the batch.
    pub collapsed: u64,
    /// Operations that went into the retry queue in place of a queued one.
    pub superseded: u64,
    /// Queued operations attempted again.
    pub retried: u64,
    pub upserted: u64,
    pub deleted: u64,
    /// Operations that failed transiently and wait in the retry queue.
    pub queued: u64,
    /// Operations the destination rejected.
    pub rejected: u64,
    /// Operations that ran out of attempts.
    pub expired: u64,
    /// Items in the retry queue after the batch.
    pub pending_retries: u64,
    pub lanes: u64,
    pub read_ms: f64,
    pub transform_ms: f64,
    pub apply_ms: f64,
    /// Filled in after the commit (with the next batch, or at the run's end);
    /// `None` if the process died first.
    pub commit_ms: Option<f64>,
    /// From reading the events to the start of the commit.
    pub work_ms: f64,
}

/// What `requeue_dead_letters` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequeueOutcome {
    /// Ids of the letters now in the retry queue.
    pub requeued: Vec<i64>,
    /// (id, why) of the letters left where they are.
    pub refused: Vec<(i64, String)>,
}

/// Now, as RFC 3339 in UTC, the form every timestamp in the state takes.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
