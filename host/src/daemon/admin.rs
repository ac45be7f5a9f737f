//! The daemon's admin endpoint: a Unix socket, `<state_dir>/admin.sock`, that
//! `synchost reload`, `synchost status` and `synchost plugin rollback` talk to.
//!
//! Only the user the daemon runs as can connect: the socket is made with mode
//! 0600 in the host's state directory, so there is no token to leak. One
//! request per connection, one JSON object each way, each on one line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a client asks of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Rollback { tenant: String, plugin: String },
}

/// The daemon's answer: `result` on success, `error` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the admin socket of the host whose state is in `state_dir` lives.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

/// Why the admin endpoint could not be served, or a request not answered.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the daemon at {}: {source}", path.display())]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error("cannot talk to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon's answer is not understood ({detail}): {answer}")]
    NotUnderstood { detail: String, answer: String },
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {} (is another daemon running?): {source}", path.display())]
    Listen { path: PathBuf, source: std::io::Error },
}

/// Sends `request` to the running daemon. `Ok(None)` when no daemon listens.
pub fn request(state_dir: &Path, request: &Request) -> Result<Option<serde_json::Value>, AdminError> {
    use std::io::{BufRead, BufReader, Write};
    let path = socket_path(state_dir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(source) => return Err(AdminError::Unreachable { path, source }),
    };
    let mut line = serde_json::to_string(request).expect("a request serializes");
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| AdminError::NotUnderstood { detail: e.to_string(), answer: answer.clone() })?;
    match response {
        Response { ok: true, result, .. } => Ok(Some(result.unwrap_or_default())),
        Response { error, .. } => Err(AdminError::Refused(error.unwrap_or_else(|| "the daemon refused".into()))),
    }
}

/// Listens on the admin socket; each request is answered by `handle`.
pub(super) async fn serve<H, F>(state_dir: PathBuf, handle: H) -> Result<(), AdminError>
where
    H: Fn(Request) -> F + Send + Sync + 'static + Clone,
    F: Future<Output = Result<serde_json::Value, String>> + Send + 'static,
{
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let path = socket_path(&state_dir);
    // A socket left by a daemon that died: nobody answers on it.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        std::fs::remove_file(&path)?;
    }
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(source) => return Err(AdminError::Listen { path, source }),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        // A failed accept (a client gone before it was taken, a moment out of
        // file descriptors) must not close the endpoint for good.
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("admin endpoint: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let response = match serde_json::from_str::<Request>(&line) {
                Err(e) => Response { ok: false, result: None, error: Some(format!("not a request: {e}")) },
                Ok(request) => match handle(request).await {
                    Ok(result) => Response { ok: true, result: Some(result), error: None },
                    Err(error) => Response { ok: false, result: None, error: Some(error) },
                },
            };
            let mut text = serde_json::to_string(&response).unwrap_or_default();
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}
