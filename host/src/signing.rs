//! Plugin signatures: ed25519 over a plugin file's sha256, kept beside it as
//! `FILE.wasm.sig`, checked against the keys `synchost.toml` trusts.
//!
//! The sha256 pin in a tenant file says "this exact file"; a signature says
//! "made by someone we trust", so a publisher can ship new versions that a host
//! accepts without trusting whoever copies them into place.
//!
//! Formats, all one line of text:
//! - a public key: `ed25519:<base64 of 32 bytes>`;
//! - a secret key file: `synchost-secret-key-v1 ed25519:<base64 of the 32-byte seed>`;
//! - a signature file: `synchost-signature-v1 ed25519:<public key base64> <base64 signature>`.
//!
//! The signed message is `synchost-plugin-v1\n` followed by the file's sha256
//! in lowercase hex: the prefix keeps a plugin signature from meaning anything
//! in another protocol that uses the same key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

const KEY_PREFIX: &str = "ed25519:";
const SECRET_HEADER: &str = "synchost-secret-key-v1";
const SIGNATURE_HEADER: &str = "synchost-signature-v1";
const MESSAGE_PREFIX: &str = "synchost-plugin-v1\n";

/// A public key the host trusts to sign plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey(VerifyingKey);

impl TrustedKey {
    /// Parses `ed25519:<base64>`.
    pub fn parse(text: &str) -> Result<TrustedKey, String> {
        let encoded = text
            .trim()
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| format!("`{text}` is not a public key: write it as `ed25519:<base64>`"))?;
        let bytes = BASE64.decode(encoded).map_err(|e| format!("`{text}` is not valid base64: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("`{text}` has {} bytes; an ed25519 public key has 32", b.len()))?;
        VerifyingKey::from_bytes(&bytes).map(TrustedKey).map_err(|e| format!("`{text}` is not an ed25519 key: {e}"))
    }
}

impl std::fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{KEY_PREFIX}{}", BASE64.encode(self.0.as_bytes()))
    }
}

/// A signing key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot get random bytes for a key: {0}")]
    Random(String),
    #[error("cannot read `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("`{}` is not a synchost secret key (make one with `synchost plugin keygen`)", .0.display())]
    NotAKey(PathBuf),
}

/// A new signing key: the secret key file's text and the public key to trust.
pub fn generate_key() -> Result<(String, TrustedKey), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let secret = format!("{SECRET_HEADER} {KEY_PREFIX}{}\n", BASE64.encode(seed));
    Ok((secret, TrustedKey(key.verifying_key())))
}

/// Reads a secret key file written by [`generate_key`].
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable { path: path.to_path_buf(), source })?;
    let seed = text
        .trim()
        .strip_prefix(SECRET_HEADER)
        .and_then(|rest| rest.trim().strip_prefix(KEY_PREFIX))
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| KeyError::NotAKey(path.to_path_buf()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Where a plugin file's signature lives: beside it, `.sig` appended.
pub fn signature_path(plugin: &Path) -> PathBuf {
    let mut name = plugin.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The signature file's text for a plugin whose sha256 is `digest`.
pub fn sign(key: &SigningKey, digest: &str) -> String {
    let signature = key.sign(message(digest).as_bytes());
    format!(
        "{SIGNATURE_HEADER} {KEY_PREFIX}{} {}\n",
        BASE64.encode(key.verifying_key().as_bytes()),
        BASE64.encode(signature.to_bytes())
    )
}

/// Why a plugin's signature does not pass.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("it has no signature file `{0}` and the host requires signed plugins")]
    Missing(PathBuf),
    #[error("its signature file `{path}` cannot be read: {detail}")]
    Unreadable { path: PathBuf, detail: String },
    #[error("its signature file `{path}` is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("its signature in `{path}` does not match the file: the file was changed after it was signed")]
    Invalid { path: PathBuf },
    #[error("it is signed by {key}, which is not among the host's trusted_keys")]
    Untrusted { key: String },
}

/// Checks the signature beside `plugin` (whose sha256 is `digest`).
///
/// Returns the key that signed it, or `None` when there is no signature and
/// none is required. A signature that is present is always checked: a bad one
/// means the file was tampered with, whatever the host requires.
pub fn check(
    plugin: &Path,
    digest: &str,
    trusted: &[TrustedKey],
    required: bool,
) -> Result<Option<TrustedKey>, SignatureError> {
    let path = signature_path(plugin);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if required { Err(SignatureError::Missing(path)) } else { Ok(None) };
        }
        Err(e) => return Err(SignatureError::Unreadable { path, detail: e.to_string() }),
    };
    let malformed = |detail: String| SignatureError::Malformed { path: path.clone(), detail };
    let mut parts = text.split_whitespace();
    if parts.next() != Some(SIGNATURE_HEADER) {
        return Err(malformed(format!("it does not start with `{SIGNATURE_HEADER}`")));
    }
    let key = TrustedKey::parse(parts.next().unwrap_or_default()).map_err(malformed)?;
    let signature = parts
        .next()
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("the signature is not 64 bytes of base64".into()))?;
    key.0.verify_strict(message(digest).as_bytes(), &signature).map_err(|_| SignatureError::Invalid { path })?;
    if (required || !trusted.is_empty()) && !trusted.contains(&key) {
        return Err(SignatureError::Untrusted { key: key.to_string() });
    }
    Ok(Some(key))
}

fn message(digest: &str) -> String {
    format!("{MESSAGE_PREFIX}{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_plugin(dir: &Path, bytes: &[u8]) -> (PathBuf, String, TrustedKey) {
        let (secret, public) = generate_key().unwrap();
        let key_file = dir.join("publisher.key");
        std::fs::write(&key_file, secret).unwrap();
        let plugin = dir.join("p.wasm");
        std::fs::write(&plugin, bytes).unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        std::fs::write(signature_path(&plugin), sign(&read_secret_key(&key_file).unwrap(), &digest)).unwrap();
        (plugin, digest, public)
    }

    #[test]
    fn a_signature_by_a_trusted_key_passes_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (plugin, digest, public) = signed_plugin(dir.path(), b"component bytes");
        assert_eq!(check(&plugin, &digest, std::slice::from_ref(&public), true), Ok(Some(public.clone())));
        assert_eq!(TrustedKey::parse(&public.to_string()), Ok(public));
    }

    #[test]
    fn a_changed_file_or_an_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (plugin, digest, public) = signed_plugin(dir.path(), b"component bytes");
        let other_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"tampered"));
        assert!(matches!(check(&plugin, &other_digest, &[public], true), Err(SignatureError::Invalid { .. })));
        let (_, stranger) = generate_key().unwrap();
        assert!(matches!(check(&plugin, &digest, &[stranger], false), Err(SignatureError::Untrusted { .. })));
    }

    #[test]
    fn a_missing_signature_fails_only_when_required() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("unsigned.wasm");
        std::fs::write(&plugin, b"x").unwrap();
        assert_eq!(check(&plugin, "00", &[], false), Ok(None));
        assert!(matches!(check(&plugin, "00", &[], true), Err(SignatureError::Missing(_))));
    }
}
