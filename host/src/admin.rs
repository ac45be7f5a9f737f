//! The daemon's admin endpoint: the HTTP API under `/api/v1` (described by
//! its OpenAPI document), Prometheus metrics at `/metrics`, the web console at
//! `/`, and `/healthz` and `/readyz`.
//!
//! One router, served twice by `synchost run`:
//! - on `[admin] bind` (TCP, loopback by default), where every request but
//!   the health checks and the console's static files must carry the bearer
//!   token of `[admin] token_file`;
//! - on the Unix socket `<state_dir>/admin.sock`, made with mode 0600, so only
//!   the daemon's own user can connect: that user can read the token file
//!   anyway, so the socket asks for none. The CLI talks to the daemon there
//!   ([`client`]).

mod api;
mod auth;
pub mod client;
mod console;
mod error;
mod openapi;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::daemon::Control;
pub use openapi::document as openapi_document;

/// Where the admin socket of the host whose state is in `state_dir` lives.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

/// Where the daemon writes the URL its TCP endpoint listens on, once it
/// listens (an `[admin] bind` with port 0 gets a port of the system's choice).
pub fn url_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.url")
}

/// The largest request body taken: selections and reasons are small.
const MAX_BODY: usize = 1024 * 1024;

/// The routes, with the token required where it is given.
fn router(control: Arc<Control>, token: Option<auth::Token>) -> Router {
    let document = openapi::document();
    let guarded = Router::new()
        .route("/api/v1/openapi.json", get(move || async move { ([("content-type", "application/json")], document) }))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/tenants", get(api::tenants))
        .route("/api/v1/tenants/{tenant}", get(api::tenant))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}", get(api::pipeline))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/sync", post(api::sync))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/reconcile", post(api::reconcile))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/pause", post(api::pause))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/resume", post(api::resume))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/dead-letters", get(api::dead_letters))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/dead-letters/retry", post(api::retry_dead_letters))
        .route("/api/v1/tenants/{tenant}/pipelines/{pipeline}/dead-letters/drop", post(api::drop_dead_letters))
        .route("/api/v1/tenants/{tenant}/plugins", get(api::plugins))
        .route("/api/v1/tenants/{tenant}/plugins/{plugin}/rollback", post(api::rollback))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/runs/{run}", get(api::run))
        .route("/api/v1/runs/{run}/plan", get(api::plan))
        .route("/api/v1/runs/{run}/approve", post(api::approve))
        .route("/api/v1/reload", post(api::reload))
        .route("/metrics", get(api::metrics));
    let guarded = match token {
        Some(token) => guarded.route_layer(axum::middleware::from_fn_with_state(token, auth::require)),
        None => guarded,
    };
    Router::new()
        .merge(guarded)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/", get(console::index))
        .route("/assets/app.js", get(console::script))
        .route("/assets/style.css", get(console::style))
        .fallback(|| async { error::ApiError::not_found("no such endpoint (the API is under /api/v1)") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(control)
}

/// The endpoint's listeners, stopped with [`AdminServer::stop`].
pub struct AdminServer {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state_dir: PathBuf,
}

impl AdminServer {
    /// Stops listening, lets requests in flight finish (a few seconds at
    /// most), and removes the socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(std::time::Duration::from_secs(5), task).await.is_err() {
                tracing::warn!("the admin endpoint did not stop in time");
            }
        }
        let _ = std::fs::remove_file(socket_path(&self.state_dir));
        let _ = std::fs::remove_file(url_path(&self.state_dir));
    }
}

/// Starts serving the endpoint for `control`'s daemon. A listener that cannot
/// start is logged and left out: the daemon still syncs.
pub fn serve(control: Arc<Control>) -> AdminServer {
    let (stop, stopped) = watch::channel(false);
    let host = &control.runtime.host;
    let state_dir = host.state_dir.clone();
    let mut tasks = Vec::new();
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    match bind_socket(&state_dir) {
        Ok(listener) => {
            let app = router(control.clone(), None);
            let shutdown = until_stopped(stopped.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!("the admin socket stopped: {e}");
                }
            }));
        }
        Err(e) => tracing::error!(
            "no admin socket: {e}; `synchost reload`, `status` and `plugin rollback` cannot reach this daemon"
        ),
    }

    if let Some(bind) = host.admin.bind {
        let token = match auth::Token::load_or_create(&host.admin.token_file) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::error!("no HTTP endpoint on {bind}: {e}");
                None
            }
        };
        if let Some(token) = token {
            let app = router(control.clone(), Some(token));
            let shutdown = until_stopped(stopped);
            let url_file = url_path(&state_dir);
            tasks.push(tokio::spawn(async move {
                let listener = match tokio::net::TcpListener::bind(bind).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!("no HTTP endpoint: cannot listen on {bind} ({e}); set [admin] bind");
                        return;
                    }
                };
                let url = match listener.local_addr() {
                    Ok(address) => format!("http://{address}/"),
                    Err(_) => format!("http://{bind}/"),
                };
                if let Err(e) = std::fs::write(&url_file, format!("{url}\n")) {
                    tracing::warn!("cannot write `{}`: {e}", url_file.display());
                }
                tracing::info!(url = %url, "admin API, metrics and console listening");
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!("the HTTP endpoint stopped: {e}");
                }
            }));
        }
    }
    AdminServer { stop, tasks, state_dir }
}

/// Binds the admin socket, mode 0600, replacing one left by a daemon that died.
fn bind_socket(state_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(state_dir);
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        std::fs::remove_file(&path)?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {} (is another daemon running?): {e}", path.display()))
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
