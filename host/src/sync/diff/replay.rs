//! Replaying a diff run: the plan recomputed from the source and destination
//! the run archived, through the current transforms or others given, and set
//! beside the plan the run recorded.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::archive::{self, Archive};
use super::plan::{DestinationIndex, HashedRows, Plan, Planner};
use crate::config::Deletes;
use crate::state::RunId;
use crate::sync::values::encode_value;
use crate::sync::{Halt, SyncJob};

/// How a replayed plan compares with the recorded one.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub run: RunId,
    /// Transform name → sha256 of the version the replay used.
    pub transforms: BTreeMap<String, String>,
    pub recorded: PlanCounts,
    pub replayed: PlanCounts,
    /// Keys whose operation differs, the first few.
    pub differences: Vec<ReplayDifference>,
    pub differing_keys: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PlanCounts {
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub unchanged: u64,
    pub held: u64,
}

impl From<&Plan> for PlanCounts {
    fn from(plan: &Plan) -> Self {
        PlanCounts {
            creates: plan.creates.len() as u64,
            updates: plan.updates.len() as u64,
            deletes: plan.deletes.len() as u64,
            unchanged: plan.unchanged,
            held: plan.held.len() as u64,
        }
    }
}

/// One key planned differently.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayDifference {
    pub key: String,
    /// The operation as recorded, and as replayed (`none` for no operation).
    pub recorded: String,
    pub replayed: String,
}

const SHOWN_DIFFERENCES: usize = 20;

pub(crate) fn replay(job: &SyncJob<'_>, run: RunId) -> Result<ReplayReport, Halt> {
    let archived = Archive::new(job.state, run);
    let (meta, recorded) = archived.plan()?;
    let policy = &job.pipeline.diff;

    let mut transforms = job.transforms()?;
    let mut transformed = Vec::new();
    for page in archived.pages(archive::SOURCE)? {
        transformed.push(transforms.apply(page)?.table);
    }
    let owned = match (&policy.owned_fields, transformed.first()) {
        (Some(owned), _) => owned.clone(),
        (None, Some(first)) => first.columns.clone(),
        (None, None) => recorded.columns.clone(),
    };
    let mut index = DestinationIndex::new(&owned);
    for page in archived.pages(archive::DESTINATION)? {
        index.add_page(&page)?;
    }
    let mut planner = Planner::new(index, policy)?;
    for out in transformed {
        planner.add(&HashedRows::new(&owned, out)?)?;
    }
    // Which records the pipeline managed then is not archived: the ones the
    // recorded plan deleted stand in for them.
    let managed = (policy.deletes == Deletes::Managed).then(|| recorded.deletes.iter().cloned().collect());
    let mut replayed = planner.finish(policy, managed.as_ref());
    super::reconcile::leave_out(&mut replayed, &meta.left_to_stream);

    let (before, after) = (signatures(&recorded), signatures(&replayed));
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut differences = Vec::new();
    let mut differing_keys = 0;
    for key in keys {
        let (was, now) = (before.get(key), after.get(key));
        if was != now {
            differing_keys += 1;
            if differences.len() < SHOWN_DIFFERENCES {
                differences.push(ReplayDifference {
                    key: key.clone(),
                    recorded: was.cloned().unwrap_or_else(|| "none".into()),
                    replayed: now.cloned().unwrap_or_else(|| "none".into()),
                });
            }
        }
    }
    let transforms =
        job.pipeline.transforms.iter().map(|name| (name.clone(), job.plugins[name].digest.clone())).collect();
    Ok(ReplayReport {
        run,
        transforms,
        recorded: PlanCounts::from(&recorded),
        replayed: PlanCounts::from(&replayed),
        differences,
        differing_keys,
    })
}

/// Key → a text that is equal exactly when the operations are.
fn signatures(plan: &Plan) -> BTreeMap<String, String> {
    let fields = |values: &[synchost_model::Value]| {
        let shown: serde_json::Map<String, serde_json::Value> =
            plan.columns.iter().zip(values).map(|(c, v)| (c.clone(), encode_value(v.into()))).collect();
        serde_json::Value::Object(shown).to_string()
    };
    let mut out = BTreeMap::new();
    for row in &plan.creates {
        out.insert(row.key.clone(), format!("create {}", fields(&row.values)));
    }
    for update in &plan.updates {
        out.insert(
            update.row.key.clone(),
            format!("update {} changing {}", fields(&update.row.values), update.changed.join(",")),
        );
    }
    for key in &plan.deletes {
        out.insert(key.clone(), "delete".into());
    }
    for conflict in &plan.held {
        out.insert(conflict.key.clone(), format!("held ({} collides with {})", conflict.field, conflict.other));
    }
    out
}
