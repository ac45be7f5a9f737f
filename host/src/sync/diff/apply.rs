//! Applying a plan, through the apply layer both sync modes share
//! ([`crate::sync::apply`]): deletes, then updates, then creates (so that a
//! value a record gives up is free before another record takes it), each in
//! chunks of a batch of operations per lane ([`BatchSize`]). What fails
//! transiently is tried again within the run ([`RetryPolicy::IN_RUN`]); what
//! still does not apply is planned again by the next run. Every outcome is
//! archived.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::archive::{self, ArchiveError, OutcomeWriter};
use super::plan::Plan;
use crate::plugin::DestinationInstance;
use crate::state::RunId;
use crate::sync::apply::{self, Pending, RetryPolicy, Verdict};
use crate::sync::{Halt, Progress, SyncJob};
use synchost_model::{Action, Operation, row_to_json};

/// A plan's operation: nothing to carry beside it.
type PlannedOp = Pending<()>;

pub(super) fn apply(
    job: &SyncJob<'_>,
    run: RunId,
    dir: &Path,
    destinations: &mut [DestinationInstance],
    plan: &Plan,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let started = Instant::now();
    let mut outcomes = OutcomeWriter::create(dir)?;
    let result = apply_phases(job, run, destinations, plan, &mut outcomes, progress);
    // An approval's outcomes join those of the run it approves.
    let archived = outcomes.finish().and_then(|()| archive::publish(job.state, run, dir));
    progress.timing("apply", started);
    // Why the apply stopped matters more than what could not be archived.
    result.and(archived.map_err(Halt::from))
}

fn apply_phases(
    job: &SyncJob<'_>,
    run: RunId,
    destinations: &mut [DestinationInstance],
    plan: &Plan,
    outcomes: &mut OutcomeWriter,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let columns = Arc::new(plan.columns.clone());
    let operation = |action: Action| Pending {
        key: action.key().to_string(),
        columns: columns.clone(),
        operation: Operation { idempotency_key: format!("run-{run}/{}", action.key()), action },
        attempts: 0,
        meta: (),
    };
    let phases: [Vec<PlannedOp>; 3] = [
        plan.deletes.iter().map(|key| operation(Action::Delete(key.clone()))).collect(),
        plan.updates.iter().map(|update| operation(Action::Update(update.clone()))).collect(),
        plan.creates.iter().map(|row| operation(Action::Create(row.clone()))).collect(),
    ];
    let total = plan.changes();
    let mut batch = BatchSize::new(job.pipeline.apply_batch, !job.pipeline.apply_batch_set);
    let mut done = 0u64;
    for phase in phases {
        let mut phase = phase.into_iter().peekable();
        while phase.peek().is_some() {
            if job.should_stop() {
                return Err(Halt::Stopped);
            }
            // What did not apply is planned again by the next run.
            progress.budget.time()?;
            let chunk: Vec<PlannedOp> = phase.by_ref().take(batch.size * destinations.len()).collect();
            done += chunk.len() as u64;
            let started = Instant::now();
            apply_chunk(job, run, destinations, chunk, batch.size, outcomes, progress)?;
            batch.took(started.elapsed());
            progress.batch_applied(done, Some(total));
        }
    }
    Ok(())
}

/// Operations per destination call. A pipeline that sets `apply_batch` gets
/// that many. One that does not starts at the default and doubles the batch
/// after each chunk the destination applied in under [`BatchSize::QUICK`],
/// up to [`BatchSize::MOST`], and halves it (not below the start) after one
/// slower than [`BatchSize::SLOW`]: a destination that pays for each call (a
/// lock, an fsync, a round trip) takes large loads in few calls, and one that
/// pays per operation (a REST API) keeps calls short beside its `call_timeout`.
struct BatchSize {
    size: usize,
    least: usize,
    adapts: bool,
}

impl BatchSize {
    const QUICK: Duration = Duration::from_millis(250);
    const SLOW: Duration = Duration::from_secs(2);
    const MOST: usize = 10_000;

    fn new(start: usize, adapts: bool) -> BatchSize {
        BatchSize { size: start, least: start, adapts }
    }

    fn took(&mut self, elapsed: Duration) {
        if !self.adapts {
            return;
        }
        if elapsed < Self::QUICK {
            self.size = (self.size * 2).min(Self::MOST.max(self.least));
        } else if elapsed > Self::SLOW {
            self.size = (self.size / 2).max(self.least);
        }
    }
}

/// One chunk, `batch` operations per call, retried for what failed
/// transiently; the managed keys of what applied are recorded once the chunk
/// is done, or has stopped.
fn apply_chunk(
    job: &SyncJob<'_>,
    run: RunId,
    destinations: &mut [DestinationInstance],
    chunk: Vec<PlannedOp>,
    batch: usize,
    outcomes: &mut OutcomeWriter,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let mut settled = Settled::default();
    let mut pending = chunk;
    let result = loop {
        let applied = apply::apply(destinations, pending, batch, &|| job.lease.holds());
        let archived = applied.outcomes.into_iter().try_for_each(|(op, result)| {
            let verdict = RetryPolicy::IN_RUN.verdict(&op.key, op.attempts, &result);
            settled.settle(op, verdict, outcomes, progress)
        });
        if let Err(e) = archived {
            break Err(e.into());
        }
        if let Some(error) = applied.halt {
            break Err(error.into());
        }
        if applied.lease_lost {
            break Err(Halt::LeaseLost);
        }
        if let Some(reason) = settled.refused.take() {
            break Err(Halt::Refused(reason));
        }
        if settled.again.is_empty() {
            break Ok(());
        }
        std::thread::sleep(std::mem::take(&mut settled.wait));
        pending = std::mem::take(&mut settled.again);
    };
    job.state.update_managed_keys(run, &settled.created, &settled.deleted)?;
    result
}

/// What became of a chunk's operations so far.
#[derive(Default)]
struct Settled {
    created: Vec<String>,
    deleted: Vec<String>,
    /// Operations to try again, after `wait`.
    again: Vec<PlannedOp>,
    wait: std::time::Duration,
    /// A config error the destination reported: the run stops after the chunk.
    refused: Option<String>,
}

impl Settled {
    /// Counts and archives one operation's verdict.
    fn settle(
        &mut self,
        op: PlannedOp,
        verdict: Verdict,
        outcomes: &mut OutcomeWriter,
        progress: &mut Progress,
    ) -> Result<(), ArchiveError> {
        let (kind, key) = (op.operation.action.name(), op.key.as_str());
        match verdict {
            Verdict::Applied => {
                match &op.operation.action {
                    Action::Create(_) => {
                        progress.stats.created += 1;
                        self.created.push(op.key.clone());
                    }
                    Action::Update(_) => progress.stats.updated += 1,
                    Action::Upsert(_) => progress.stats.upserted += 1,
                    Action::Delete(_) => {
                        progress.stats.deleted += 1;
                        self.deleted.push(op.key.clone());
                    }
                }
                outcomes.record(kind, key, "applied", None)
            }
            Verdict::Retry { attempts, wait, reason } => {
                tracing::debug!(key, attempts, "transient failure, retrying: {reason}");
                progress.stats.retried += 1;
                self.wait = self.wait.max(wait);
                self.again.push(Pending { attempts, ..op });
                Ok(())
            }
            Verdict::Config(reason) => {
                outcomes.record(kind, key, "config", Some(&reason))?;
                self.refused.get_or_insert(format!("the destination could not apply `{key}`: {reason}"));
                Ok(())
            }
            Verdict::Rejected(reason) => {
                progress.stats.rejected += 1;
                outcomes.record(kind, key, "rejected", Some(&reason))?;
                progress.failure(key, format!("{reason} ({})", shown(&op.columns, &op.operation.action)));
                Ok(())
            }
            Verdict::GaveUp { reason, .. } => {
                progress.stats.failed += 1;
                outcomes.record(kind, key, "failed", Some(&reason))?;
                progress.failure(key, format!("{reason} ({})", shown(&op.columns, &op.operation.action)));
                Ok(())
            }
        }
    }
}

/// An operation as a report shows it beside its failure.
fn shown(columns: &[String], action: &Action) -> String {
    match action.row() {
        Some(row) => row_to_json(columns, row).to_string(),
        None => action.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_while_calls_are_quick_and_shrink_when_slow_but_a_set_size_holds() {
        let quick = Duration::from_millis(10);
        let slow = Duration::from_secs(3);
        let mut batch = BatchSize::new(500, true);
        batch.took(quick);
        assert_eq!(batch.size, 1000);
        (0..10).for_each(|_| batch.took(quick));
        assert_eq!(batch.size, BatchSize::MOST, "growth stops at the most");
        batch.took(Duration::from_secs(1));
        assert_eq!(batch.size, BatchSize::MOST, "a call neither quick nor slow changes nothing");
        (0..10).for_each(|_| batch.took(slow));
        assert_eq!(batch.size, 500, "shrinking stops at the start");

        let mut set = BatchSize::new(20, false);
        (0..5).for_each(|_| set.took(quick));
        assert_eq!(set.size, 20);
        let mut large = BatchSize::new(50_000, true);
        large.took(quick);
        assert_eq!(large.size, 50_000, "a start above the most is kept");
    }
}
