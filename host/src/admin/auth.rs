//! The admin endpoint's bearer token: read from `[admin] token_file`, made
//! with 256 random bits (mode 0600) when the file is absent, and checked on
//! every request but the health checks and the console's static files.

use std::io::Write;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The token, kept as its digest: comparing digests takes the same time
/// whatever a guess has in common with the token.
#[derive(Clone)]
pub struct Token([u8; 32]);

/// Why the token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot create the admin token file `{path}`: {source}")]
    Create { path: String, source: std::io::Error },
    #[error("the admin token file `{0}` is empty: put a token in it, or remove it to have one made")]
    Empty(String),
}

impl Token {
    /// The token in `path`, made first if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenError::Empty(name));
                }
                warn_if_readable_by_others(path);
                Ok(Token::of(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| TokenError::Create {
                    path: name.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let token = hex::encode(bytes);
                create_private(path, &token).map_err(|source| TokenError::Create { path: name.clone(), source })?;
                tracing::info!(path = %name, "made a new admin token");
                Ok(Token::of(&token))
            }
            Err(source) => Err(TokenError::Read { path: name, source }),
        }
    }

    fn of(token: &str) -> Token {
        Token(Sha256::digest(token.as_bytes()).into())
    }

    fn admits(&self, presented: &str) -> bool {
        Token::of(presented).0 == self.0
    }
}

/// Writes a new file only its owner can read, failing if it exists.
fn create_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{token}")?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the admin token file can be read by other users: chmod 600 it");
    }
}

/// Refuses a request without the token.
pub async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.admits(presented.trim()) => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}
