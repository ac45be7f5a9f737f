//! The compiled-code cache on disk. Compiling a component is by far the
//! slowest part of loading a plugin, so the engine keeps the machine code it
//! compiles in `<dir>/<sha256>-<engine>.cwasm` and a restart (or a `synchost
//! validate` beside a running daemon, or a hot swap back to an earlier
//! version) loads it instead of compiling again.
//!
//! The name is the key: `<sha256>` is the digest of the `.wasm` file and
//! `<engine>` is a hash of wasmtime's [`Engine::precompile_compatibility_hash`],
//! which covers the target, the compiler flags, the tunables (fuel metering
//! and epoch interruption among them), the wasm features and wasmtime's
//! version. An engine configured differently therefore looks for other files
//! and never sees this one; should two keys ever collide, wasmtime's own check
//! on deserializing refuses an artifact built for an incompatible engine.
//!
//! A file is wasmtime's artifact followed by a trailer: a sha256 over the
//! digest, the engine key and the artifact, and a magic tag. It is written to
//! a temporary file in the same directory and renamed into place, so a reader
//! sees a whole file or none; the checksum catches what renaming cannot (a
//! crash before the data reached the disk, truncation, a flipped bit, a file
//! copied to another digest's name). Whatever cannot be used is a miss: the
//! plugin is compiled again and the file replaced. Nothing is evicted; a file
//! is small (about three times its `.wasm`) and an operator may delete the
//! directory at any time.

use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Ends every cache file; a file without it was not written by this code.
const MAGIC: &[u8; 8] = b"synchcw1";
/// The checksum and the magic tag after the artifact.
const TRAILER_LEN: usize = 32 + MAGIC.len();

/// One engine's view of the cache directory.
pub(super) struct DiskCache {
    dir: PathBuf,
    /// The engine's compatibility hash, as 16 hex digits.
    engine_key: String,
}

/// Why the cache had no usable code for a digest.
pub(super) enum Miss {
    /// No file: the first time this engine sees the plugin.
    Absent,
    /// A file that must not be used, and why; it is recompiled and replaced.
    Rejected(String),
}

impl DiskCache {
    /// The cache in `dir` for code compiled by `engine`. The directory is made
    /// when the first file is stored.
    pub(super) fn new(dir: PathBuf, engine: &Engine) -> DiskCache {
        // `DefaultHasher::new()` is the same in every process of one build,
        // which is all a key needs: a host built with another Rust or
        // wasmtime looks for other files (and wasmtime would refuse these).
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        DiskCache { dir, engine_key: format!("{:016x}", hasher.finish()) }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the code compiled from the `.wasm` file with this digest lives.
    pub(super) fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The component compiled from the `.wasm` file with this digest, if the
    /// cache holds a copy this engine can use.
    pub(super) fn load(&self, engine: &Engine, digest: &str) -> Result<Component, Miss> {
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            // No file, or not even a directory to hold one (storing will say
            // why the directory cannot be made).
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                return Err(Miss::Absent);
            }
            Err(e) => return Err(Miss::Rejected(format!("cannot open it: {e}"))),
        };
        // Checked on the open file, which is then read: a file swapped in
        // between a check and a read is not possible.
        let metadata = file.metadata().map_err(|e| Miss::Rejected(format!("cannot stat it: {e}")))?;
        let me = rustix::process::geteuid().as_raw();
        if metadata.uid() != me || metadata.mode() & 0o022 != 0 {
            return Err(Miss::Rejected(format!(
                "it belongs to uid {} with mode {:o}, not to this host's uid {me} and writable by it alone",
                metadata.uid(),
                metadata.mode() & 0o7777
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).map_err(|e| Miss::Rejected(format!("cannot read it: {e}")))?;
        let artifact = self.verified(digest, &bytes)?;
        // SAFETY: `Component::deserialize` trusts its input to be an artifact
        // wasmtime produced (it checks the version and the engine settings,
        // not the machine code), so it must never see bytes someone else
        // chose. These bytes come from the host's own cache directory, from a
        // file owned by the host's user and writable by nobody else, and carry
        // the checksum that only `store` writes, over this digest, this
        // engine's key and exactly these bytes, which `store` got from
        // `Engine::precompile_component`. Damage or a file copied in from
        // elsewhere fails the checksum and is compiled again. (Bytes read into
        // memory rather than `deserialize_file`: the checksum needs them read
        // anyway, and a mapped file that an operator truncates or edits in
        // place would change code under a running plugin.)
        unsafe { Component::deserialize(engine, artifact) }
            .map_err(|e| Miss::Rejected(format!("wasmtime refused it: {e:#}")))
    }

    /// The artifact in a cache file's `bytes`, if its trailer vouches for it.
    fn verified<'a>(&self, digest: &str, bytes: &'a [u8]) -> Result<&'a [u8], Miss> {
        if bytes.len() < TRAILER_LEN {
            return Err(Miss::Rejected(format!("it is {} bytes long, too short to be a cache file", bytes.len())));
        }
        let (artifact, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        let (checksum, magic) = trailer.split_at(32);
        if magic != MAGIC {
            return Err(Miss::Rejected("it does not end with the cache file's tag (truncated?)".into()));
        }
        if checksum != self.checksum(digest, artifact).as_slice() {
            return Err(Miss::Rejected("its checksum does not match its contents".into()));
        }
        Ok(artifact)
    }

    /// Binds an artifact to the plugin digest and engine it was compiled for.
    fn checksum(&self, digest: &str, artifact: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(MAGIC);
        hasher.update(digest.as_bytes());
        hasher.update(self.engine_key.as_bytes());
        hasher.update(artifact);
        hasher.finalize().into()
    }

    /// Keeps `artifact`, compiled from the `.wasm` file with this digest,
    /// replacing any file already there.
    pub(super) fn store(&self, digest: &str, artifact: &[u8]) -> std::io::Result<PathBuf> {
        // Only the host's user may add code that the host will run.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let path = self.path(digest);
        // The temporary file is made readable and writable by its owner only;
        // it is unlinked if anything below fails.
        let mut file = tempfile::Builder::new().prefix(".compiling-").suffix(".tmp").tempfile_in(&self.dir)?;
        file.write_all(artifact)?;
        file.write_all(&self.checksum(digest, artifact))?;
        file.write_all(MAGIC)?;
        // No fsync: after a crash, a file whose data did not reach the disk
        // fails its checksum and is compiled again.
        file.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::engine::{EngineOptions, PluginEngine};

    fn cache(dir: &Path) -> DiskCache {
        DiskCache { dir: dir.to_path_buf(), engine_key: "00000000000000aa".into() }
    }

    #[test]
    fn a_stored_file_verifies_and_any_damage_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let digest = "ab".repeat(32);
        let path = cache.store(&digest, b"artifact bytes").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(cache.verified(&digest, &bytes).ok(), Some(&b"artifact bytes"[..]));

        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        assert!(matches!(cache.verified(&digest, &flipped), Err(Miss::Rejected(m)) if m.contains("checksum")));
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(cache.verified(&digest, truncated), Err(Miss::Rejected(m)) if m.contains("tag")));
        assert!(matches!(cache.verified(&digest, &bytes[..5]), Err(Miss::Rejected(m)) if m.contains("too short")));
        // The same bytes under another plugin's name are not that plugin's code.
        assert!(matches!(cache.verified(&"cd".repeat(32), &bytes), Err(Miss::Rejected(m)) if m.contains("checksum")));
    }

    #[test]
    fn files_are_private_to_the_host_user_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir.path().join("compiled"));
        let path = cache.store(&"ab".repeat(32), b"x").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o077, 0);
        assert_eq!(std::fs::metadata(cache.dir()).unwrap().mode() & 0o077, 0);
        let names: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [path.file_name().unwrap()]);
    }

    #[test]
    fn fuel_metering_changes_the_key_and_wasmtime_refuses_code_compiled_without_it() {
        let plain = PluginEngine::new(EngineOptions::default()).unwrap();
        let fuel = PluginEngine::new(EngineOptions { fuel_metering: true, ..EngineOptions::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plain_cache = DiskCache::new(dir.path().to_path_buf(), plain.engine());
        let fuel_cache = DiskCache::new(dir.path().to_path_buf(), fuel.engine());
        let digest = "ab".repeat(32);
        // What was found in wasmtime 48: the compatibility hash covers the
        // tunables, `consume_fuel` among them, so the names differ...
        assert_ne!(plain_cache.path(&digest), fuel_cache.path(&digest));
        assert_eq!(plain_cache.path(&digest), DiskCache::new(dir.path().to_path_buf(), plain.engine()).path(&digest));

        // ...and code compiled without fuel, even under the fuel engine's own
        // name and checksum, is refused by wasmtime's check on loading.
        let artifact = plain.engine().precompile_component(crate::bundled::FIELD_MAPPER.bytes).unwrap();
        fuel_cache.store(&digest, &artifact).unwrap();
        match fuel_cache.load(fuel.engine(), &digest) {
            Err(Miss::Rejected(reason)) => assert!(reason.contains("without fuel support"), "{reason}"),
            Err(Miss::Absent) => panic!("the file was stored"),
            Ok(_) => panic!("code compiled without fuel was loaded into an engine that meters it"),
        }
        plain_cache.store(&digest, &artifact).unwrap();
        assert!(plain_cache.load(plain.engine(), &digest).is_ok(), "the engine it was compiled for loads it");
    }
}
