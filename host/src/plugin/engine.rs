//! The one wasmtime engine of the process, the linker every plugin is
//! instantiated through, and the compiled components, one per sha256: in
//! memory for the life of the engine, and on disk (see `cache`) across
//! restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{CONFIG_EXPORT, ConfigSchemaIndices, DestinationPluginPre, SourcePluginPre, TransformPluginPre};
use super::cache::{DiskCache, Miss};
use super::capability::services::HostServices;
use super::ctx::PluginCtx;
use super::error::PluginError;
use super::kind::{PluginKind, WIT_PACKAGE, WIT_VERSION, is_compatible, is_legacy};
use super::legacy;

/// How often the epoch advances: the granularity of call deadlines.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The wasm stack a call may use. An engine-wide setting in wasmtime, so the
/// same for every plugin: deep enough for any reasonable parser, and a
/// runaway recursion traps long before it could touch the host's own stack.
pub(super) const MAX_WASM_STACK: usize = 1 << 20;

/// Compiles plugins and keeps them compiled. Cheap to share (`Arc`).
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginCtx>,
    /// One slot per digest, filled once the component is compiled.
    compiled: Mutex<HashMap<String, Arc<CompileSlot>>>,
    /// `None` when the host keeps no compiled code on disk.
    cache: Option<DiskCache>,
    stats: Mutex<CompileStats>,
    ticker_stop: Arc<AtomicBool>,
    fuel_metering: bool,
    max_plugin_size: u64,
    max_compile_time: Duration,
    /// What the capabilities share across instances; closed with the engine.
    services: Arc<HostServices>,
}

/// Locked by the one thread compiling a digest; the others wait for its result.
type CompileSlot = Mutex<Option<Arc<CompiledPlugin>>>;

/// How the engine is set up. All come from synchost.toml (see `HostConfig`).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Compile every plugin with fuel counting (`[limits] fuel`). It costs
    /// speed, so it is on only when the host config asks for it.
    pub fuel_metering: bool,
    /// Keep compiled code here between runs (`compiled_cache_dir`); `None`:
    /// compile every plugin at every start.
    pub compiled_cache_dir: Option<PathBuf>,
    /// The largest component compiled, in bytes (`max_plugin_size`).
    pub max_plugin_size: u64,
    /// How long compiling one component may take (`max_compile_time`).
    pub max_compile_time: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            fuel_metering: false,
            compiled_cache_dir: None,
            max_plugin_size: DEFAULT_MAX_PLUGIN_SIZE,
            max_compile_time: crate::config::DEFAULT_MAX_COMPILE_TIME,
        }
    }
}

impl EngineOptions {
    /// How the plugin engine is set up for this host.
    pub fn for_host(host: &crate::config::HostConfig) -> EngineOptions {
        EngineOptions {
            fuel_metering: host.fuel_metering(),
            compiled_cache_dir: host.compiled_cache_dir.clone(),
            max_plugin_size: host.max_plugin_size,
            max_compile_time: host.max_compile_time,
        }
    }
}

pub use crate::config::DEFAULT_MAX_PLUGIN_SIZE;

/// Where [`PluginEngine::compile`] found its components, counted since the
/// engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Already compiled by this engine (the same bytes again, e.g. another
    /// tenant's copy of a plugin).
    pub memory_hits: u64,
    /// Loaded from the compiled-code cache on disk.
    pub disk_hits: u64,
    /// Compiled from the `.wasm`: nothing usable was cached, or there is no cache.
    pub compiled: u64,
    /// Cache files that could not be used (damaged, not the host's, or refused
    /// by wasmtime); each of these was compiled and its file replaced.
    pub rejected: u64,
}

/// A component compiled and linked, ready to instantiate for any tenant.
pub struct CompiledPlugin {
    /// sha256 of the `.wasm` file, lowercase hex.
    pub digest: String,
    pub kind: PluginKind,
    /// The WIT package version the component was built against.
    pub wit_version: String,
    pub(super) pre: WorldPre,
    /// Where the plugin's `config` export is (WIT 0.2.1 on), with what it
    /// is instantiated for that call alone; `None`: the plugin declares no
    /// config schema.
    pub(super) config_schema: Option<(wasmtime::component::InstancePre<PluginCtx>, ConfigSchemaIndices)>,
}

pub(super) enum WorldPre {
    Source(SourcePluginPre<PluginCtx>),
    Destination(DestinationPluginPre<PluginCtx>),
    Transform(TransformPluginPre<PluginCtx>),
    /// Plugins built against WIT 0.1.x (see [`legacy`]).
    LegacySource(legacy::SourcePluginPre<PluginCtx>),
    LegacyDestination(legacy::DestinationPluginPre<PluginCtx>),
    LegacyTransform(legacy::TransformPluginPre<PluginCtx>),
}

/// The WebAssembly engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly engine: {0}")]
pub struct EngineError(String);

impl From<wasmtime::Error> for EngineError {
    fn from(error: wasmtime::Error) -> EngineError {
        EngineError(format!("{error:#}"))
    }
}

impl From<std::io::Error> for EngineError {
    fn from(error: std::io::Error) -> EngineError {
        EngineError(error.to_string())
    }
}

impl PluginEngine {
    /// The engine, with an epoch ticker thread that runs until it is dropped.
    pub fn new(options: EngineOptions) -> Result<PluginEngine, EngineError> {
        let EngineOptions { fuel_metering, compiled_cache_dir, max_plugin_size, max_compile_time } = options;
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Deadlines interrupt a call through the epoch, which costs far
            // less per call than fuel.
            .epoch_interruption(true)
            .consume_fuel(fuel_metering)
            .max_wasm_stack(MAX_WASM_STACK)
            // Plugin calls are synchronous: the cheaper call path will do.
            .concurrency_support(false);
        // SYNCHOST_PERFMAP=1 names compiled plugin code for `perf report`.
        if std::env::var_os("SYNCHOST_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(EngineError::from)?;

        let mut linker = Linker::new(&engine);
        super::capability::add_to_linker(&mut linker)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticking_engine, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new().name("synchost-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                ticking_engine.increment_epoch();
            }
        })?;
        let cache = compiled_cache_dir.map(|dir| DiskCache::new(dir, &engine));
        Ok(PluginEngine {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            cache,
            stats: Mutex::default(),
            ticker_stop,
            fuel_metering,
            max_plugin_size,
            max_compile_time,
            services: HostServices::new()?,
        })
    }

    pub(super) fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether calls are metered with fuel (`[limits] fuel` in synchost.toml).
    pub fn fuel_metering(&self) -> bool {
        self.fuel_metering
    }

    /// Where compiled code is kept between runs, if it is.
    pub fn compiled_cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(DiskCache::dir)
    }

    /// Where `compile` has found its components so far.
    pub fn compile_stats(&self) -> CompileStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, counter: fn(&mut CompileStats) -> &mut u64) {
        *counter(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner)) += 1;
    }

    /// Compiles `bytes` (named `plugin` in errors), or returns the plugin already
    /// compiled from the same bytes, by this engine or (see `cache`) by an
    /// earlier one with the same configuration.
    ///
    /// Compiling takes up to seconds of CPU: call this from a thread that may
    /// block (`spawn_blocking` in async code), never from an async task.
    pub fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Arc<CompiledPlugin>, PluginError> {
        if bytes.len() as u64 > self.max_plugin_size {
            return Err(PluginError::TooLarge {
                plugin: plugin.to_string(),
                size: bytesize::ByteSize::b(bytes.len() as u64),
                max: bytesize::ByteSize::b(self.max_plugin_size),
            });
        }
        let digest = hex::encode(Sha256::digest(bytes));
        // The map is locked only to find the digest's slot. The slot stays
        // locked while its component is compiled, so a second caller with the
        // same bytes waits for the first instead of compiling them (and
        // writing their cache file) a second time, and callers with other
        // bytes are not held up at all.
        let slot =
            self.compiled.lock().expect("compiled-plugin map poisoned").entry(digest.clone()).or_default().clone();
        // A panic while compiling leaves the slot empty, which is still true.
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(compiled) = &*slot {
            self.count(|s| &mut s.memory_hits);
            return Ok(compiled.clone());
        }
        let compiled = Arc::new(self.compile_new(plugin, bytes, digest)?);
        *slot = Some(compiled.clone());
        Ok(compiled)
    }

    fn compile_new(&self, plugin: &str, bytes: &[u8], digest: String) -> Result<CompiledPlugin, PluginError> {
        let not_a_component = |detail: String| PluginError::NotAComponent { plugin: plugin.to_string(), detail };
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(not_a_component(
                    "it is a core WebAssembly module; build the plugin for wasm32-wasip2, which makes a component"
                        .into(),
                ));
            }
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            _ => return Err(not_a_component("the file does not start with the WebAssembly header".into())),
        }
        let component = self.component(plugin, &digest, bytes)?;

        let mut found = Vec::new();
        let mut exports = Vec::new();
        for (name, _) in component.component_type().exports(&self.engine) {
            exports.push(name.to_string());
            if let Some((kind, version)) = PluginKind::from_export(name) {
                found.push((kind, version.to_string()));
            }
        }
        let (kind, wit_version) = match found.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(PluginError::NotAPlugin {
                    plugin: plugin.to_string(),
                    exports: if exports.is_empty() { "nothing".into() } else { exports.join(", ") },
                });
            }
            several => {
                return Err(PluginError::SeveralKinds {
                    plugin: plugin.to_string(),
                    kinds: several.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>().join(", "),
                });
            }
        };
        if !is_compatible(&wit_version) {
            return Err(PluginError::IncompatibleVersion {
                plugin: plugin.to_string(),
                package: WIT_PACKAGE,
                found: wit_version,
                supported: format!("{WIT_VERSION} (or 0.1.x up to {})", legacy::LEGACY_WIT_VERSION),
            });
        }

        let link_error =
            |e: wasmtime::Error| PluginError::Link { plugin: plugin.to_string(), detail: format!("{e:#}") };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link_error)?;
        let config_schema = match component.get_export_index(None, CONFIG_EXPORT) {
            None => None,
            Some(_) => Some((instance_pre.clone(), ConfigSchemaIndices::new(&instance_pre).map_err(link_error)?)),
        };
        let pre = match (kind, is_legacy(&wit_version)) {
            (PluginKind::Source, false) => WorldPre::Source(SourcePluginPre::new(instance_pre).map_err(link_error)?),
            (PluginKind::Destination, false) => {
                WorldPre::Destination(DestinationPluginPre::new(instance_pre).map_err(link_error)?)
            }
            (PluginKind::Transform, false) => {
                WorldPre::Transform(TransformPluginPre::new(instance_pre).map_err(link_error)?)
            }
            (PluginKind::Source, true) => {
                WorldPre::LegacySource(legacy::SourcePluginPre::new(instance_pre).map_err(link_error)?)
            }
            (PluginKind::Destination, true) => {
                WorldPre::LegacyDestination(legacy::DestinationPluginPre::new(instance_pre).map_err(link_error)?)
            }
            (PluginKind::Transform, true) => {
                WorldPre::LegacyTransform(legacy::TransformPluginPre::new(instance_pre).map_err(link_error)?)
            }
        };
        Ok(CompiledPlugin { digest, kind, wit_version, pre, config_schema })
    }

    /// The machine code for `bytes`: from the cache on disk if it holds a
    /// usable copy, else compiled (and then stored there). The plugin checks
    /// above run either way; the cache only saves compiling.
    fn component(&self, plugin: &str, digest: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        let not_a_component =
            |e: wasmtime::Error| PluginError::NotAComponent { plugin: plugin.to_string(), detail: format!("{e:#}") };
        let cache = self.cache.as_ref();
        if let Some(cache) = cache {
            let path = cache.path(digest);
            match cache.load(&self.engine, digest) {
                Ok(component) => {
                    self.count(|s| &mut s.disk_hits);
                    crate::metrics::cache_lookup(true);
                    tracing::debug!(plugin, path = %path.display(), "compiled-code cache hit");
                    return Ok(component);
                }
                Err(Miss::Absent) => {
                    tracing::debug!(plugin, path = %path.display(), "compiled-code cache miss: compiling");
                }
                Err(Miss::Rejected(reason)) => {
                    self.count(|s| &mut s.rejected);
                    tracing::warn!(plugin, path = %path.display(), "compiled-code cache file not used ({reason}): compiling again");
                }
            }
        }
        self.count(|s| &mut s.compiled);
        if cache.is_some() {
            crate::metrics::cache_lookup(false);
        }
        let artifact = self.precompile(plugin, bytes)?.map_err(not_a_component)?;
        // The cache only saves time: a host that cannot write it (a read-only
        // or full disk) still runs, and compiles again next time.
        if let Some(cache) = cache
            && let Err(e) = cache.store(digest, &artifact)
        {
            tracing::warn!(plugin, path = %cache.path(digest).display(), "cannot write the compiled-code cache: {e}");
        }
        // SAFETY: `artifact` is what this engine's `precompile_component`
        // returned a moment ago, never written to since.
        unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(not_a_component)
    }

    /// Compiles `bytes` to machine code on a thread of its own, waiting no
    /// longer than `max_compile_time`. wasmtime cannot stop a compile, so
    /// one that takes too long runs on, detached, and its result is
    /// dropped: the caller (a reload, a daemon start) gets its answer in
    /// time, and only this plugin is refused.
    fn precompile(&self, plugin: &str, bytes: &[u8]) -> Result<wasmtime::Result<Vec<u8>>, PluginError> {
        let (engine, bytes) = (self.engine.clone(), bytes.to_vec());
        let (done, result) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("compile {plugin}"))
            .spawn(move || done.send(engine.precompile_component(&bytes)));
        if let Err(e) = spawned {
            return Ok(Err(wasmtime::Error::msg(format!("cannot start a thread to compile it: {e}"))));
        }
        match result.recv_timeout(self.max_compile_time) {
            Ok(artifact) => Ok(artifact),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(PluginError::CompileTooSlow {
                plugin: plugin.to_string(),
                max: humantime::format_duration(self.max_compile_time),
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Ok(Err(wasmtime::Error::msg("the compiler stopped without an answer")))
            }
        }
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
