//! A diff plan as a person looks at it: its counts and a sample of each kind
//! of operation, with the values it would write. What the admin API and the
//! console show of a blocked plan before an operator approves it.

use std::collections::BTreeMap;

use serde::Serialize;
use synchost_model::{row_to_json, value_to_json};

use super::archive::{Archive, ArchiveError};
use super::{Conflict, Plan};
use crate::state::{RunId, StateStore};

/// How many operations of each kind a summary shows.
pub const SAMPLE: usize = 20;

/// A plan's counts and samples.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanSummary {
    /// The run that made the plan.
    pub run: RunId,
    /// Why a guard blocked it, if one did.
    pub blocked: Option<String>,
    /// The owned fields the plan compares and writes.
    pub columns: Vec<String>,
    pub counts: SummaryCounts,
    pub samples: PlanSamples,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SummaryCounts {
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Rows held back by a uniqueness conflict.
    pub held: u64,
    pub unchanged: u64,
    pub desired_rows: u64,
    pub destination_rows: u64,
}

/// The first [`SAMPLE`] operations of each kind, by key.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanSamples {
    pub creates: Vec<SampleRow>,
    /// Updates carry only the fields that change, with their new values.
    pub updates: Vec<SampleRow>,
    pub deletes: Vec<SampleKey>,
    pub held: Vec<Conflict>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SampleRow {
    pub key: String,
    /// Field name → the value the sync would write.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Updates: the fields whose value changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SampleKey {
    pub key: String,
}

impl PlanSummary {
    pub fn new(run: RunId, blocked: Option<String>, plan: &Plan) -> PlanSummary {
        let fields = |value: serde_json::Value| match value {
            serde_json::Value::Object(fields) => fields.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        let creates = plan
            .creates
            .iter()
            .take(SAMPLE)
            .map(|row| SampleRow {
                key: row.key.clone(),
                fields: fields(row_to_json(&plan.columns, row)),
                changed: vec![],
            })
            .collect();
        let updates = plan
            .updates
            .iter()
            .take(SAMPLE)
            .map(|update| SampleRow {
                key: update.row.key.clone(),
                fields: plan
                    .columns
                    .iter()
                    .zip(&update.row.values)
                    .filter(|(column, _)| update.changed.contains(column))
                    .map(|(column, value)| (column.clone(), value_to_json(value)))
                    .collect(),
                changed: update.changed.clone(),
            })
            .collect();
        PlanSummary {
            run,
            blocked,
            columns: plan.columns.clone(),
            counts: SummaryCounts {
                creates: plan.creates.len() as u64,
                updates: plan.updates.len() as u64,
                deletes: plan.deletes.len() as u64,
                held: plan.held.len() as u64,
                unchanged: plan.unchanged,
                desired_rows: plan.desired_rows,
                destination_rows: plan.destination_rows,
            },
            samples: PlanSamples {
                creates,
                updates,
                deletes: plan.deletes.iter().take(SAMPLE).map(|key| SampleKey { key: key.clone() }).collect(),
                held: plan.held.iter().take(SAMPLE).cloned().collect(),
            },
        }
    }

    /// The summary of the plan kept in run `run`'s archive.
    pub fn of_archived_run(state: &dyn StateStore, run: RunId) -> Result<PlanSummary, ArchiveError> {
        let (meta, plan) = Archive::new(state, run).plan()?;
        Ok(PlanSummary::new(run, meta.blocked, &plan))
    }
}
