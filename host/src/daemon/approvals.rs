//! Approvals asked on one host and applied on the host that runs the
//! pipeline.
//!
//! In a fleet, the host an operator asks (`synchost approve`, or the admin
//! API of any daemon) is often not the one that runs the pipeline, and may
//! not reach its destination at all. The request goes through the state
//! store instead: the asking side records it and waits ([`ask`]); the daemon
//! that owns the pipeline takes it at its next look ([`serve`], every sixth
//! of `lease_time`), applies the plan as a local approval would (under the
//! pipeline's lease, after checking that the destination is what the plan
//! was made against) and records the answer. A host that took a request and
//! died leaves it to the pipeline's next owner. The rows stay, as a record
//! of who asked, which host applied and how it went.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::control::Control;
use crate::state::{PipelineId, RunId, StateStore};
use crate::sync::SyncReport;

/// How an approval went, as the applying host records it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalAnswer {
    Applied(Box<SyncReport>),
    Refused(String),
}

/// How often the asking side looks for the answer.
const POLL: Duration = Duration::from_millis(200);

/// Asks the host that runs `pipeline` to apply the blocked plan of `run`,
/// and waits for its answer: the report of the apply, or why it was
/// refused, as a whole sentence. If no live host takes the request within
/// `unclaimed_for`, the request is closed and refused, naming the hosts that
/// were live. `stop` (Ctrl-C) stops the wait, not an apply under way.
pub fn ask(
    state: &dyn StateStore,
    run: RunId,
    pipeline: &PipelineId,
    by: &str,
    unclaimed_for: Duration,
    stop: &AtomicBool,
) -> Result<SyncReport, String> {
    let waited = || -> Result<SyncReport, Refusal> {
        state.request_approval(run, pipeline, by)?;
        tracing::info!(pipeline = %pipeline, "asked the host that runs {pipeline} to apply run {run}'s plan");
        let asked = Instant::now();
        loop {
            let request = state.approval(run)?.ok_or_else(|| Refusal::Here("its approval request is gone".into()))?;
            if let Some(answer) = &request.answer {
                return match serde_json::from_str(answer) {
                    Ok(ApprovalAnswer::Applied(report)) => Ok(*report),
                    Ok(ApprovalAnswer::Refused(why)) => Err(Refusal::Remote(why)),
                    Err(e) => Err(Refusal::Here(format!("the answer is unreadable ({e}): {answer}"))),
                };
            }
            if request.claimed_by.is_none() && asked.elapsed() > unclaimed_for {
                let live = state.hosts()?;
                let ids: Vec<&str> = live.iter().map(|h| h.id.as_str()).collect();
                let why = format!(
                    "no host took the approval within {}: live hosts {}; is tenant `{}` deployed on them?",
                    humantime::format_duration(unclaimed_for),
                    if ids.is_empty() { "none".to_string() } else { ids.join(", ") },
                    pipeline.tenant
                );
                let closed = serde_json::to_string(&ApprovalAnswer::Refused(why.clone())).expect("answers serialise");
                state.answer_approval(run, &closed)?;
                return Err(Refusal::Here(why));
            }
            if stop.load(Ordering::Relaxed) {
                return Err(Refusal::Here(format!(
                    "stopped waiting; the approval goes on if a host has taken it (`synchost runs show {run}`)"
                )));
            }
            std::thread::sleep(POLL);
        }
    };
    waited().map_err(|refusal| match refusal {
        Refusal::Remote(why) => why,
        Refusal::Here(why) => format!("cannot approve run {run}: {why}"),
    })
}

/// Why an approval asked for did not go through: an answer from the host
/// that took it (already a whole sentence), or something on this side.
enum Refusal {
    Remote(String),
    Here(String),
}

impl<E: std::fmt::Display> From<E> for Refusal {
    fn from(error: E) -> Refusal {
        Refusal::Here(error.to_string())
    }
}

/// Takes and applies the approvals asked for pipelines this host owns, every
/// sixth of `lease_time`, until `shutdown`.
pub(super) async fn serve(control: Arc<Control>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = control.runtime.host.lease_time / 6;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
        let state = control.runtime.state.clone();
        let requests = match tokio::task::spawn_blocking(move || state.approval_requests()).await {
            Ok(Ok(requests)) => requests,
            Ok(Err(e)) => {
                tracing::warn!("cannot read the approval requests: {e}");
                continue;
            }
            Err(_) => continue,
        };
        for request in requests.into_iter().filter(|r| control.fleet.owns(&r.pipeline)) {
            let (state, me, run) = (control.runtime.state.clone(), control.runtime.holder.clone(), request.run);
            match tokio::task::spawn_blocking(move || state.claim_approval(run, &me)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Err(_) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(pipeline = %request.pipeline, "cannot take run {run}'s approval: {e}");
                    continue;
                }
            }
            tracing::info!(pipeline = %request.pipeline, "applying run {run}'s plan, as {} asked", request.requested_by);
            tokio::spawn(apply(control.clone(), run));
        }
    }
}

/// Applies one taken request and records the answer.
async fn apply(control: Arc<Control>, run: RunId) {
    let answer = match control.approve_here(run).await {
        Ok(report) => ApprovalAnswer::Applied(Box::new(report)),
        Err(e) => ApprovalAnswer::Refused(e.to_string()),
    };
    let answer = serde_json::to_string(&answer).expect("answers serialise");
    let state = control.runtime.state.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || state.answer_approval(run, &answer)).await {
        tracing::error!("run {run}'s approval went through, but its answer cannot be recorded: {e}");
    }
}
