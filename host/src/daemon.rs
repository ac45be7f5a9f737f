//! `synchost run`: every scheduled pipeline on its schedule until Ctrl-C or
//! SIGTERM, then a clean shutdown.
//!
//! Shutdown sets a flag that every sync checks between batches: a diff sync
//! stops before its next apply batch (the next run repairs the rest), an event
//! sync after committing the batch in hand. Nothing committed is lost and
//! nothing uncommitted is marked done. A second signal exits at once; that too
//! loses nothing, since what was not committed is read again.
//!
//! A run that ends *paused* (an event sync that met a config error: a bad
//! plugin config, a missing directory, a malformed event) is not scheduled
//! again until its tenant changes: polling would only repeat the error, and
//! the cursor has not moved, so nothing is lost by waiting. The pause is
//! logged as an error with its reason; once the operator fixes the tenant
//! file (a reload), or touches it after fixing what it points at, the
//! pipeline resumes from its cursor.
//!
//! Operators steer it through its admin endpoint ([`crate::admin`]: HTTP on
//! `[admin] bind` and on a Unix socket in the state directory), which asks
//! [`Control`] to run a pipeline now, pause or resume it (a pause is stored and
//! outlives the daemon), approve a blocked plan, reload or roll back.
//!
//! Hot swap: the daemon reloads when a tenant or plugin file changes, on
//! SIGHUP, and when `synchost reload` asks through the admin endpoint. A reload checks each changed tenant in full before swapping it
//! in (see [`crate::runtime::Runtime::reload`]); runs in flight finish on the
//! version they started with, and event syncs hand over at their next batch
//! boundary. Pipelines that appear start on their schedule; pipelines that
//! disappear stop after their current run.

pub mod approvals;
mod control;
mod fleet;
mod watch;

pub use control::{Control, ControlError, LiveRuns};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch as signal_watch};
use tokio::task::JoinSet;

use crate::config::Schedule;
use crate::runtime::{ReloadReport, Runtime};
use crate::state::{PipelineId, RunStatus};
use crate::sync::{SyncError, SyncEvent, SyncOptions, SyncReport, events};

/// Why the daemon could not run, or stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// Runs the daemon on its own tokio runtime until a shutdown signal.
pub fn run(mut runtime: Runtime) -> Result<(), DaemonError> {
    let metrics = crate::metrics::install();
    let live = Arc::new(LiveRuns::default());
    // The runs in progress hear each event before the metrics do, so that a
    // scrape never counts more than a run's live figures show.
    runtime.observer = events::all(vec![live.observer(), crate::metrics::observer(), Arc::new(log_event)]);
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(DaemonError::Runtime)?;
    let served = tokio.block_on(serve(Arc::new(runtime), live, metrics));
    // Every run has stopped by now; what may still be on a blocking thread
    // is a reload's compile, which must not hold up the exit.
    tokio.shutdown_background();
    served
}

/// A reload asked for, with where to send its outcome (if anyone waits).
pub(crate) type ReloadAsk = Option<oneshot::Sender<Result<ReloadReport, String>>>;

/// The pipelines with a loop, so that a reload starts only new ones.
struct Scheduler {
    control: Arc<Control>,
    running: Arc<Mutex<HashSet<PipelineId>>>,
    loops: JoinSet<()>,
    shutdown: signal_watch::Receiver<bool>,
}

impl Scheduler {
    /// Starts a loop for every pipeline that has none: scheduled pipelines
    /// run on their schedule, manual ones when an operator asks.
    fn start_new(&mut self) {
        for tenant in self.control.runtime.tenants() {
            for pipeline in tenant.config.pipelines.values() {
                let id = PipelineId::new(&tenant.config.name, &pipeline.name);
                if !self.running.lock().expect("pipeline set poisoned").insert(id.clone()) {
                    continue;
                }
                let running = self.running.clone();
                let (control, shutdown) = (self.control.clone(), self.shutdown.clone());
                self.loops.spawn(async move {
                    schedule_loop(control, id.clone(), shutdown).await;
                    running.lock().expect("pipeline set poisoned").remove(&id);
                });
            }
        }
    }

    /// How many pipelines run on a schedule.
    fn scheduled(&self) -> usize {
        let tenants = self.control.runtime.tenants();
        tenants
            .iter()
            .flat_map(|t| t.config.pipelines.values())
            .filter(|p| !matches!(p.schedule, Schedule::Manual))
            .count()
    }
}

async fn serve(
    runtime: Arc<Runtime>,
    live: Arc<LiveRuns>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<(), DaemonError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (shutdown, shutdown_seen) = signal_watch::channel(false);
    // Reload triggers: file changes, SIGHUP, and the admin endpoint.
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadAsk>(1);
    let control = Arc::new(Control::new(runtime.clone(), reload_tx, live, stop.clone(), metrics));
    // Learn the other hosts before taking any work, so that a host joining a
    // fleet starts on its share, not on everything.
    let fleet = control.fleet.clone();
    let first_beat = (fleet.clone(), runtime.clone());
    let _ = tokio::task::spawn_blocking(move || first_beat.0.beat(&first_beat.1)).await;
    let beats = tokio::spawn(fleet.beat_until(runtime.clone(), shutdown_seen.clone()));
    let approvals = tokio::spawn(approvals::serve(control.clone(), shutdown_seen.clone()));
    let mut scheduler =
        Scheduler { control: control.clone(), running: Arc::default(), loops: JoinSet::new(), shutdown: shutdown_seen };
    scheduler.start_new();
    match scheduler.scheduled() {
        0 => tracing::warn!(
            "no pipeline has a schedule; waiting for requests and signals (run one with `synchost sync` or the API)"
        ),
        pipelines => tracing::info!(pipelines, "synchost is running"),
    }

    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
    let _watcher = watch::watch(&[runtime.host.tenants_dir.as_path(), runtime.host.plugin_dir.as_path()], changed_tx)
        .inspect_err(|e| {
            tracing::warn!("not watching the config files ({e}); reload with SIGHUP or `synchost reload`")
        });
    let admin = crate::admin::serve(control.clone());
    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let terminate = wait_for_signal();
    tokio::pin!(terminate);
    // Reloads run on blocking threads (they compile), and overlap: a file
    // that changes while a slow tenant is checked is reloaded meanwhile, and
    // signals are answered at once. A reload cut short by a shutdown swaps
    // nothing more in; the next start checks the files again.
    let mut reloads: tokio::task::JoinSet<(ReloadAsk, Result<ReloadReport, String>)> = tokio::task::JoinSet::new();
    let start_reload = |reloads: &mut tokio::task::JoinSet<_>, ask: ReloadAsk| {
        tracing::info!("reloading: checking the tenant files");
        let reloading = runtime.clone();
        reloads.spawn_blocking(move || (ask, reloading.reload().map_err(|e| e.to_string())));
    };
    // A watched change starts a reload once the files have been quiet for
    // `watch_debounce` (an editor's write-rename-chmod, or a plugin copied in
    // several writes, makes one reload). The wait is a deadline, not a pause
    // of this loop: signals and `synchost reload` are answered meanwhile.
    let debounce = runtime.host.watch_debounce;
    let quiet = tokio::time::sleep(debounce);
    tokio::pin!(quiet);
    let mut change_pending = false;
    loop {
        tokio::select! {
            result = &mut terminate => {
                result.map_err(DaemonError::Signals)?;
                if !reloads.is_empty() {
                    tracing::info!("a reload was under way: it is left unfinished");
                }
                break;
            }
            _ = hangup.recv() => start_reload(&mut reloads, None),
            Some(()) = changed_rx.recv() => {
                change_pending = true;
                quiet.as_mut().reset(tokio::time::Instant::now() + debounce);
            }
            () = &mut quiet, if change_pending => {
                change_pending = false;
                start_reload(&mut reloads, None);
            }
            Some(ask) = reload_rx.recv() => start_reload(&mut reloads, ask),
            Some(done) = reloads.join_next() => {
                let (ask, outcome) = match done {
                    Ok(done) => done,
                    Err(e) => (None, Err(format!("the reload panicked: {e}"))),
                };
                match &outcome {
                    Ok(report) if !report.changes.is_empty() => {
                        let changes: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
                        tracing::info!("reloaded: {}", changes.join("; "))
                    }
                    Ok(_) => tracing::debug!("reloaded: nothing changed"),
                    Err(e) => tracing::error!("reload failed, nothing changed: {e}"),
                }
                if let Ok(report) = &outcome {
                    report.changes.iter().filter(|c| matches!(c, crate::runtime::TenantChange::Refused { .. }))
                        .for_each(|c| crate::metrics::swap_refused(c.tenant()));
                }
                scheduler.start_new();
                // Schedules may have changed.
                control.wake_all();
                if let Some(reply) = ask {
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    tracing::info!("shutting down: letting the batches in flight finish (signal again to exit at once)");
    control.set_stopping();
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown.send(true);
    tokio::spawn(async {
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal: exiting now; uncommitted batches will be read again");
            std::process::exit(130);
        }
    });
    while scheduler.loops.join_next().await.is_some() {}
    let _ = beats.await;
    let _ = approvals.await;
    // The endpoint answers (`/readyz` says so) until the runs have stopped.
    admin.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs one pipeline whenever its schedule says or an operator asks, one run
/// at a time, for as long as its tenant has it; never while it is paused.
async fn schedule_loop(control: Arc<Control>, id: PipelineId, mut shutdown: signal_watch::Receiver<bool>) {
    let runtime = control.runtime.clone();
    let slot = control.slot(&id);
    // An interval schedule runs at start-up and then that long after each run;
    // a cron schedule waits for its next time. A run that handed over to a new
    // plugin version is followed at once by one on the new version.
    let mut run_now = true;
    // An event pipeline's `reconcile` schedule counts from its newest
    // reconciliation, wherever it ran.
    let started = chrono::Utc::now();
    let mut last_reconcile = last_reconcile_of(&runtime, &id);
    loop {
        // The schedules as the tenant has them now: a reload may change them.
        let Some((schedule, reconcile)) = runtime
            .tenant(&id.tenant)
            .and_then(|t| t.config.pipelines.get(&id.pipeline).map(|p| (p.schedule.clone(), p.reconcile.clone())))
        else {
            tracing::info!(pipeline = %id, "no longer served: its tenant file dropped it");
            return;
        };
        let reconcile_at = reconcile.and_then(|r| r.due_after(last_reconcile, started));
        let paused = || match runtime.state.pauses() {
            Ok(pauses) => pauses.contains_key(&id),
            Err(e) => {
                tracing::error!(pipeline = %id, "cannot tell whether the pipeline is paused, so it waits: {e}");
                true
            }
        };
        let wait = match &schedule {
            _ if paused() => None,
            Schedule::Manual => None,
            Schedule::Every(_) if run_now => Some(std::time::Duration::ZERO),
            _ => Some(schedule.wait_from(chrono::Utc::now()).unwrap_or_default()),
        };
        let reconcile_wait = reconcile_at.map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default());
        let wait = match (wait, reconcile_wait) {
            _ if paused() => None,
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next = wait
            .and_then(|wait| chrono::TimeDelta::from_std(wait).ok())
            .map(|wait| (chrono::Utc::now() + wait).to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        *slot.next_run_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        let (mut asked, mut asked_to_reconcile) = (false, false);
        tokio::select! {
            _ = until(wait) => {}
            // Asked to run or reconcile now; or resumed, paused or reloaded:
            // look again.
            _ = slot.wake.notified() => {
                asked_to_reconcile = slot.reconcile_requested.swap(false, Ordering::SeqCst);
                if !slot.requested.swap(false, Ordering::SeqCst) && !asked_to_reconcile {
                    continue;
                }
                asked = true;
            }
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if paused() {
            continue;
        }
        // A scheduled run is this host's to make only if the pipeline is its
        // share of the fleet's; one an operator asked for is tried here.
        if !asked && !control.fleet.owns(&id) {
            run_now = false;
            // Its owner reconciles it; this host counts the schedule again
            // from now rather than wake for it at once.
            if reconcile_at.is_some_and(|at| at <= chrono::Utc::now()) {
                last_reconcile = Some(chrono::Utc::now());
            }
            continue;
        }
        *slot.next_run_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let Some(tenant) = runtime.tenant(&id.tenant) else { continue };
        // A reconciliation that is due, or asked for, runs between two event
        // runs; a sync asked for is an event run.
        let reconciling = asked_to_reconcile || (!asked && reconcile_at.is_some_and(|at| at <= chrono::Utc::now()));
        if reconciling {
            last_reconcile = Some(chrono::Utc::now());
        }
        let running = slot.run_lock.lock().await;
        let (runtime, job_id, job_stop) = (runtime.clone(), id.clone(), control.stop.clone());
        let outcome = tokio::task::spawn_blocking(move || -> Result<SyncReport, SyncError> {
            let options = SyncOptions { forget_idle_runs: true, ..SyncOptions::default() };
            let job = runtime.job(&job_id, &job_stop, options)?;
            if reconciling { job.reconcile() } else { job.run() }
        })
        .await;
        drop(running);
        // After a reconciliation the stream goes on at once.
        run_now = reconciling;
        match outcome {
            Ok(Ok(report)) if report.status == RunStatus::Paused => {
                tracing::error!(
                    pipeline = %id, run = report.run,
                    "pipeline paused until its tenant file changes: {}",
                    report.error.as_deref().unwrap_or("a config error")
                );
                // Waits for a new version of the tenant, or for its file to
                // be touched (an operator who fixed what the tenant file
                // points at, a directory or a credential, says "try again"),
                // or for shutdown.
                let modified = || std::fs::metadata(&tenant.config.path).and_then(|m| m.modified()).ok();
                let paused_at = modified();
                while !tenant.is_superseded() && modified() == paused_at {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                run_now = true;
            }
            // The run's outcome was logged as it finished (see `log_event`).
            Ok(Ok(report)) => run_now |= report.handed_over,
            // Another host runs it now (the fleet's view moved, or a
            // command runs it): the next turn looks again.
            Ok(Err(e @ (SyncError::Leased(_) | SyncError::Rollout { .. }))) => {
                tracing::debug!(pipeline = %id, "not run here: {e}")
            }
            Ok(Err(SyncError::State(e))) if e.is_fenced() => {
                tracing::warn!(pipeline = %id, "the run stopped, its lease taken by another host: {e}")
            }
            Ok(Err(e)) => tracing::error!(pipeline = %id, "the run could not be recorded: {e}"),
            Err(e) => tracing::error!(pipeline = %id, "the run panicked: {e}"),
        }
    }
}

/// When the pipeline was last reconciled, by any host or command.
fn last_reconcile_of(runtime: &crate::runtime::Runtime, id: &PipelineId) -> Option<chrono::DateTime<chrono::Utc>> {
    let run = runtime.last_reconcile(id)?;
    chrono::DateTime::parse_from_rfc3339(&run.started_at).ok().map(|at| at.to_utc())
}

/// The daemon's log, as an observer of the engine's events: a clean run at
/// INFO with its counts; anything else at WARN, with the counts of what did
/// not apply, so that a run that dead-lettered half its batch never reads as a
/// success; swaps and breached limits as they happen.
fn log_event(event: &SyncEvent<'_>) {
    match event {
        SyncEvent::RunFinished { pipeline, run, status, stats, error: None, .. } if stats.drift.is_some() => {
            let d = stats.drift.as_ref().expect("matched");
            tracing::info!(
                pipeline = %pipeline, run, status = %status, missing = d.missing, extra = d.extra,
                different = d.different, repaired = d.repaired, left_to_stream = d.left_to_stream,
                "reconciliation finished"
            )
        }
        SyncEvent::RunFinished { pipeline, run, status, stats: s, error: None, handed_over } => tracing::info!(
            pipeline = %pipeline, run, status = %status,
            read = s.read, created = s.created, updated = s.updated, deleted = s.deleted, upserted = s.upserted,
            handed_over, "run finished"
        ),
        SyncEvent::RunFinished { pipeline, run, status, stats: s, error: Some(error), .. } => tracing::warn!(
            pipeline = %pipeline, run, status = %status,
            rejected = s.rejected, dead_lettered = s.dead_lettered, failed = s.failed,
            "run ended: {error}"
        ),
        SyncEvent::LimitBreached { pipeline, run, limit, detail } => {
            tracing::warn!(pipeline = %pipeline, run = *run, limit, "limit breached: {detail}")
        }
        SyncEvent::PluginSwapped { tenant, plugin, digest } => {
            tracing::info!(tenant, plugin, digest, "plugin swapped: runs from now on use this version")
        }
        SyncEvent::RunStarted { .. }
        | SyncEvent::BatchCommitted { .. }
        | SyncEvent::PageRead { .. }
        | SyncEvent::BatchApplied { .. }
        | SyncEvent::PlanBlocked { .. } => {}
    }
}

/// Waits `wait`, or for ever when `None`.
async fn until(wait: Option<std::time::Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
