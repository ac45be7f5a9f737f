//! Prometheus metrics: what the daemon counts, through the `metrics` facade,
//! rendered at `/metrics` by the admin endpoint.
//!
//! Three sources feed them: the engine's events ([`observer`]: rows, events,
//! runs, batch commits, swaps), the plugin sandbox and the compiled-code cache
//! (calls, limits, traps, refused requests, hits and misses, recorded where
//! they happen), and the state store, read at each scrape ([`record_state`]:
//! queue depths, dead letters, blocked plans, pauses). Without an installed
//! recorder (every command but `synchost run`) the facade does nothing.
//!
//! Labels stay bounded: tenant, pipeline, plugin, mode, outcome, function and
//! limit come from the config and the code, never keys, run ids or errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Mode;
use crate::runtime::Status;
use crate::state::{RunId, RunStats};
use crate::sync::{Observer, SyncEvent};

/// Installs the Prometheus recorder for this process; `None` if another
/// recorder is installed already (a second daemon in one test process).
pub fn install() -> Option<PrometheusHandle> {
    // Durations as histograms (Prometheus can aggregate those across
    // hosts), with buckets from a fast plugin call to a day-long run.
    let seconds = [0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .expect("the buckets are not empty")
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("synchost_runs_total", "Runs finished, by outcome");
    describe_histogram!("synchost_run_duration_seconds", "Wall time of runs, by mode and outcome");
    describe_counter!("synchost_rows_read_total", "Diff syncs: rows read from the source snapshot");
    describe_counter!("synchost_rows_desired_total", "Diff syncs: rows the transforms produced");
    describe_counter!("synchost_rows_created_total", "Diff syncs: records created");
    describe_counter!("synchost_rows_updated_total", "Diff syncs: records updated");
    describe_counter!("synchost_rows_deleted_total", "Diff syncs: records deleted");
    describe_counter!("synchost_rows_unchanged_total", "Diff syncs: desired rows the destination already held");
    describe_counter!("synchost_events_read_total", "Event syncs: events read from the source");
    describe_counter!("synchost_events_applied_total", "Event syncs: operations applied (upserts and deletes)");
    describe_counter!("synchost_events_retried_total", "Event syncs: further attempts at queued operations");
    describe_counter!("synchost_events_dead_lettered_total", "Event syncs: operations sent to the dead letters");
    describe_histogram!("synchost_batch_commit_seconds", "Event syncs: time to commit a batch's state");
    describe_gauge!("synchost_reconcile_drift_keys", "Keys the last reconciliation found drifted, by kind");
    describe_counter!("synchost_reconcile_repaired_total", "Operations reconciliations applied to repair drift");
    describe_counter!(
        "synchost_reconcile_left_to_stream_total",
        "Drifted keys reconciliations left to the event stream"
    );
    describe_counter!("synchost_plans_blocked_total", "Diff plans a guard held back for an operator");
    describe_gauge!("synchost_retry_queue_depth", "Operations waiting in an event pipeline's retry queue");
    describe_gauge!("synchost_dead_letters", "Dead letters no later event superseded");
    describe_gauge!("synchost_blocked_plans", "Diff plans waiting for approval");
    describe_gauge!("synchost_pipeline_paused", "1 while an operator has the pipeline paused");
    describe_gauge!("synchost_pipeline_running", "1 while a run of the pipeline is in progress");
    describe_gauge!("synchost_tenant_healthy", "1 when the tenant's health is ok");
    describe_histogram!("synchost_plugin_call_seconds", "Calls into plugins, by function");
    describe_counter!("synchost_plugin_limit_breaches_total", "Plugin calls stopped by a limit, by limit");
    describe_counter!("synchost_plugin_traps_total", "Plugin calls that trapped");
    describe_counter!("synchost_http_requests_refused_total", "Outgoing HTTP requests refused by the allowlist");
    describe_counter!("synchost_hot_swaps_total", "Plugin versions swapped in, and tenant files refused");
    describe_counter!("synchost_compiled_cache_lookups_total", "Compiled-code cache lookups, by result");
}

/// The engine's events as metrics. Row and event counters move as a run goes
/// (each event's figures less those already counted), so a scrape during a
/// long run sees its progress.
pub fn observer() -> Observer {
    let counted: Arc<Mutex<HashMap<RunId, Counted>>> = Arc::default();
    Arc::new(move |event| {
        let mut counted = counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            SyncEvent::RunStarted { run, mode, from, .. } => {
                counted.insert(*run, Counted { started: Instant::now(), mode: *mode, seen: (*from).clone() });
            }
            SyncEvent::PageRead { pipeline, run: Some(run), stats }
            | SyncEvent::BatchApplied { pipeline, run: Some(run), stats, .. } => {
                if let Some(run) = counted.get_mut(run) {
                    run.count(&pipeline.tenant, &pipeline.pipeline, stats);
                }
            }
            SyncEvent::RunFinished { pipeline, run, status, stats, .. } => {
                let (tenant, name) = (pipeline.tenant.clone(), pipeline.pipeline.clone());
                // A run that began before the observer was installed.
                let mut run = counted.remove(run).unwrap_or_else(|| Counted {
                    started: Instant::now(),
                    mode: if stats.batches > 0 { Mode::Event } else { Mode::Diff },
                    seen: RunStats::default(),
                });
                run.count(&tenant, &name, stats);
                if let Some(drift) = &stats.drift {
                    record_drift(&tenant, &name, drift);
                }
                let outcome = status.to_string().replace(' ', "_");
                let mode = run.mode.to_string();
                let started = run.started;
                counter!("synchost_runs_total", "tenant" => tenant, "pipeline" => name, "outcome" => outcome.clone())
                    .increment(1);
                histogram!("synchost_run_duration_seconds", "mode" => mode, "outcome" => outcome)
                    .record(started.elapsed().as_secs_f64());
            }
            SyncEvent::BatchCommitted { pipeline, seconds, .. } => {
                let (tenant, name) = (pipeline.tenant.clone(), pipeline.pipeline.clone());
                histogram!("synchost_batch_commit_seconds", "tenant" => tenant, "pipeline" => name).record(*seconds);
            }
            SyncEvent::PlanBlocked { pipeline, run: Some(_), .. } => {
                let (tenant, name) = (pipeline.tenant.clone(), pipeline.pipeline.clone());
                counter!("synchost_plans_blocked_total", "tenant" => tenant, "pipeline" => name).increment(1);
            }
            SyncEvent::PluginSwapped { tenant, .. } => {
                counter!("synchost_hot_swaps_total", "tenant" => tenant.to_string(), "outcome" => "done").increment(1);
            }
            // Limits are counted per plugin where they are enforced.
            SyncEvent::LimitBreached { .. } | SyncEvent::PageRead { .. } | SyncEvent::BatchApplied { .. } => {}
            SyncEvent::PlanBlocked { .. } => {}
        }
    })
}

/// What a reconciliation found and did.
fn record_drift(tenant: &str, pipeline: &str, drift: &crate::state::Drift) {
    for (kind, keys) in [("missing", drift.missing), ("extra", drift.extra), ("different", drift.different)] {
        let labels = [("tenant", tenant.to_string()), ("pipeline", pipeline.to_string()), ("kind", kind.to_string())];
        gauge!("synchost_reconcile_drift_keys", &labels).set(keys as f64);
    }
    let labels = [("tenant", tenant.to_string()), ("pipeline", pipeline.to_string())];
    counter!("synchost_reconcile_repaired_total", &labels).increment(drift.repaired);
    counter!("synchost_reconcile_left_to_stream_total", &labels).increment(drift.left_to_stream);
}

/// A run in progress, with the figures already counted.
struct Counted {
    started: Instant,
    mode: Mode,
    seen: RunStats,
}

impl Counted {
    /// Adds what `now` counts beyond what was seen to the row and event
    /// counters, and remembers `now` as seen.
    fn count(&mut self, tenant: &str, pipeline: &str, now: &RunStats) {
        let labels = [("tenant", tenant.to_string()), ("pipeline", pipeline.to_string())];
        let add = |name: &'static str, before: u64, after: u64| {
            if after > before {
                counter!(name, &labels).increment(after - before);
            }
        };
        let seen = &self.seen;
        if self.mode == Mode::Event {
            add("synchost_events_read_total", seen.read, now.read);
            add("synchost_events_applied_total", seen.upserted + seen.deleted, now.upserted + now.deleted);
            add("synchost_events_retried_total", seen.retried, now.retried);
            add("synchost_events_dead_lettered_total", seen.dead_lettered, now.dead_lettered);
        } else {
            add("synchost_rows_read_total", seen.read, now.read);
            add("synchost_rows_desired_total", seen.desired, now.desired);
            add("synchost_rows_created_total", seen.created, now.created);
            add("synchost_rows_updated_total", seen.updated, now.updated);
            add("synchost_rows_deleted_total", seen.deleted, now.deleted);
            add("synchost_rows_unchanged_total", seen.unchanged, now.unchanged);
        }
        self.seen = now.clone();
    }
}

/// Sets the gauges that the state holds (queue depths, dead letters, blocked
/// plans, pauses, health) from the host's status, at each scrape.
pub fn record_state(status: &Status) {
    for tenant in &status.tenants {
        let name = tenant.name.clone();
        gauge!("synchost_tenant_healthy", "tenant" => name.clone()).set(f64::from(u8::from(tenant.health == "ok")));
        for p in &tenant.pipelines {
            let labels = [("tenant", name.clone()), ("pipeline", p.name.clone())];
            if p.mode == Mode::Event {
                gauge!("synchost_retry_queue_depth", &labels).set(p.retry_queue as f64);
                gauge!("synchost_dead_letters", &labels).set(p.dead_letters as f64);
            }
            // Event pipelines' reconciliations make plans too.
            gauge!("synchost_blocked_plans", &labels).set(f64::from(u8::from(p.blocked_run.is_some())));
            gauge!("synchost_pipeline_paused", &labels).set(f64::from(u8::from(p.paused.is_some())));
            gauge!("synchost_pipeline_running", &labels).set(f64::from(u8::from(p.running.is_some())));
        }
    }
}

/// A call into a plugin took `seconds`.
pub(crate) fn plugin_call(tenant: &str, plugin: &str, function: &'static str, seconds: f64) {
    let labels = [("tenant", tenant.to_string()), ("plugin", plugin.to_string()), ("function", function.to_string())];
    histogram!("synchost_plugin_call_seconds", &labels).record(seconds);
}

/// A plugin call failed: counted when a limit stopped it or it trapped.
pub(crate) fn plugin_error(error: &crate::plugin::PluginError) {
    use crate::plugin::PluginError;
    match error {
        PluginError::LimitExceeded { tenant, plugin, limit, .. } => {
            let labels = [("tenant", tenant.clone()), ("plugin", plugin.clone()), ("limit", limit.to_string())];
            counter!("synchost_plugin_limit_breaches_total", &labels).increment(1);
        }
        PluginError::Trapped { tenant, plugin, .. } => {
            counter!("synchost_plugin_traps_total", "tenant" => tenant.clone(), "plugin" => plugin.clone())
                .increment(1);
        }
        _ => {}
    }
}

/// An outgoing HTTP request of a plugin was refused.
pub(crate) fn http_refused(tenant: &str, plugin: &str) {
    counter!("synchost_http_requests_refused_total", "tenant" => tenant.to_string(), "plugin" => plugin.to_string())
        .increment(1);
}

/// A compiled-code cache lookup: `hit` or `miss`.
pub(crate) fn cache_lookup(hit: bool) {
    counter!("synchost_compiled_cache_lookups_total", "result" => if hit { "hit" } else { "miss" }).increment(1);
}

/// A tenant file a reload refused.
pub(crate) fn swap_refused(tenant: &str) {
    counter!("synchost_hot_swaps_total", "tenant" => tenant.to_string(), "outcome" => "refused").increment(1);
}
