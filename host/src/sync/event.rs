//! Event sync: read events after the stored cursor, transform them, apply them
//! in order, and commit the new cursor with the batch's dead letters in one
//! transaction.
//!
//! A crash before the commit means the batch is read again from the old
//! cursor; every operation carries an idempotency key made of the pipeline, the
//! event's position and the key, so a destination can tell a redelivery.

use super::diff::action_key;
use super::values::row_to_json;
use super::{Halt, Progress, SyncJob};
use crate::plugin::types::{Action, Change, EventBatch, Operation, OperationBatch, Row};
use crate::plugin::{WitError, describe};
use crate::state::{NewDeadLetter, RunId};

pub(super) fn run(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<(), Halt> {
    let id = job.id();
    let mut source = job.source()?;
    let mut transforms = job.transforms()?;
    let mut destination = job.destination()?;
    let mut cursor = job.state.cursor(&id).map_err(|e| Halt::Refused(e.to_string()))?;
    progress.stats.cursor_before = cursor.clone();
    progress.stats.cursor_after = cursor.clone();

    loop {
        if job.options.max_batches.is_some_and(|max| progress.stats.batches >= max) {
            return Ok(());
        }
        if job.should_stop() {
            return Err(Halt::Stopped);
        }
        let batch = source.events(cursor.as_deref(), job.pipeline.max_batch)?;
        if batch.events.is_empty() {
            // Caught up. A cursor that moved past lines with no events (blank
            // lines, say) is still worth keeping.
            if cursor.as_deref() != Some(batch.cursor.as_str()) {
                commit(job, run, &batch.cursor, &[], progress)?;
            }
            return Ok(());
        }
        progress.stats.read += batch.events.len() as u64;
        let next_cursor = batch.cursor.clone();
        let (columns, operations) = operations_for(job, &mut transforms, batch)?;

        let mut dead_letters = Vec::new();
        for chunk in operations.chunks(job.pipeline.apply_batch) {
            let operations = chunk.iter().map(|e| e.operation.clone()).collect();
            let batch = OperationBatch { columns: columns.clone(), operations };
            let outcomes = destination.apply(&batch)?;
            for (EventOperation { position, operation: op }, outcome) in chunk.iter().zip(outcomes) {
                match outcome {
                    Ok(()) => match op.action {
                        Action::Delete(_) => progress.stats.deleted += 1,
                        _ => progress.stats.upserted += 1,
                    },
                    Err(WitError::Rejected(reason)) => {
                        progress.stats.rejected += 1;
                        progress.failure(action_key(&op.action), reason.clone());
                        dead_letters.push(NewDeadLetter {
                            position: position.clone(),
                            key: action_key(&op.action).to_string(),
                            operation: operation_json(&columns, &op.action),
                            reason,
                        });
                    }
                    // Transient or config: the cursor stays where it is, so the
                    // whole batch is read again by the next run (operations
                    // already applied are recognised by their idempotency key).
                    Err(error) => {
                        progress.stats.failed += 1;
                        progress.failure(action_key(&op.action), describe(&error));
                        return Err(Halt::Refused(format!(
                            "the destination could not apply `{}` ({}); the cursor stays at {}",
                            action_key(&op.action),
                            describe(&error),
                            cursor.as_deref().unwrap_or("the start")
                        )));
                    }
                }
            }
        }
        commit(job, run, &next_cursor, &dead_letters, progress)?;
        cursor = Some(next_cursor);
    }
}

fn commit(
    job: &SyncJob<'_>,
    run: RunId,
    cursor: &str,
    dead_letters: &[NewDeadLetter],
    progress: &mut Progress,
) -> Result<(), Halt> {
    progress.stats.batches += 1;
    progress.stats.cursor_after = Some(cursor.to_string());
    job.state
        .commit_batch(run, &job.id(), cursor, dead_letters, &progress.stats)
        .map_err(|e| Halt::Refused(e.to_string()))
}

/// An operation with the source position of the event it came from.
struct EventOperation {
    position: String,
    operation: Operation,
}

/// The operations for a batch of events, in event order, and the columns of
/// their rows: an upsert becomes the upserts of the rows the transforms made
/// of it; a delete passes through by key.
fn operations_for(
    job: &SyncJob<'_>,
    transforms: &mut super::TransformChain,
    batch: EventBatch,
) -> Result<(Vec<String>, Vec<EventOperation>), Halt> {
    let mut upsert_rows: Vec<Row> = Vec::new();
    let mut upsert_events: Vec<usize> = Vec::new();
    for (i, event) in batch.events.iter().enumerate() {
        if let Change::Upsert(row) = &event.change {
            upsert_rows.push(row.clone());
            upsert_events.push(i);
        }
    }
    let out = transforms.apply(batch.columns, upsert_rows)?;

    // Rows out, grouped by the event they came from, in order.
    let mut rows_of_event: Vec<Vec<Row>> = vec![Vec::new(); batch.events.len()];
    for (row, origin) in out.rows.into_iter().zip(out.origins) {
        rows_of_event[upsert_events[origin as usize]].push(row);
    }
    let id = job.id();
    let mut operations = Vec::with_capacity(batch.events.len());
    for (event, rows) in batch.events.into_iter().zip(rows_of_event) {
        let idempotency_key = |key: &str| format!("{id}@{}#{key}", event.position);
        match event.change {
            Change::Upsert(_) => {
                for row in rows {
                    let operation =
                        Operation { idempotency_key: idempotency_key(&row.key), action: Action::Upsert(row) };
                    operations.push(EventOperation { position: event.position.clone(), operation });
                }
            }
            Change::Delete(key) => {
                let operation = Operation { idempotency_key: idempotency_key(&key), action: Action::Delete(key) };
                operations.push(EventOperation { position: event.position.clone(), operation });
            }
        }
    }
    Ok((out.columns, operations))
}

fn operation_json(columns: &[String], action: &Action) -> serde_json::Value {
    match action {
        Action::Delete(key) => serde_json::json!({ "delete": key }),
        Action::Create(row) | Action::Upsert(row) => {
            serde_json::json!({ "upsert": { "key": row.key, "fields": row_to_json(columns, row) } })
        }
        Action::Update(update) => serde_json::json!({
            "update": { "key": update.row.key, "fields": row_to_json(columns, &update.row), "changed": update.changed }
        }),
    }
}
