//! Writing files safely beside other writers: a shard's lock, and files
//! replaced whole so that readers see the old content or the new, never half.
//!
//! Several writers may apply batches to one data set at once (the host runs an
//! event sync in parallel lanes, each with its own instance of this plugin).
//! Each append to a shard's log, and each fold of it, holds the shard's lock
//! file (`shard-NNN.lock`, made with `create_new`, which fails if it exists).
//! WASI has no advisory locks and no process ids, so a lock left behind by a
//! killed process is recognised by its age (its modification time): one older
//! than `lock_stale_ms` is broken. A writer holds a lock for milliseconds, far
//! below that. The host spreads keys over lanes with the same hash as the
//! shards here, so with a shard count that is a multiple of the lane count the
//! locks are never contended; they are what keeps any other combination correct.

use std::fs;
use std::io::Write;

use synchost_plugin_sdk::{self as sdk, Error};

/// Milliseconds since the Unix epoch (WASI's wall clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How old the file at `path` is (its modification time), if it is there.
fn age_ms(path: &str) -> Option<u64> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_millis() as u64)
}

/// A shard's lock, held while it is rewritten; released when dropped.
pub(crate) struct ShardLock {
    path: String,
}

impl ShardLock {
    /// How long a writer waits for a lock held by another live writer before
    /// giving up with a transient error (the host retries the operations).
    const MAX_WAIT_MS: u64 = 30_000;

    pub(crate) fn take(path: &str, stale_ms: u64) -> Result<ShardLock, Error> {
        let started = now_ms();
        loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(path) {
                // Its creation time tells others when it is stale: nothing is
                // written into it, as each write would be one more call out
                // of the sandbox per shard per batch.
                Ok(_) => return Ok(ShardLock { path: path.to_string() }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if age_ms(path).is_some_and(|age| age > stale_ms) {
                        Self::break_stale(path, stale_ms);
                        continue;
                    }
                    if now_ms().saturating_sub(started) > Self::MAX_WAIT_MS {
                        return Err(Error::Transient(format!(
                            "`{path}` has been held by another writer for over {} ms",
                            Self::MAX_WAIT_MS
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(sdk::io_error(&format!("cannot create the lock `{path}`"), e)),
            }
        }
    }

    /// Removes the lock at `path` if it is still stale, one breaker at a
    /// time: a breaker holds `….break` (made with `create_new`) while it
    /// looks again and removes. Without it, two writers that both saw the
    /// stale lock could each remove "it", the second removing the fresh lock
    /// the first had just taken, and both would write the shard at once (the
    /// fleet test caught lanes doing so).
    fn break_stale(path: &str, stale_ms: u64) {
        let breaker = format!("{path}.break");
        match fs::OpenOptions::new().write(true).create_new(true).open(&breaker) {
            Ok(_) => {
                if age_ms(path).is_some_and(|age| age > stale_ms) {
                    sdk::log::warn(&format!("breaking the stale lock `{path}` (older than {stale_ms} ms)"));
                    let _ = fs::remove_file(path);
                }
                let _ = fs::remove_file(&breaker);
            }
            // Another writer is breaking it. A breaker is held for a few
            // calls: one left by a writer killed meanwhile is itself stale.
            Err(_) => {
                if age_ms(&breaker).is_some_and(|age| age > stale_ms) {
                    let _ = fs::remove_file(&breaker);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

impl Drop for ShardLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes a file so that readers see the old or the new content, never half.
/// A shard's temporary file is its own (`….tmp`, written under the shard's
/// lock, and left at most once by a killed writer); `layout.json` may be
/// written by several new lanes at once, so each writes its own temporary file.
pub(crate) fn write_atomically(path: &str, content: &[u8], shared: bool) -> Result<(), Error> {
    let temporary = if shared {
        // Unique to this writer: lanes writing the same file (a new data
        // set's layout, say) start in the same instant, so the clock alone
        // can give two of them one name, and one rename then finds no file.
        use std::hash::{BuildHasher, Hasher};
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        format!("{path}.{nanos:x}-{random:x}.tmp")
    } else {
        format!("{path}.tmp")
    };
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().map_err(|e| {
        // A write cut short (a full disk, say) leaves no half file behind.
        let _ = fs::remove_file(&temporary);
        sdk::io_error(&format!("cannot write `{path}`"), e)
    })
}
