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
//! again by this process: polling would only repeat the error, and the cursor
//! has not moved, so nothing is lost by waiting. The pause is logged as an
//! error with its reason; after fixing the cause the operator restarts
//! `synchost run` (or runs `synchost sync` by hand), which resumes from the
//! cursor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Schedule;
use crate::runtime::Runtime;
use crate::state::{PipelineId, RunStatus};
use crate::sync::{SyncOptions, SyncReport};

/// Runs the daemon on its own tokio runtime until a shutdown signal.
pub fn run(runtime: Runtime) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(Arc::new(runtime)))
}

async fn serve(runtime: Arc<Runtime>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let (shutdown, shutdown_seen) = watch::channel(false);
    let mut pipelines = JoinSet::new();
    for (tenant, pipeline) in runtime.pipelines() {
        if matches!(pipeline.schedule, Schedule::Manual) {
            continue;
        }
        let id = PipelineId::new(&tenant.name, &pipeline.name);
        pipelines.spawn(schedule_loop(
            runtime.clone(),
            id,
            pipeline.schedule.clone(),
            stop.clone(),
            shutdown_seen.clone(),
        ));
    }
    if pipelines.is_empty() {
        tracing::warn!("no pipeline has a schedule; waiting for a signal (run one with `synchost sync`)");
    } else {
        tracing::info!(pipelines = pipelines.len(), "synchost is running");
    }

    wait_for_signal().await?;
    tracing::info!("shutting down: letting the batches in flight finish (signal again to exit at once)");
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown.send(true);
    tokio::spawn(async {
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal: exiting now; uncommitted batches will be read again");
            std::process::exit(130);
        }
    });
    while pipelines.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Runs one pipeline whenever its schedule says, one run at a time.
async fn schedule_loop(
    runtime: Arc<Runtime>,
    id: PipelineId,
    schedule: Schedule,
    stop: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // An interval schedule runs at start-up and then that long after each run;
    // a cron schedule waits for its next time.
    let mut first = matches!(schedule, Schedule::Every(_));
    loop {
        let wait =
            if first { std::time::Duration::ZERO } else { schedule.wait_from(chrono::Utc::now()).unwrap_or_default() };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let (runtime, job_id, job_stop) = (runtime.clone(), id.clone(), stop.clone());
        let outcome = tokio::task::spawn_blocking(move || -> Result<SyncReport, String> {
            let options = SyncOptions { forget_idle_runs: true, ..SyncOptions::default() };
            let job = runtime.job(&job_id, &job_stop, options)?;
            job.run().map_err(|e| e.to_string())
        })
        .await;
        match outcome {
            Ok(Ok(report)) if report.status == RunStatus::Paused => {
                tracing::error!(
                    pipeline = %id, run = report.run,
                    "pipeline paused, not scheduled again until synchost restarts: {}",
                    report.error.as_deref().unwrap_or("a config error")
                );
                return;
            }
            Ok(Ok(report)) => log_report(&report),
            Ok(Err(e)) => tracing::error!(pipeline = %id, "the run could not be recorded: {e}"),
            Err(e) => tracing::error!(pipeline = %id, "the run panicked: {e}"),
        }
    }
}

fn log_report(report: &SyncReport) {
    let s = &report.stats;
    match &report.error {
        None => tracing::info!(
            pipeline = %report.pipeline, run = report.run, status = ?report.status,
            read = s.read, created = s.created, updated = s.updated, deleted = s.deleted,
            upserted = s.upserted, rejected = s.rejected, failed = s.failed,
            "run finished"
        ),
        Some(error) => {
            tracing::warn!(pipeline = %report.pipeline, run = report.run, status = ?report.status, "run ended: {error}")
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
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
