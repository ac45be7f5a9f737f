//! Applying a plan: deletes, then updates, then creates (so that a value a
//! record gives up is free before another record takes it), in batches, with
//! transient failures retried with backoff inside the run and every outcome
//! archived.

use std::path::Path;
use std::time::{Duration, Instant};

use super::archive::OutcomeWriter;
use super::plan::Plan;
use crate::plugin::types::{Action, Operation, OperationBatch};
use crate::plugin::{DestinationInstance, PluginError, WitError, describe};
use crate::state::RunId;
use crate::sync::values::row_to_json;
use crate::sync::{Halt, Progress, SyncJob};

/// Tries after the first for operations that fail transiently.
const RETRIES: u32 = 3;
/// The first pause before a retry; each further pause is four times longer.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

pub(super) fn apply(
    job: &SyncJob<'_>,
    run: RunId,
    dir: &Path,
    destination: &mut DestinationInstance,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let started = Instant::now();
    let operation = |action: Action, key: &str| Operation { idempotency_key: format!("run-{run}/{key}"), action };
    let operations: Vec<Operation> = plan
        .deletes
        .iter()
        .map(|key| operation(Action::Delete(key.clone()), key))
        .chain(plan.updates.iter().map(|u| operation(Action::Update(u.clone()), &u.row.key)))
        .chain(plan.creates.iter().map(|row| operation(Action::Create(row.clone()), &row.key)))
        .collect();
    let total = operations.len();
    let mut outcomes = OutcomeWriter::create(dir)?;
    let result = (|| {
        for (done, chunk) in operations.chunks(job.pipeline.apply_batch).enumerate() {
            if job.should_stop() {
                return Err(Halt::Stopped);
            }
            // What did not apply is planned again by the next run.
            progress.budget.time()?;
            apply_batch(job, destination, &plan.columns, chunk, &mut outcomes, progress)?;
            progress.show(&format!("applying {}/{total}", (done * job.pipeline.apply_batch + chunk.len()).min(total)));
        }
        Ok(())
    })();
    outcomes.finish()?;
    progress.timing("apply", started);
    result
}

/// One batch, retried for what failed transiently; the managed keys are
/// recorded once the batch is done.
fn apply_batch(
    job: &SyncJob<'_>,
    destination: &mut DestinationInstance,
    columns: &[String],
    chunk: &[Operation],
    outcomes: &mut OutcomeWriter,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let mut created = Vec::new();
    let mut deleted = Vec::new();
    let mut pending: Vec<&Operation> = chunk.iter().collect();
    let mut attempt = 0;
    while !pending.is_empty() {
        let batch =
            OperationBatch { columns: columns.to_vec(), operations: pending.iter().map(|&op| op.clone()).collect() };
        let results = match destination.apply(&batch) {
            Ok(results) => results,
            // The whole batch failed for a passing reason: all of it tries again.
            Err(PluginError::Returned { error: error @ WitError::Transient(_), .. }) => {
                pending.iter().map(|_| Err(error.clone())).collect()
            }
            Err(e) => return Err(e.into()),
        };
        let mut again = Vec::new();
        for (op, result) in pending.iter().zip(results) {
            let (kind, key) = describe_action(&op.action);
            match result {
                Ok(()) => {
                    match &op.action {
                        Action::Create(_) => {
                            progress.stats.created += 1;
                            created.push(key.to_string());
                        }
                        Action::Update(_) => progress.stats.updated += 1,
                        Action::Upsert(_) => progress.stats.upserted += 1,
                        Action::Delete(_) => {
                            progress.stats.deleted += 1;
                            deleted.push(key.to_string());
                        }
                    }
                    outcomes.record(kind, key, "applied", None)?;
                }
                Err(WitError::Config(reason)) => {
                    outcomes.record(kind, key, "config", Some(&reason))?;
                    return Err(Halt::Refused(format!("the destination reports a config error for `{key}`: {reason}")));
                }
                Err(WitError::Transient(reason)) if attempt < RETRIES => {
                    tracing::debug!(key, attempt, "transient failure, retrying: {reason}");
                    progress.stats.retried += 1;
                    again.push(*op);
                }
                Err(error) => {
                    let rejected = matches!(error, WitError::Rejected(_));
                    if rejected {
                        progress.stats.rejected += 1
                    } else {
                        progress.stats.failed += 1
                    }
                    let reason = describe(&error);
                    outcomes.record(kind, key, if rejected { "rejected" } else { "failed" }, Some(&reason))?;
                    progress.failure(key, format!("{reason} ({})", shown(columns, &op.action)));
                }
            }
        }
        pending = again;
        if !pending.is_empty() {
            std::thread::sleep(backoff(attempt));
            attempt += 1;
        }
    }
    job.state.update_managed_keys(&job.id(), &created, &deleted).map_err(|e| Halt::Refused(e.to_string()))
}

/// 50 ms, 200 ms, 800 ms…, each with up to a quarter more at random, so that
/// many pipelines failing together do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF * 4u32.pow(attempt);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    base + base.mul_f64((nanos % 1000) as f64 / 4000.0)
}

fn describe_action(action: &Action) -> (&'static str, &str) {
    match action {
        Action::Create(row) => ("create", &row.key),
        Action::Update(update) => ("update", &update.row.key),
        Action::Upsert(row) => ("upsert", &row.key),
        Action::Delete(key) => ("delete", key),
    }
}

fn shown(columns: &[String], action: &Action) -> String {
    match action {
        Action::Create(row) | Action::Upsert(row) => row_to_json(columns, row).to_string(),
        Action::Update(update) => row_to_json(columns, &update.row).to_string(),
        Action::Delete(_) => "delete".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_fourfold_with_bounded_jitter() {
        for attempt in 0..3 {
            let base = FIRST_BACKOFF * 4u32.pow(attempt);
            let pause = backoff(attempt);
            assert!(pause >= base && pause <= base + base / 4, "attempt {attempt}: {pause:?}");
        }
    }
}
