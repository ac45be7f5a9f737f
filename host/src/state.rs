//! The state a host keeps between runs: the record of every run, event
//! cursors and dead letters. [`StateStore`] is the seam; [`SqliteStore`] (one
//! file in the state directory) is the embedded default, [`PostgresStore`]
//! the one several hosts share.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
pub use postgres::PostgresStore;
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
    /// Reconcile runs: how far the destination had drifted from the source,
    /// and what the run repaired or left to the event stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// What a reconciliation found: keys whose owned fields the destination does
/// not hold as the source's snapshot has them. Keys the event stream was
/// about to bring to a newer state (events between the watermarks, the retry
/// queue, dead letters) are counted but left to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Drift {
    /// Keys the source has and the destination lacks.
    pub missing: u64,
    /// Keys the destination has and the source does not (as many as the
    /// pipeline's `deletes` lets it remove).
    pub extra: u64,
    /// Keys in both whose owned fields differ.
    pub different: u64,
    /// Owned field → how many of the different keys differ in it.
    pub fields: BTreeMap<String, u64>,
    /// Of the drifted keys, those left to the event stream.
    pub left_to_stream: u64,
    /// Operations the run applied to repair the rest (see the run's
    /// `created`, `updated` and `deleted` for which).
    pub repaired: u64,
    /// The committed event cursor before the snapshots were read: the
    /// stream goes on from here.
    pub low_watermark: Option<String>,
    /// The event position read up to after the snapshots were read.
    pub high_watermark: Option<String>,
    /// Events between the two watermarks, read and not applied.
    pub events_between: u64,
    /// Distinct keys those events, the retry queue and the dead letters touch.
    pub keys_in_flight: u64,
    pub samples: DriftSamples,
}

/// The first few drifted keys of each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DriftSamples {
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub different: Vec<DifferentKey>,
    pub left_to_stream: Vec<String>,
}

/// A key whose owned fields differ, and which.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DifferentKey {
    pub key: String,
    pub fields: Vec<String>,
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
    /// Only runs of this kind.
    pub mode: Option<Mode>,
    /// Only runs older than this one (paging back through the history).
    pub before: Option<RunId>,
    pub limit: usize,
}

impl RunFilter {
    /// The newest run of `pipeline`; narrowed further by the caller.
    pub fn newest_of(pipeline: &PipelineId) -> RunFilter {
        RunFilter {
            tenant: Some(pipeline.tenant.clone()),
            pipeline: Some(pipeline.pipeline.clone()),
            limit: 1,
            ..RunFilter::default()
        }
    }
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

/// Who runs a pipeline: the holder of its lease, until the lease ends unless
/// renewed. The fencing token grows with every new holder; a run records the
/// token it started under, and the store refuses every write of a run whose
/// token is no longer the lease's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub pipeline: PipelineId,
    /// The host (or command) holding it: `host_id`, by default HOSTNAME:PID.
    pub holder: String,
    pub token: i64,
    /// When it ends unless renewed, in milliseconds since the Unix epoch by
    /// the store's clock (the database's, for PostgreSQL: hosts' clocks may
    /// differ, the database's is the one every host reads).
    pub expires_at_ms: i64,
    /// The version of the tenant the holder runs (its tenant file's digest).
    pub version: Option<String>,
}

/// What [`StateStore::acquire_lease`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The lease is the asker's: newly granted (a new token), or renewed.
    Granted(Lease),
    /// Another holder has it, until its `expires_at_ms`.
    HeldBy(Lease),
}

/// A host of a fleet sharing one state store, as its heartbeats show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    pub id: String,
    /// Its first heartbeat (RFC 3339).
    pub started_at: String,
    /// Until when it counts as live unless it beats again (ms since the epoch).
    pub expires_at_ms: i64,
    /// Pipelines it owned (its share of the fleet's) at its last heartbeat.
    pub pipelines: u64,
    /// The version of each tenant it serves (tenant → its file's digest).
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
}

/// A write of a run refused because its pipeline's lease has passed to
/// another holder since the run started.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} of {pipeline} holds lease token {run_token}, but the lease is now {}; it writes nothing more",
    match run { Some(run) => format!("run {run}"), None => "a new run".to_string() },
    match holder { Some(holder) => format!("`{holder}`'s, token {token}"), None => "gone".to_string() }
)]
pub struct Fenced {
    /// `None`: the run was about to start.
    pub run: Option<RunId>,
    pub pipeline: PipelineId,
    pub run_token: i64,
    pub holder: Option<String>,
    pub token: i64,
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

impl StateError {
    /// Whether the write was refused because the run's lease passed to
    /// another holder (see [`Fenced`]).
    pub fn is_fenced(&self) -> bool {
        self.source.downcast_ref::<Fenced>().is_some()
    }

    fn fenced(fenced: Fenced) -> StateError {
        StateError { context: format!("refused a write to the state of {}", fenced.pipeline), source: Box::new(fenced) }
    }
}

/// An approval asked for on one host, for the host running the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub run: RunId,
    pub pipeline: PipelineId,
    pub requested_by: String,
    pub requested_at: String,
    /// The host that took it to apply.
    pub claimed_by: Option<String>,
    /// How it went, once it has: JSON.
    pub answer: Option<String>,
}

/// One file of a run's archive, as `runs show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ArchivedFile {
    pub name: String,
    /// Its size as kept (zstd-compressed, but for `meta.json`).
    pub bytes: u64,
}

/// Where runs, cursors and dead letters are kept.
///
/// Every write a run makes is fenced: it commits only while the lease the run
/// started under (its token) is still the pipeline's lease, checked in the
/// write's own transaction. Otherwise it fails with [`Fenced`], is counted
/// (see [`StateStore::fenced_writes`]), and changes nothing.
pub trait StateStore: Send + Sync {
    /// Which state this is: made at random when the store is first created,
    /// so that the leases of a new state (whose tokens start again from 1)
    /// are never compared with an old one's (see [`crate::plugin::Fence`]).
    fn identity(&self) -> &str;

    // --- leases and hosts ---

    /// Takes the lease of `pipeline` for `holder` for `ttl`, if it is free,
    /// ended, or `holder`'s already (then renewed, same token). A new holder
    /// gets a token one above the last one; the grant is kept in the audit
    /// of grants.
    fn acquire_lease(
        &self,
        pipeline: &PipelineId,
        holder: &str,
        ttl: std::time::Duration,
        version: Option<&str>,
    ) -> StateResult<LeaseAnswer>;

    /// Extends `lease` by `ttl` from now; `None` if it is no longer the
    /// pipeline's lease (another holder took it after it ended).
    fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration) -> StateResult<Option<Lease>>;

    /// Ends `lease` now, if it is still the pipeline's: another holder may
    /// take it at once.
    fn release_lease(&self, lease: &Lease) -> StateResult<()>;

    /// Every pipeline's lease, ended or not.
    fn leases(&self) -> StateResult<Vec<Lease>>;

    /// The lease of one pipeline, ended or not; `None` before its first run.
    fn lease(&self, pipeline: &PipelineId) -> StateResult<Option<Lease>>;

    /// Records that host `id` is live for `ttl` more, owning `pipelines`,
    /// serving these `versions` of its tenants.
    fn heartbeat(
        &self,
        id: &str,
        ttl: std::time::Duration,
        pipelines: u64,
        versions: &BTreeMap<String, String>,
    ) -> StateResult<()>;

    /// The hosts live now, by id.
    fn hosts(&self) -> StateResult<Vec<HostInfo>>;

    /// Removes host `id` from the live hosts (it is shutting down).
    fn leave(&self, id: &str) -> StateResult<()>;

    /// How many writes were refused because their run's lease had passed on,
    /// per pipeline.
    fn fenced_writes(&self) -> StateResult<BTreeMap<PipelineId, u64>>;

    // --- runs ---

    /// Records a new run of the lease's pipeline, under the lease's token.
    fn start_run(&self, lease: &Lease, mode: Mode, plugins: &BTreeMap<String, String>) -> StateResult<RunId>;

    fn finish_run(&self, run: RunId, status: RunStatus, stats: &RunStats, error: Option<&str>) -> StateResult<()>;

    /// Marks the blocked run `old` superseded by run `by`, which planned
    /// afresh (a write of `by`'s).
    fn supersede_run(&self, by: RunId, old: RunId, why: &str) -> StateResult<()>;

    /// Removes the record of a run that did nothing worth keeping, and its archive.
    fn forget_run(&self, run: RunId) -> StateResult<()>;

    // --- run archives ---

    /// Appends `data` to the archive file `name` of `run`, creating it (a
    /// write of the run's, fenced like the others). Appending lets an
    /// approval add its outcomes to those of the run it approves.
    fn append_archive(&self, run: RunId, name: &str, data: &[u8]) -> StateResult<()>;

    /// The archive file `name` of `run`, if it is kept.
    fn archive(&self, run: RunId, name: &str) -> StateResult<Option<Vec<u8>>>;

    /// The files kept in `run`'s archive, by name.
    fn archive_files(&self, run: RunId) -> StateResult<Vec<ArchivedFile>>;

    /// Removes the archives of `pipeline`'s runs but those of `keep`
    /// (pruning; the run records stay).
    fn drop_archives_except(&self, pipeline: &PipelineId, keep: &[RunId]) -> StateResult<()>;

    // --- approvals asked on one host, applied on the one that runs the pipeline ---

    /// Asks for the blocked plan of `run` (of `pipeline`) to be applied by
    /// the host that runs its pipeline. Asking again after an answer asks anew.
    fn request_approval(&self, run: RunId, pipeline: &PipelineId, by: &str) -> StateResult<()>;

    /// The requests not yet answered.
    fn approval_requests(&self) -> StateResult<Vec<ApprovalRequest>>;

    /// Takes request `run` for `host` to apply, if no live host has taken it
    /// (a host that took it and died leaves it to the next); whether it did.
    fn claim_approval(&self, run: RunId, host: &str) -> StateResult<bool>;

    /// Records how the approval went (JSON: see [`crate::daemon::approvals`]).
    fn answer_approval(&self, run: RunId, answer: &str) -> StateResult<()>;

    /// The latest request for `run`, answered or not.
    fn approval(&self, run: RunId) -> StateResult<Option<ApprovalRequest>>;

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

    /// Marks a finished run as running again (an approved plan being
    /// applied), now under `lease`.
    fn restart_run(&self, run: RunId, lease: &Lease) -> StateResult<()>;

    /// The keys of the destination records this pipeline created and has not
    /// deleted since (for `deletes = "managed"`).
    fn managed_keys(&self, pipeline: &PipelineId) -> StateResult<std::collections::HashSet<String>>;

    /// Records records created and deleted by a batch of `run`, in one transaction.
    fn update_managed_keys(&self, run: RunId, created: &[String], deleted: &[String]) -> StateResult<()>;

    /// The load let past the guard whose apply has not finished, if any.
    fn permitted_load(&self, pipeline: &PipelineId) -> StateResult<Option<PermittedLoad>>;

    /// Records (`Some`) a load about to apply under a permission, or clears
    /// it (`None`) once its apply has finished, for `run`'s pipeline.
    fn set_permitted_load(&self, run: RunId, load: Option<&PermittedLoad>) -> StateResult<()>;

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

/// Opens the state store `synchost.toml` chooses: the SQLite file in the
/// state directory unless `state` names a PostgreSQL database.
pub fn open(host: &crate::config::HostConfig) -> StateResult<std::sync::Arc<dyn StateStore>> {
    Ok(match &host.state {
        crate::config::StateConfig::Sqlite => std::sync::Arc::new(SqliteStore::open(&host.state_dir)?),
        crate::config::StateConfig::Postgres { url, password } => {
            // The state directory still holds this host's own files: run
            // archives, the admin socket, compiled code.
            std::fs::create_dir_all(&host.state_dir).map_err(|e| StateError {
                context: format!("cannot create the state directory `{}`", host.state_dir.display()),
                source: Box::new(e),
            })?;
            std::sync::Arc::new(PostgresStore::open(url, password.as_ref().map(|p| p.expose()), host.lease_time)?)
        }
    })
}

/// What taking a lease does, given the lease as it stands.
#[derive(Debug, PartialEq, Eq)]
enum LeaseStep {
    /// The asker holds it and it has not ended: same token, later end.
    Renew,
    /// It has ended (or was never granted: token 0): the asker gets it under
    /// this new token.
    Grant(i64),
    /// Someone else holds it.
    Refuse,
}

/// The rule of [`StateStore::acquire_lease`], shared by the stores. A lease
/// whose holder is a process of this machine that is gone (`holder_gone`:
/// a `synchost sync` killed mid-run, a daemon that crashed) has ended too:
/// nobody can renew it, and waiting out its time would only delay the
/// restart that follows.
fn lease_step(current: &Lease, holder: &str, now_ms: i64, holder_gone: bool) -> LeaseStep {
    if current.expires_at_ms > now_ms && !holder_gone {
        if current.holder == holder { LeaseStep::Renew } else { LeaseStep::Refuse }
    } else {
        LeaseStep::Grant(current.token + 1)
    }
}

/// Why a new grant could replace `current` at `now_ms`, for the audit of
/// grants: it had ended, or its holder's process was found gone.
fn grant_reason(current: &Lease, now_ms: i64) -> &'static str {
    if current.expires_at_ms > now_ms { "holder gone" } else { "ended" }
}

/// Whether the process `pid` of machine `machine`, as a lease records its
/// holder, is known to be gone: only this machine can tell.
fn holder_gone(machine: &str, pid: u32) -> bool {
    pid != 0 && machine == machine_name() && pid != std::process::id() && process_is_gone(pid)
}

/// Why run `run`, recorded as `running`, is over though nobody recorded its
/// end; `None` while it may still be going. `pid` is its process if that
/// ran on this machine (only this machine can look it up), `run_token` the
/// lease token it started under, `token` the lease's token now.
///
/// Its process gone says more than its lease passed on, which follows: the
/// process is gone, or it is this process's and not among its `live` runs
/// (its end could not be recorded); else its lease passed to a newer holder.
/// (Where a process cannot be looked up, nothing is over by it: a live run
/// must never be marked.)
fn abandoned_because(
    run: RunId,
    pid: Option<u32>,
    run_token: Option<i64>,
    token: i64,
    live: &std::collections::HashSet<RunId>,
) -> Option<String> {
    let by_process = pid.and_then(|pid| {
        if pid == std::process::id() {
            (!live.contains(&run))
                .then(|| "it ended, but its end could not be recorded (the state store failed then)".to_string())
        } else {
            process_is_gone(pid).then(|| format!("the process running it (pid {pid}) ended before it finished"))
        }
    });
    by_process.or_else(|| {
        run_token.filter(|run_token| *run_token < token).map(|run_token| {
            format!("its lease (token {run_token}) passed to another holder (token {token}) before it finished")
        })
    })
}

/// Whether no process has this id any more. Only Linux's /proc is consulted;
/// elsewhere every process counts as alive.
fn process_is_gone(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

/// This machine's name, which a shared store records with each run's
/// process id: only this machine can tell whether that process is gone.
pub(crate) fn machine_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn parse_mode(text: &str) -> Mode {
    match text {
        "event" => Mode::Event,
        "reconcile" => Mode::Reconcile,
        _ => Mode::Diff,
    }
}

/// An operation as stored (JSON text); text that is not JSON is shown as it is.
fn operation_from_text(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// Why `dlq retry` leaves a dead letter that a later event superseded.
fn superseded_refusal(key: &str, position: &str) -> String {
    format!("a later event for `{key}` (at {position}) was applied since; retrying would undo it")
}

/// Why `dlq retry` leaves a dead letter whose key has a queued operation.
fn already_queued_refusal(key: &str) -> String {
    format!("`{key}` already has an operation in the retry queue")
}
