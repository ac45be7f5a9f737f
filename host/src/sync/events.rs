//! What the engine and the runtime tell their observers while they work: typed events, so that
//! the CLI's live progress line, the logs, and metrics or an API later all
//! read the same facts, and the engine itself draws nothing.
//!
//! An observer is a function the job calls in line, from whichever thread did
//! the work: it must be quick (format a line, bump a counter, send on a
//! channel) and must not block.

use std::sync::Arc;

use crate::config::Mode;
use crate::state::{PipelineId, RunId, RunStats, RunStatus};

/// One thing that happened in a sync. A `run` of `None` is a preview's
/// (`synchost plan`), which records no run.
#[derive(Debug, Clone)]
pub enum SyncEvent<'a> {
    /// A run was recorded and begins, or an approved plan's run begins its
    /// apply; `from` has the figures it starts from (none for a new run, the
    /// planning's for an approved plan).
    RunStarted { pipeline: &'a PipelineId, run: RunId, mode: Mode, from: &'a RunStats },
    /// A diff run read a page: `stats` has what it read so far.
    PageRead { pipeline: &'a PipelineId, run: Option<RunId>, stats: &'a RunStats },
    /// A batch of operations reached the destination: `done` of `total`
    /// operations (`None` for event runs, which do not know how many follow).
    BatchApplied { pipeline: &'a PipelineId, run: Option<RunId>, done: u64, total: Option<u64>, stats: &'a RunStats },
    /// An event batch was committed (cursor, retry queue, dead letters in one
    /// transaction), which took `seconds`.
    BatchCommitted { pipeline: &'a PipelineId, run: RunId, seconds: f64 },
    /// A guard held a diff plan back for an operator.
    PlanBlocked { pipeline: &'a PipelineId, run: Option<RunId>, reason: &'a str },
    /// A run went past a limit: a plugin's (`call_timeout`, `memory`…) or
    /// the pipeline's run budget (`max_run_rows`…).
    LimitBreached { pipeline: &'a PipelineId, run: Option<RunId>, limit: &'a str, detail: &'a str },
    /// A run ended, however it ended; `error` says why it was not clean, and
    /// `handed_over` that it ended at a batch boundary for a newer version of
    /// its plugins (the next run goes on at once).
    RunFinished {
        pipeline: &'a PipelineId,
        run: RunId,
        status: RunStatus,
        stats: &'a RunStats,
        error: Option<&'a str>,
        handed_over: bool,
    },
    /// A tenant's plugin became another version (a reload or a rollback):
    /// runs from now on use the component with this sha256.
    PluginSwapped { tenant: &'a str, plugin: &'a str, digest: &'a str },
}

/// Something that wants to hear about [`SyncEvent`]s.
pub type Observer = Arc<dyn Fn(&SyncEvent<'_>) + Send + Sync>;

/// An observer that hears nothing.
pub fn ignore() -> Observer {
    Arc::new(|_| {})
}

/// An observer that tells each of `observers` in turn.
pub fn all(observers: Vec<Observer>) -> Observer {
    Arc::new(move |event| observers.iter().for_each(|observer| observer(event)))
}
