//! The handlers of `/api/v1`, each documented for the OpenAPI document
//! ([`super::openapi`]) by its `#[utoipa::path]`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::daemon::Control;
use crate::runtime::{PipelineStatus, PluginStatus, ReloadReport, Status, TenantChange, TenantStatus};
use crate::state::{ArchivedFile, BatchStats, DeadLetter, PipelineId, RunFilter, RunId, RunRecord, RunStatus};
use crate::sync::SyncReport;
use crate::sync::diff::PlanSummary;

pub type Ctl = State<Arc<Control>>;

/// The whole host: every tenant with its plugins and pipelines.
#[utoipa::path(get, path = "/api/v1/status", tag = "host",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
pub async fn status(State(control): Ctl) -> Result<Json<Status>, ApiError> {
    Ok(Json(control.status().await?))
}

/// Every tenant, with its health, plugins and pipelines.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = Vec<TenantStatus>), (status = 401, body = ErrorBody)))]
pub async fn tenants(State(control): Ctl) -> Result<Json<Vec<TenantStatus>>, ApiError> {
    Ok(Json(control.status().await?.tenants))
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's name (its file's stem)")),
    responses((status = 200, body = TenantStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn tenant(State(control): Ctl, Path(name): Path<String>) -> Result<Json<TenantStatus>, ApiError> {
    tenant_status(&control, &name).await.map(Json)
}

async fn tenant_status(control: &Arc<Control>, name: &str) -> Result<TenantStatus, ApiError> {
    control
        .status()
        .await?
        .tenants
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{name}`")))
}

/// One pipeline: schedule, next run, the run in progress, cursor, queues.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}", tag = "pipelines",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    responses((status = 200, body = PipelineStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn pipeline(State(control): Ctl, Path(id): Path<(String, String)>) -> Result<Json<PipelineStatus>, ApiError> {
    Ok(Json(control.pipeline(&PipelineId::new(&id.0, &id.1)).await?))
}

/// The answer to a run asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Triggered {
    pub pipeline: PipelineId,
    /// The run starts as soon as the pipeline's loop takes the request.
    pub queued: bool,
}

/// Runs the pipeline now (a manual pipeline too). Refused while it is paused
/// or running.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/sync", tag = "pipelines",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    responses((status = 202, body = Triggered), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "paused or already running")))]
pub async fn sync(
    State(control): Ctl,
    Path(id): Path<(String, String)>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let id = PipelineId::new(&id.0, &id.1);
    control.trigger(&id)?;
    Ok((StatusCode::ACCEPTED, Json(Triggered { pipeline: id, queued: true })))
}

/// Reconciles an event pipeline now, between its event runs: its source's
/// snapshot diffed against the destination, the drift repaired except for
/// keys the event stream is about to bring; the run's stats say what it found
/// (see `last_reconcile` in the pipeline's status). Refused for a diff
/// pipeline, and while it is paused or running.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/reconcile", tag = "pipelines",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    responses((status = 202, body = Triggered), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a diff pipeline, paused, or already running")))]
pub async fn reconcile(
    State(control): Ctl,
    Path(id): Path<(String, String)>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let id = PipelineId::new(&id.0, &id.1);
    control.trigger_reconcile(&id)?;
    Ok((StatusCode::ACCEPTED, Json(Triggered { pipeline: id, queued: true })))
}

/// Why a pipeline is paused, for the record.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub reason: Option<String>,
}

/// Pauses the pipeline: the run in progress finishes, no other starts until
/// it is resumed. Stored: it outlives the daemon.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/pause", tag = "pipelines",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    request_body(content = PauseRequest, description = "Optional: an empty body pauses without a reason"),
    responses((status = 200, body = PipelineStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn pause(
    State(control): Ctl,
    Path(id): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<PipelineStatus>, ApiError> {
    let request: PauseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request body: {e}")))?
    };
    Ok(Json(control.pause(&PipelineId::new(&id.0, &id.1), request.reason).await?))
}

/// Resumes a paused pipeline on its schedule.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/resume", tag = "pipelines",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    responses((status = 200, body = PipelineStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn resume(State(control): Ctl, Path(id): Path<(String, String)>) -> Result<Json<PipelineStatus>, ApiError> {
    Ok(Json(control.resume(&PipelineId::new(&id.0, &id.1)).await?))
}

/// Checks that the daemon serves the pipeline, for the endpoints that read
/// its state directly.
fn served(control: &Control, tenant: &str, pipeline: &str) -> Result<PipelineId, ApiError> {
    let id = PipelineId::new(tenant, pipeline);
    control.check_pipeline(&id)?;
    Ok(id)
}

/// An event pipeline's dead letters, oldest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/dead-letters", tag = "dead letters",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    responses((status = 200, body = Vec<DeadLetter>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn dead_letters(
    State(control): Ctl,
    Path(id): Path<(String, String)>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let id = served(&control, &id.0, &id.1)?;
    Ok(Json(control.runtime.state.dead_letters(&id)?))
}

/// Which dead letters: `ids`, or `all: true`; one of the two.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LetterSelection {
    pub ids: Option<Vec<i64>>,
    pub all: Option<bool>,
}

impl LetterSelection {
    /// `None` for all of them. Dropping loses operations for good, so
    /// "everything" is never implied by an empty selection.
    fn ids(&self) -> Result<Option<&[i64]>, ApiError> {
        match (&self.ids, self.all) {
            (Some(ids), None | Some(false)) => Ok(Some(ids)),
            (None, Some(true)) => Ok(None),
            _ => Err(ApiError::bad_request("give either `ids` (a list of dead letter ids) or `all: true`")),
        }
    }
}

/// What a retry did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    /// Letters now in the retry queue, due now.
    pub requeued: Vec<i64>,
    /// Letters left where they are, with why.
    pub refused: Vec<RefusedLetter>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefusedLetter {
    pub id: i64,
    pub reason: String,
}

/// Puts dead letters back into the retry queue, due now. A letter that a
/// later event for its key superseded is refused.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/dead-letters/retry", tag = "dead letters",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    request_body = LetterSelection,
    responses((status = 200, body = Requeued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn retry_dead_letters(
    State(control): Ctl,
    Path(id): Path<(String, String)>,
    Json(selection): Json<LetterSelection>,
) -> Result<Json<Requeued>, ApiError> {
    let ids = selection.ids()?;
    let id = served(&control, &id.0, &id.1)?;
    let outcome = control.runtime.state.requeue_dead_letters(&id, ids)?;
    let refused = outcome.refused.into_iter().map(|(id, reason)| RefusedLetter { id, reason }).collect();
    Ok(Json(Requeued { requeued: outcome.requeued, refused }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dropped {
    pub dropped: usize,
}

/// Deletes dead letters for good.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/pipelines/{pipeline}/dead-letters/drop", tag = "dead letters",
    params(("tenant" = String, Path), ("pipeline" = String, Path)),
    request_body = LetterSelection,
    responses((status = 200, body = Dropped), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn drop_dead_letters(
    State(control): Ctl,
    Path(id): Path<(String, String)>,
    Json(selection): Json<LetterSelection>,
) -> Result<Json<Dropped>, ApiError> {
    let ids = selection.ids()?;
    let id = served(&control, &id.0, &id.1)?;
    Ok(Json(Dropped { dropped: control.runtime.state.drop_dead_letters(&id, ids)? }))
}

/// A tenant's plugins: the version in use and those kept for rollback.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/plugins", tag = "plugins",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<PluginStatus>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn plugins(State(control): Ctl, Path(tenant): Path<String>) -> Result<Json<Vec<PluginStatus>>, ApiError> {
    Ok(Json(tenant_status(&control, &tenant).await?.plugins))
}

/// Returns a plugin to the version active before this one, until the tenant
/// file changes.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/plugins/{plugin}/rollback", tag = "plugins",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    responses((status = 200, body = TenantChange), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no earlier version is kept")))]
pub async fn rollback(State(control): Ctl, Path(id): Path<(String, String)>) -> Result<Json<TenantChange>, ApiError> {
    Ok(Json(control.rollback(id.0, id.1).await?))
}

/// Which runs to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this tenant's runs.
    pub tenant: Option<String>,
    /// Only runs of pipelines with this name.
    pub pipeline: Option<String>,
    /// Only runs that ended (or stand) so.
    pub status: Option<RunStatus>,
    /// Only runs of this kind: `diff`, `event` or `reconcile`.
    pub mode: Option<crate::config::Mode>,
    /// Only runs older than this one: the id of the last run of a page.
    pub before: Option<RunId>,
    /// How many, newest first: 1 to 1000, 50 unless given.
    pub limit: Option<usize>,
}

/// Recorded runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = Vec<RunRecord>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn runs(State(control): Ctl, Query(query): Query<RunsQuery>) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit}: give 1 to 1000")));
    }
    let RunsQuery { tenant, pipeline, status, mode, before, .. } = query;
    let filter = RunFilter { tenant, pipeline, status, mode, before, limit };
    let state = control.runtime.state.clone();
    let runs = tokio::task::spawn_blocking(move || state.find_runs(&filter))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(runs))
}

/// A run with its per-batch figures (event runs).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    pub run: RunRecord,
    pub batches: Vec<BatchStats>,
    /// The files of its archive (diff runs), until pruned.
    pub archive: Vec<ArchivedFile>,
}

async fn run_record(control: &Arc<Control>, run: RunId) -> Result<RunRecord, ApiError> {
    control.runtime.state.run(run)?.ok_or_else(|| ApiError::not_found(format!("no run {run}")))
}

/// One run: its counts, timings, plugin digests and batches.
#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs",
    params(("run" = i64, Path, description = "The run's id")),
    responses((status = 200, body = RunDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn run(State(control): Ctl, Path(run): Path<RunId>) -> Result<Json<RunDetail>, ApiError> {
    let record = run_record(&control, run).await?;
    let batches = control.runtime.state.batches(run)?;
    let archive = control.runtime.state.archive_files(run)?;
    Ok(Json(RunDetail { run: record, batches, archive }))
}

/// A diff run's plan as kept in its archive: counts and samples.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    pub pipeline: PipelineId,
    /// The run's status: only a `blocked` plan can be approved.
    pub status: RunStatus,
    #[serde(flatten)]
    pub plan: PlanSummary,
}

/// The plan a diff or reconcile run made (a reconcile run's: the repair it
/// applies, without the keys it left to the event stream), with samples of each kind of operation.
#[utoipa::path(get, path = "/api/v1/runs/{run}/plan", tag = "runs",
    params(("run" = i64, Path)),
    responses((status = 200, body = PlanView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such run, an event run, or its archive is gone")))]
pub async fn plan(State(control): Ctl, Path(run): Path<RunId>) -> Result<Json<PlanView>, ApiError> {
    let record = run_record(&control, run).await?;
    if record.mode == crate::config::Mode::Event {
        return Err(ApiError::not_found(format!("run {run} is an event run: event runs make no plan")));
    }
    let state = control.runtime.state.clone();
    let summary = tokio::task::spawn_blocking(move || PlanSummary::of_archived_run(state.as_ref(), run))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::not_found(format!("run {run} has no readable plan ({e})")))?;
    Ok(Json(PlanView { pipeline: record.pipeline, status: record.status, plan: summary }))
}

/// Applies the exact plan of a blocked run, if the destination is still what
/// it was planned against. Answers when the apply has ended.
#[utoipa::path(post, path = "/api/v1/runs/{run}/approve", tag = "runs",
    params(("run" = i64, Path)),
    responses((status = 200, body = SyncReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "not blocked, or the destination changed")))]
pub async fn approve(State(control): Ctl, Path(run): Path<RunId>) -> Result<Json<SyncReport>, ApiError> {
    Ok(Json(control.approve(run).await?))
}

/// Reads the tenant files again and swaps in those that changed and pass
/// every check.
#[utoipa::path(post, path = "/api/v1/reload", tag = "host",
    responses((status = 200, body = ReloadReport), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn reload(State(control): Ctl) -> Result<Json<ReloadReport>, ApiError> {
    Ok(Json(control.reload().await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// The daemon serves: its tenants are loaded and it is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(control): Ctl) -> Result<Json<Health>, ApiError> {
    if control.is_ready() {
        Ok(Json(Health { status: "ready".into() }))
    } else {
        Err(ApiError::unavailable("the daemon is shutting down"))
    }
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "host",
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn metrics(State(control): Ctl) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    let Some(handle) = control.metrics.clone() else {
        return Err(ApiError::unavailable("metrics are not recorded in this process"));
    };
    crate::metrics::record_state(&control.status().await?);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()))
}
