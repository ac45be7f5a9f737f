//! Reconciling an event pipeline: a diff run that repairs what its event
//! stream missed (an event lost upstream, a change made while the pipeline
//! was paused, a hand edit of an owned field) without ever writing an older
//! state of a key over a newer one.
//!
//! The watermark method (as DBLog and Debezium's incremental snapshots use
//! it), run under the pipeline's lease, so no event batch applies meanwhile:
//! 1. the committed cursor is the low watermark;
//! 2. the source snapshot (through the transforms) and the destination
//!    snapshot are read and planned with the pipeline's diff policy, exactly
//!    as a diff run would;
//! 3. every event after the low watermark, up to the stream's head, is read
//!    and transformed but not applied: the high watermark;
//! 4. every key those events touch, or that waits in the retry queue or the
//!    dead letters, is left out of the repair: the stream brings it to its
//!    newest state, and a snapshot value read while it changed may be older;
//! 5. the rest is repaired through the guards, archived like a diff run;
//! 6. the cursor stays at the low watermark, so the next event run applies
//!    the events read in step 3.
//!
//! A key left out had no event between the watermarks, so its value did not
//! change while the snapshots were read: the value planned is its newest. A
//! reconciliation killed half-way has written only such values, and the next
//! one plans what is left.

use std::collections::{BTreeMap, HashSet};

use super::{Plan, Recorder, compute_plan, guard_and_apply, prune_archives};
use crate::plugin::DestinationInstance;
use crate::state::{DifferentKey, Drift, DriftSamples, RunId};
use crate::sync::event::{StreamAhead, read_ahead};
use crate::sync::{Halt, Progress, SyncJob};

/// How many keys of each kind a drift report names.
const SAMPLES: usize = 10;

/// What a reconciliation found, before it repairs anything.
struct Survey {
    /// What it would apply: the drift, less the keys left to the stream.
    repair: Plan,
    drift: Drift,
    /// The drifted keys left to the stream.
    left_to_stream: Vec<String>,
    destination: DestinationInstance,
}

/// Steps 1 to 4 of the method: the drift, and the repair it allows.
fn survey(job: &SyncJob<'_>, recorder: Option<&mut Recorder>, progress: &mut Progress) -> Result<Survey, Halt> {
    let id = job.id();
    let low = job.state.cursor(&id)?;
    let (mut repair, destination) = compute_plan(job, recorder, progress)?;
    let started = std::time::Instant::now();
    let StreamAhead { keys: mut in_flight, events, head } = read_ahead(job, low.as_deref(), progress)?;
    progress.timing("read_ahead", started);
    in_flight.extend(job.state.retry_queue(&id)?.into_iter().map(|item| item.key));
    let lettered = job.state.dead_letters(&id)?.into_iter().filter(|l| l.superseded_by.is_none());
    in_flight.extend(lettered.map(|letter| letter.key));
    let mut drift = drift_of(&repair);
    let left = repair.split_off(|key| in_flight.contains(key));
    let left_to_stream: Vec<String> = left
        .creates
        .iter()
        .map(|row| &row.key)
        .chain(left.updates.iter().map(|update| &update.row.key))
        .chain(&left.deletes)
        .cloned()
        .collect();
    drift.left_to_stream = left_to_stream.len() as u64;
    drift.samples.left_to_stream = left_to_stream.iter().take(SAMPLES).cloned().collect();
    drift.low_watermark = low;
    drift.high_watermark = head;
    drift.events_between = events;
    drift.keys_in_flight = in_flight.len() as u64;
    Ok(Survey { repair, drift, left_to_stream, destination })
}

/// The drift a full plan shows, by kind and by field.
fn drift_of(plan: &Plan) -> Drift {
    let mut fields = BTreeMap::new();
    for update in &plan.updates {
        for field in &update.changed {
            *fields.entry(field.clone()).or_insert(0) += 1;
        }
    }
    Drift {
        missing: plan.creates.len() as u64,
        extra: plan.deletes.len() as u64,
        different: plan.updates.len() as u64,
        fields,
        samples: DriftSamples {
            missing: plan.creates.iter().take(SAMPLES).map(|row| row.key.clone()).collect(),
            extra: plan.deletes.iter().take(SAMPLES).cloned().collect(),
            different: plan
                .updates
                .iter()
                .take(SAMPLES)
                .map(|update| DifferentKey { key: update.row.key.clone(), fields: update.changed.clone() })
                .collect(),
            left_to_stream: Vec::new(),
        },
        ..Drift::default()
    }
}

/// A reconcile run: survey, then repair through the guards; the streams,
/// the repair and the keys left to the stream kept in the run archive.
pub(in crate::sync) fn run(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<(), Halt> {
    prune_archives(job, run);
    let dir = job.staging_dir(run);
    let mut recorder = Recorder::create(&dir)?;
    let Survey { repair, drift, left_to_stream, destination } = survey(job, Some(&mut recorder), progress)?;
    recorder.finish()?;
    progress.stats.drift = Some(drift);
    let outcome = guard_and_apply(job, run, &dir, repair, destination, left_to_stream, progress);
    note_repaired(progress);
    outcome
}

/// What `synchost reconcile --plan` shows: the drift and the repair, with
/// nothing written anywhere.
pub struct ReconcilePreview {
    pub repair: Plan,
    pub drift: Drift,
    pub blocked: Option<String>,
}

pub(in crate::sync) fn preview(job: &SyncJob<'_>, progress: &mut Progress) -> Result<ReconcilePreview, Halt> {
    let Survey { repair, drift, .. } = survey(job, None, progress)?;
    let blocked = repair.blocked_reason(&job.pipeline.diff);
    Ok(ReconcilePreview { repair, drift, blocked })
}

/// Approving a blocked reconciliation: the stream has moved on since it
/// planned, so its plan may no longer be safe to apply as it is. This
/// reconciles again, and applies the new repair under the approval as long
/// as it writes and deletes no more than the approved plan would have.
pub(in crate::sync) struct Approvable {
    survey: Survey,
}

/// Surveys again for the approval of blocked run `run`, refusing when the
/// drift has grown past the approved plan: the run is left as it was.
pub(in crate::sync) fn approvable(job: &SyncJob<'_>, run: RunId, progress: &mut Progress) -> Result<Approvable, Halt> {
    let (_, approved) = super::Archive::new(job.state, run).plan()?;
    let survey = survey(job, None, progress)?;
    let (writes, deletes) = (survey.repair.writes(), survey.repair.deletes.len() as u64);
    if writes > approved.writes() || deletes > approved.deletes.len() as u64 {
        return Err(Halt::Refused(format!(
            "the drift grew since run {run} planned: its plan wrote {} and deleted {}, a repair now would write \
             {writes} and delete {deletes}; run `synchost reconcile {} --plan` to look again",
            approved.writes(),
            approved.deletes.len(),
            job.id()
        )));
    }
    Ok(Approvable { survey })
}

pub(in crate::sync) fn approve(
    job: &SyncJob<'_>,
    run: RunId,
    Approvable { survey }: Approvable,
    progress: &mut Progress,
) -> Result<(), Halt> {
    let Survey { repair, drift, destination, .. } = survey;
    progress.stats.drift = Some(drift);
    // The new repair, applied as an approved diff plan is.
    let outcome = super::approve(job, run, super::Approvable { plan: repair, destination }, progress);
    note_repaired(progress);
    outcome
}

/// Counts what the apply did as the drift it repaired.
fn note_repaired(progress: &mut Progress) {
    let stats = &mut progress.stats;
    let repaired = stats.created + stats.updated + stats.deleted;
    if let Some(drift) = stats.drift.as_mut() {
        drift.repaired = repaired;
    }
}

/// Keys left to the stream, for a replay of a reconcile run: the replayed
/// plan leaves them out as the run did.
pub(super) fn leave_out(plan: &mut Plan, left_to_stream: &[String]) {
    if !left_to_stream.is_empty() {
        let left: HashSet<&str> = left_to_stream.iter().map(String::as_str).collect();
        plan.split_off(|key| left.contains(key));
    }
}
