//! Diff sync: read the whole source and destination, plan by key, apply.
//!
//! Only the fields the sync owns (those the transforms emit) are compared and
//! written, so fields people add to destination records by hand survive. A
//! failed operation is not carried anywhere: the next run sees the difference
//! again and repairs it.

use std::collections::HashMap;

use super::values::{row_to_json, values_equal};
use super::{Halt, Progress, SyncJob};
use crate::plugin::types::{Action, Operation, OperationBatch, Row, RowUpdate, Value};
use crate::plugin::{DestinationInstance, WitError, describe};
use crate::state::RunId;

/// Rows by key, values in the order of the owned columns.
struct DataSet {
    columns: Vec<String>,
    rows: HashMap<String, Vec<Value>>,
}

/// What a run will do, by key.
struct Plan {
    creates: Vec<Row>,
    updates: Vec<RowUpdate>,
    deletes: Vec<String>,
    unchanged: u64,
}

pub(super) fn run(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<(), Halt> {
    let desired = read_desired(job, progress)?;
    let mut destination = job.destination()?;
    let actual = read_actual(&mut destination, &desired.columns, progress)?;
    let plan = plan(&desired, &actual);
    progress.stats.unchanged = plan.unchanged;

    // An empty desired state most often means a source that broke quietly
    // (an emptied file, a wrong filter): never let it wipe the destination.
    if desired.rows.is_empty() && !plan.deletes.is_empty() {
        return Err(Halt::Refused(format!(
            "the source gave no rows; refusing to delete all {} destination rows",
            plan.deletes.len()
        )));
    }
    apply(job, run, &mut destination, &desired.columns, plan, progress)
}

fn read_desired(job: &SyncJob<'_>, progress: &mut Progress) -> Result<DataSet, Halt> {
    let mut source = job.source()?;
    let mut transforms = job.transforms()?;
    let mut desired = DataSet { columns: Vec::new(), rows: HashMap::new() };
    let mut token: Option<String> = None;
    loop {
        if job.should_stop() {
            return Err(Halt::Stopped);
        }
        let page = source.snapshot(token.as_deref())?;
        progress.stats.read += page.rows.len() as u64;
        let out = transforms.apply(page.columns, page.rows)?;
        if desired.columns.is_empty() {
            desired.columns = out.columns.clone();
        }
        let positions = positions_in(&desired.columns, &out.columns);
        for row in out.rows {
            let values = project(&positions, row.values);
            if desired.rows.insert(row.key.clone(), values).is_some() {
                return Err(Halt::Refused(format!(
                    "key `{}` appears more than once in the desired state; keys must be unique",
                    row.key
                )));
            }
        }
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    progress.stats.desired = desired.rows.len() as u64;
    Ok(desired)
}

fn read_actual(
    destination: &mut DestinationInstance,
    owned: &[String],
    progress: &mut Progress,
) -> Result<DataSet, Halt> {
    let mut actual = DataSet { columns: owned.to_vec(), rows: HashMap::new() };
    let mut token: Option<String> = None;
    loop {
        let page = destination.snapshot(token.as_deref())?;
        let positions = positions_in(owned, &page.columns);
        for row in page.rows {
            actual.rows.insert(row.key, project(&positions, row.values));
        }
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    progress.stats.destination = actual.rows.len() as u64;
    Ok(actual)
}

/// For each wanted column, where it is in `columns` (if anywhere).
fn positions_in(wanted: &[String], columns: &[String]) -> Vec<Option<usize>> {
    wanted.iter().map(|w| columns.iter().position(|c| c == w)).collect()
}

/// Picks the wanted values out of a row; a missing column is null.
fn project(positions: &[Option<usize>], mut values: Vec<Value>) -> Vec<Value> {
    positions.iter().map(|p| p.map_or(Value::Null, |i| std::mem::replace(&mut values[i], Value::Null))).collect()
}

fn plan(desired: &DataSet, actual: &DataSet) -> Plan {
    let mut plan = Plan { creates: Vec::new(), updates: Vec::new(), deletes: Vec::new(), unchanged: 0 };
    let mut keys: Vec<&String> = desired.rows.keys().collect();
    // Sorted, so that runs over the same data apply in the same order.
    keys.sort();
    for key in keys {
        let wanted = &desired.rows[key];
        let row = || Row { key: key.clone(), values: wanted.clone() };
        match actual.rows.get(key) {
            None => plan.creates.push(row()),
            Some(current) => {
                let changed: Vec<String> = desired
                    .columns
                    .iter()
                    .zip(wanted.iter().zip(current))
                    .filter(|(_, (w, c))| !values_equal(w, c))
                    .map(|(name, _)| name.clone())
                    .collect();
                if changed.is_empty() {
                    plan.unchanged += 1;
                } else {
                    plan.updates.push(RowUpdate { row: row(), changed });
                }
            }
        }
    }
    let mut deletes: Vec<String> = actual.rows.keys().filter(|k| !desired.rows.contains_key(*k)).cloned().collect();
    deletes.sort();
    plan.deletes = deletes;
    plan
}

fn apply(
    job: &SyncJob<'_>,
    run: RunId,
    destination: &mut DestinationInstance,
    columns: &[String],
    plan: Plan,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let operation = |action: Action, key: &str| Operation { idempotency_key: format!("run-{run}/{key}"), action };
    let operations: Vec<Operation> = plan
        .creates
        .into_iter()
        .map(|row| {
            let key = row.key.clone();
            operation(Action::Create(row), &key)
        })
        .chain(plan.updates.into_iter().map(|update| {
            let key = update.row.key.clone();
            operation(Action::Update(update), &key)
        }))
        .chain(plan.deletes.into_iter().map(|key| operation(Action::Delete(key.clone()), &key)))
        .collect();

    let mut rest = operations;
    while !rest.is_empty() {
        if job.should_stop() {
            return Err(Halt::Stopped);
        }
        let tail = rest.split_off(rest.len().min(job.pipeline.apply_batch));
        let batch = OperationBatch { columns: columns.to_vec(), operations: std::mem::replace(&mut rest, tail) };
        let outcomes = destination.apply(&batch)?;
        for (op, outcome) in batch.operations.iter().zip(outcomes) {
            match (outcome, &op.action) {
                (Ok(()), Action::Create(_)) => progress.stats.created += 1,
                (Ok(()), Action::Update(_)) => progress.stats.updated += 1,
                (Ok(()), Action::Upsert(_)) => progress.stats.upserted += 1,
                (Ok(()), Action::Delete(_)) => progress.stats.deleted += 1,
                (Err(WitError::Config(reason)), _) => {
                    return Err(Halt::Refused(format!(
                        "the destination reports a config error for `{}`: {reason}",
                        action_key(&op.action)
                    )));
                }
                (Err(error), action) => {
                    if matches!(error, WitError::Rejected(_)) {
                        progress.stats.rejected += 1;
                    } else {
                        progress.stats.failed += 1;
                    }
                    let shown = match action {
                        Action::Create(row) | Action::Upsert(row) => row_to_json(columns, row).to_string(),
                        Action::Update(u) => row_to_json(columns, &u.row).to_string(),
                        Action::Delete(_) => "delete".to_string(),
                    };
                    progress.failure(action_key(action), format!("{} ({shown})", describe(&error)));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn action_key(action: &Action) -> &str {
    match action {
        Action::Create(row) | Action::Upsert(row) => &row.key,
        Action::Update(update) => &update.row.key,
        Action::Delete(key) => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(columns: &[&str], rows: &[(&str, &[&str])]) -> DataSet {
        DataSet {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| Value::Text(v.to_string())).collect()))
                .collect(),
        }
    }

    #[test]
    fn plans_creates_updates_with_changed_fields_deletes_and_unchanged() {
        let desired = data(&["name", "grade"], &[("1", &["ann", "5"]), ("2", &["bob", "6"]), ("3", &["cy", "7"])]);
        let actual = data(&["name", "grade"], &[("1", &["ann", "5"]), ("2", &["bob", "5"]), ("9", &["old", "1"])]);
        let plan = plan(&desired, &actual);
        assert_eq!(plan.creates.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), vec!["3"]);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.updates[0].row.key, "2");
        assert_eq!(plan.updates[0].changed, vec!["grade".to_string()]);
        assert_eq!(plan.deletes, vec!["9".to_string()]);
        assert_eq!(plan.unchanged, 1);
    }

    #[test]
    fn projection_fills_missing_columns_with_null() {
        let positions = positions_in(&["a".to_string(), "b".to_string()], &["b".to_string(), "extra".to_string()]);
        let values = project(&positions, vec![Value::Integer(2), Value::Integer(99)]);
        assert_eq!(values, vec![Value::Null, Value::Integer(2)]);
    }
}
