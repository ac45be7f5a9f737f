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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped early by a shutdown; what it committed stands.
    Stopped,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
        }
    }

    fn parse(text: &str) -> RunStatus {
        match text {
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "stopped" => RunStatus::Stopped,
            _ => RunStatus::Running,
        }
    }
}

/// What a run did, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Operations that failed and will be tried again by a later run.
    pub failed: u64,
    /// Operations the destination rejected for good (dead-lettered, for events).
    pub rejected: u64,
    /// Event batches committed.
    pub batches: u64,
    pub cursor_before: Option<String>,
    pub cursor_after: Option<String>,
}

/// One run, as kept in the state store.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// An operation that can never apply, kept with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// In one transaction: moves the cursor, adds the dead letters and saves the
    /// run's progress. A crash before it leaves the old cursor, so the batch is
    /// read again; a crash after it loses nothing.
    fn commit_batch(
        &self,
        run: RunId,
        pipeline: &PipelineId,
        cursor: &str,
        dead_letters: &[NewDeadLetter],
        stats: &RunStats,
    ) -> StateResult<()>;

    /// The newest runs first, of one pipeline or of all.
    fn runs(&self, pipeline: Option<&PipelineId>, limit: usize) -> StateResult<Vec<RunRecord>>;

    fn run(&self, id: RunId) -> StateResult<Option<RunRecord>>;

    fn dead_letters(&self, pipeline: &PipelineId) -> StateResult<Vec<DeadLetter>>;
}

/// A dead letter about to be stored.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub position: String,
    pub key: String,
    pub operation: serde_json::Value,
    pub reason: String,
}

/// Now, as RFC 3339 in UTC, the form every timestamp in the state takes.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
