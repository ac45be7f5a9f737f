//! The CLI's side of the admin endpoint: HTTP requests to the running daemon
//! over its Unix socket (see [`super`]), the same API as on TCP.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Why a request to the daemon did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the daemon at {}: {source}", path.display())]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error("cannot talk to the daemon: {0}")]
    Http(String),
    #[error("the daemon's answer is not understood ({detail}): {answer}")]
    NotUnderstood { detail: String, answer: String },
    /// The daemon refused, with its error code and message.
    #[error("{message}")]
    Refused { code: String, message: String },
}

/// Sends `method path` (with a JSON `body`) to the daemon whose state is in
/// `state_dir`, and returns its JSON answer; `Ok(None)` when no daemon listens.
pub fn request(
    state_dir: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Http(format!("cannot start an async runtime: {e}")))?;
    runtime.block_on(send(state_dir, method, path, body))
}

async fn send(
    state_dir: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, AdminError> {
    let socket = super::socket_path(state_dir);
    let stream = match tokio::net::UnixStream::connect(&socket).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(source) => return Err(AdminError::Unreachable { path: socket, source }),
    };
    let http = |e: hyper::Error| AdminError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    tokio::spawn(connection);
    let body = body.map(|body| serde_json::to_vec(&body).expect("a JSON value serialises")).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "synchost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| AdminError::Http(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(http)?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| AdminError::NotUnderstood {
        detail: e.to_string(),
        answer: String::from_utf8_lossy(&bytes).into_owned(),
    })?;
    if status.is_success() {
        return Ok(Some(answer));
    }
    let field = |name: &str| answer.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    Err(AdminError::Refused { code: field("code"), message: field("message") })
}
