//! What an operator can ask of a running daemon, through its admin endpoint:
//! run a pipeline now, pause and resume it, approve a blocked plan, reload,
//! roll a plugin back; and what the daemon knows beyond the state store: the
//! runs in progress and when each pipeline runs next.
//!
//! Every run a daemon starts for a pipeline, scheduled, asked for or an
//! approval, holds that pipeline's run lock, so two never overlap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, mpsc, oneshot};

use super::ReloadAsk;
use crate::runtime::{LiveRun, PipelineStatus, ReloadReport, Runtime, Status, TenantChange};
use crate::state::{Pause, PipelineId, RunId, RunStatus};
use crate::sync::{Observer, SyncEvent, SyncOptions, SyncReport};

/// Why a request to the daemon was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// One pipeline's place in the daemon.
#[derive(Default)]
pub(super) struct Slot {
    /// Wakes the pipeline's schedule loop: a run asked for, a resume, a reload.
    pub wake: Notify,
    /// Set with a wake when a run is asked for now.
    pub requested: AtomicBool,
    /// Set with a wake when a reconciliation is asked for now.
    pub reconcile_requested: AtomicBool,
    /// Held for as long as a run of the pipeline goes on in this daemon.
    pub run_lock: tokio::sync::Mutex<()>,
    /// When the schedule loop runs it next, if it waits for a time.
    pub next_run_at: Mutex<Option<String>>,
}

/// The daemon as the admin endpoint sees it.
pub struct Control {
    pub runtime: Arc<Runtime>,
    reload: mpsc::Sender<ReloadAsk>,
    slots: Mutex<HashMap<PipelineId, Arc<Slot>>>,
    live: Arc<LiveRuns>,
    /// Set once the daemon stops taking work.
    stopping: AtomicBool,
    /// Stops runs at their next batch boundary, on shutdown.
    pub(super) stop: Arc<AtomicBool>,
    /// Renders `/metrics`; `None` where another recorder was installed first.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The hosts sharing the state, and which pipelines this one runs.
    pub fleet: Arc<super::fleet::Fleet>,
}

impl Control {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        reload: mpsc::Sender<ReloadAsk>,
        live: Arc<LiveRuns>,
        stop: Arc<AtomicBool>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Control {
        let fleet = Arc::new(super::fleet::Fleet::new(&runtime.holder));
        Control {
            runtime,
            reload,
            slots: Mutex::default(),
            live,
            stopping: AtomicBool::new(false),
            stop,
            metrics,
            fleet,
        }
    }

    pub(super) fn slot(&self, id: &PipelineId) -> Arc<Slot> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).entry(id.clone()).or_default().clone()
    }

    /// Wakes every schedule loop, to look at its schedule and pause again.
    pub(super) fn wake_all(&self) {
        for slot in self.slots.lock().unwrap_or_else(PoisonError::into_inner).values() {
            slot.wake.notify_one();
        }
    }

    pub(super) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the daemon serves: false once it shuts down.
    pub fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed)
    }

    /// The host's status, with what only the daemon knows: runs in progress
    /// and next run times.
    pub async fn status(self: &Arc<Self>) -> Result<Status, ControlError> {
        let control = self.clone();
        let status = tokio::task::spawn_blocking(move || {
            control.runtime.status(&format!("daemon (pid {})", std::process::id()))
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the status could not be read: {e}")))?;
        Ok(self.with_live(status))
    }

    fn with_live(&self, mut status: Status) -> Status {
        for tenant in &mut status.tenants {
            for pipeline in &mut tenant.pipelines {
                let id = PipelineId::new(&tenant.name, &pipeline.name);
                pipeline.running = self.live.get(&id);
                pipeline.next_run_at = match (&pipeline.running, &pipeline.paused) {
                    (None, None) => self.slot(&id).next_run_at.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                    _ => None,
                };
            }
        }
        status
    }

    /// One pipeline's status.
    pub async fn pipeline(self: &Arc<Self>, id: &PipelineId) -> Result<PipelineStatus, ControlError> {
        self.check_pipeline(id)?;
        let status = self.status().await?;
        status
            .tenants
            .into_iter()
            .filter(|t| t.name == id.tenant)
            .flat_map(|t| t.pipelines)
            .find(|p| p.name == id.pipeline)
            .ok_or_else(|| ControlError::NotFound(format!("no pipeline `{id}`")))
    }

    /// Checks that the daemon serves the pipeline.
    pub fn check_pipeline(&self, id: &PipelineId) -> Result<(), ControlError> {
        let tenant = self
            .runtime
            .tenant(&id.tenant)
            .ok_or_else(|| ControlError::NotFound(format!("no tenant `{}` is loaded", id.tenant)))?;
        if !tenant.config.pipelines.contains_key(&id.pipeline) {
            return Err(ControlError::NotFound(format!("tenant `{}` has no pipeline `{}`", id.tenant, id.pipeline)));
        }
        Ok(())
    }

    fn pause_of(&self, id: &PipelineId) -> Result<Option<Pause>, ControlError> {
        let pauses = self.runtime.state.pauses().map_err(|e| ControlError::Failed(e.to_string()))?;
        Ok(pauses.get(id).cloned())
    }

    /// Asks for a run of the pipeline now. Refused while it is paused or
    /// running.
    pub fn trigger(&self, id: &PipelineId) -> Result<(), ControlError> {
        self.request(id, |slot| &slot.requested)
    }

    /// Asks for a reconciliation of an event pipeline now, between its event
    /// runs. Refused for a diff pipeline, and while it is paused or running.
    pub fn trigger_reconcile(&self, id: &PipelineId) -> Result<(), ControlError> {
        self.check_pipeline(id)?;
        let mode = self.runtime.tenant(&id.tenant).and_then(|t| t.config.pipelines.get(&id.pipeline).map(|p| p.mode));
        if mode != Some(crate::config::Mode::Event) {
            return Err(ControlError::Conflict(format!(
                "{id} is a diff pipeline: every run of it reconciles (ask for a sync)"
            )));
        }
        self.request(id, |slot| &slot.reconcile_requested)
    }

    /// Sets the slot's flag that `flag` picks and wakes its loop, unless the
    /// pipeline is paused or running.
    fn request(&self, id: &PipelineId, flag: impl Fn(&Slot) -> &AtomicBool) -> Result<(), ControlError> {
        self.check_pipeline(id)?;
        if !self.is_ready() {
            return Err(ControlError::Unavailable("the daemon is shutting down".into()));
        }
        if self.pause_of(id)?.is_some() {
            return Err(ControlError::Conflict(format!("{id} is paused: resume it first")));
        }
        if let Some(live) = self.live.get(id) {
            return Err(ControlError::Conflict(format!("{id} is running (run {})", live.run)));
        }
        let slot = self.slot(id);
        flag(&slot).store(true, Ordering::SeqCst);
        slot.wake.notify_one();
        Ok(())
    }

    /// Pauses the pipeline: a run in progress goes on to its end; no other
    /// starts until it is resumed, across restarts.
    pub async fn pause(
        self: &Arc<Self>,
        id: &PipelineId,
        reason: Option<String>,
    ) -> Result<PipelineStatus, ControlError> {
        self.check_pipeline(id)?;
        let pause = Pause { at: crate::state::now(), reason };
        self.runtime.state.set_pause(id, Some(&pause)).map_err(|e| ControlError::Failed(e.to_string()))?;
        tracing::info!(pipeline = %id, "paused by an operator");
        self.slot(id).wake.notify_one();
        self.pipeline(id).await
    }

    pub async fn resume(self: &Arc<Self>, id: &PipelineId) -> Result<PipelineStatus, ControlError> {
        self.check_pipeline(id)?;
        self.runtime.state.set_pause(id, None).map_err(|e| ControlError::Failed(e.to_string()))?;
        tracing::info!(pipeline = %id, "resumed by an operator");
        self.slot(id).wake.notify_one();
        self.pipeline(id).await
    }

    /// Applies the exact plan of blocked run `run`: here if this host runs
    /// its pipeline, else on the host that does (see [`super::approvals`]).
    pub async fn approve(self: &Arc<Self>, run: RunId) -> Result<SyncReport, ControlError> {
        let record = self
            .runtime
            .state
            .run(run)
            .map_err(|e| ControlError::Failed(e.to_string()))?
            .ok_or_else(|| ControlError::NotFound(format!("no run {run}")))?;
        if self.fleet.owns(&record.pipeline) {
            return self.approve_here(run).await;
        }
        let control = self.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = &control.runtime;
            let unclaimed_for = runtime.host.lease_time * 2;
            super::approvals::ask(&*runtime.state, run, &record.pipeline, &runtime.holder, unclaimed_for, &control.stop)
                .map_err(ControlError::Conflict)
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the approval panicked: {e}")))?
    }

    /// Applies the exact plan of blocked run `run` on this host, once no
    /// other run of its pipeline goes on here.
    pub(super) async fn approve_here(self: &Arc<Self>, run: RunId) -> Result<SyncReport, ControlError> {
        let record = self
            .runtime
            .state
            .run(run)
            .map_err(|e| ControlError::Failed(e.to_string()))?
            .ok_or_else(|| ControlError::NotFound(format!("no run {run}")))?;
        if record.status != RunStatus::Blocked {
            return Err(ControlError::Conflict(format!(
                "run {run} is {}, not blocked: only a blocked plan is approved",
                record.status
            )));
        }
        let id = record.pipeline;
        self.check_pipeline(&id)?;
        let slot = self.slot(&id);
        let _running = slot.run_lock.lock().await;
        let control = self.clone();
        tokio::task::spawn_blocking(move || {
            let job = control
                .runtime
                .job(&id, &control.stop, SyncOptions::default())
                .map_err(|e| ControlError::NotFound(e.to_string()))?;
            job.approve(run).map_err(|e| ControlError::Conflict(format!("cannot approve run {run}: {e}")))
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the approval panicked: {e}")))?
    }

    /// Reads the tenant files again, as a file change or SIGHUP would.
    pub async fn reload(&self) -> Result<ReloadReport, ControlError> {
        let gone = || ControlError::Unavailable("the daemon is shutting down".into());
        let (reply, outcome) = oneshot::channel();
        self.reload.send(Some(reply)).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?.map_err(ControlError::Failed)
    }

    /// Returns a plugin of a tenant to the version before.
    pub async fn rollback(&self, tenant: String, plugin: String) -> Result<TenantChange, ControlError> {
        use crate::runtime::RollbackError;
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || runtime.rollback(&tenant, &plugin))
            .await
            .map_err(|e| ControlError::Failed(format!("the rollback panicked: {e}")))?
            .map_err(|e| match e {
                RollbackError::NoTenant(_) | RollbackError::NoPlugin { .. } => ControlError::NotFound(e.to_string()),
                RollbackError::NoEarlierVersion { .. } => ControlError::Conflict(e.to_string()),
                RollbackError::WontStart(_) => ControlError::Failed(e.to_string()),
            })
    }
}

/// The runs in progress, from the engine's events.
#[derive(Default)]
pub struct LiveRuns(Mutex<HashMap<PipelineId, LiveRun>>);

impl LiveRuns {
    pub fn get(&self, id: &PipelineId) -> Option<LiveRun> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// An observer that keeps this up to date.
    pub fn observer(self: &Arc<Self>) -> Observer {
        let live = self.clone();
        Arc::new(move |event| {
            let mut runs = live.0.lock().unwrap_or_else(PoisonError::into_inner);
            match event {
                SyncEvent::RunStarted { pipeline, run, from, .. } => {
                    let started_at = crate::state::now();
                    let fresh = LiveRun { run: *run, started_at, stats: (*from).clone(), done: None, total: None };
                    runs.insert((*pipeline).clone(), fresh);
                }
                SyncEvent::PageRead { pipeline, run: Some(run), stats } => {
                    if let Some(live) = runs.get_mut(*pipeline).filter(|live| live.run == *run) {
                        live.stats = (*stats).clone();
                    }
                }
                SyncEvent::BatchApplied { pipeline, run: Some(run), done, total, stats } => {
                    if let Some(live) = runs.get_mut(*pipeline).filter(|live| live.run == *run) {
                        live.stats = (*stats).clone();
                        live.done = Some(*done);
                        live.total = *total;
                    }
                }
                SyncEvent::RunFinished { pipeline, run, .. }
                    if runs.get(*pipeline).is_some_and(|live| live.run == *run) =>
                {
                    runs.remove(*pipeline);
                }
                _ => {}
            }
        })
    }
}
