//! The one wasmtime engine of the process, the linker every plugin is
//! instantiated through, and the compiled components, one per sha256.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{DestinationPluginPre, SourcePlugin, SourcePluginPre, TransformPluginPre};
use super::ctx::PluginCtx;
use super::error::PluginError;
use super::kind::{PluginKind, WIT_PACKAGE, WIT_VERSION, is_compatible};

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
    compiled: Mutex<HashMap<String, Arc<CompiledPlugin>>>,
    ticker_stop: Arc<AtomicBool>,
    fuel_metering: bool,
}

/// A component compiled and linked, ready to instantiate for any tenant.
pub struct CompiledPlugin {
    /// sha256 of the `.wasm` file, lowercase hex.
    pub digest: String,
    pub kind: PluginKind,
    /// The WIT package version the component was built against.
    pub wit_version: String,
    pub(super) pre: WorldPre,
}

pub(super) enum WorldPre {
    Source(SourcePluginPre<PluginCtx>),
    Destination(DestinationPluginPre<PluginCtx>),
    Transform(TransformPluginPre<PluginCtx>),
}

impl PluginEngine {
    /// The engine; `fuel_metering` compiles every plugin with fuel counting,
    /// which costs speed, so it is on only when the host config asks for it.
    pub fn new(fuel_metering: bool) -> anyhow::Result<PluginEngine> {
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
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        // Linked for every plugin; what a request may reach is decided per
        // plugin by its allowed_hosts (see `http`), and nothing by default.
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        SourcePlugin::add_to_linker::<_, HasSelf<PluginCtx>>(&mut linker, |ctx| ctx).map_err(anyhow::Error::from)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticking_engine, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new().name("synchost-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                ticking_engine.increment_epoch();
            }
        })?;
        Ok(PluginEngine { engine, linker, compiled: Mutex::new(HashMap::new()), ticker_stop, fuel_metering })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether calls are metered with fuel (`[limits] fuel` in synchost.toml).
    pub fn fuel_metering(&self) -> bool {
        self.fuel_metering
    }

    /// Compiles `bytes` (named `plugin` in errors), or returns the plugin already
    /// compiled from the same bytes.
    pub fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Arc<CompiledPlugin>, PluginError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(compiled) = self.compiled.lock().expect("compiled-plugin map poisoned").get(&digest) {
            return Ok(compiled.clone());
        }
        let compiled = Arc::new(self.compile_new(plugin, bytes, digest.clone())?);
        self.compiled.lock().expect("compiled-plugin map poisoned").insert(digest, compiled.clone());
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
        let component = Component::new(&self.engine, bytes).map_err(|e| not_a_component(format!("{e:#}")))?;

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
                supported: WIT_VERSION.to_string(),
            });
        }

        let link_error =
            |e: wasmtime::Error| PluginError::Link { plugin: plugin.to_string(), detail: format!("{e:#}") };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link_error)?;
        let pre = match kind {
            PluginKind::Source => WorldPre::Source(SourcePluginPre::new(instance_pre).map_err(link_error)?),
            PluginKind::Destination => {
                WorldPre::Destination(DestinationPluginPre::new(instance_pre).map_err(link_error)?)
            }
            PluginKind::Transform => WorldPre::Transform(TransformPluginPre::new(instance_pre).map_err(link_error)?),
        };
        Ok(CompiledPlugin { digest, kind, wit_version, pre })
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
