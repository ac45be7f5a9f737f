//! Whole plugins as a stranger may ship them: components built from arbitrary
//! valid core modules (wasm-smith) that have exactly a plugin world's imports
//! and exports, so that random code calls every host function with random
//! arguments and hands random data back from every export. Each one is
//! inspected as `synchost plugin inspect` does, then run as the source, the
//! transform or the destination of a diff or event pipeline beside the
//! bundled file plugins. Refusals, traps and limit breaches are the expected
//! outcomes; a host panic (in any thread: libFuzzer aborts on one) or a hang
//! is a finding.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::AtomicBool;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use synchost::plugin::{EngineOptions, PluginEngine, PluginSetup, config_schema, plugin_info};
use synchost::{PipelineId, Runtime, SyncOptions, Tenants};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve, WorldId};

/// The role a generated plugin takes in its pipeline.
#[derive(Clone, Copy, Debug, Arbitrary)]
enum Role {
    Source,
    Transform,
    Destination,
}

impl Role {
    fn world(self) -> &'static str {
        match self {
            Role::Source => "source-plugin",
            Role::Transform => "transform-plugin",
            Role::Destination => "destination-plugin",
        }
    }
}

/// One version of the WIT package, and per role its world and a module with
/// that world's imports and exports.
struct Wit {
    resolve: Resolve,
    shapes: Vec<(WorldId, Vec<u8>)>,
}

impl Wit {
    fn load(dir: &Path) -> Wit {
        let mut resolve = Resolve::default();
        let (package, _) = resolve.push_dir(dir).unwrap_or_else(|e| panic!("the WIT in {} parses: {e}", dir.display()));
        let shapes = [Role::Source, Role::Transform, Role::Destination]
            .iter()
            .map(|role| {
                let world = resolve.select_world(&[package], Some(role.world())).expect("the world exists");
                (world, wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync)))
            })
            .collect();
        Wit { resolve, shapes }
    }
}

struct Fixture {
    /// WIT 0.2.0, whose plugins export no config schema, so that generated
    /// ones reach their pipelines; and the current WIT, whose plugins do,
    /// which the host reads (and a generated plugin mostly traps in) before
    /// a tenant loads.
    wits: [Wit; 2],
    engine: PluginEngine,
    host: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
    let wits = [Wit::load(&wit.join("frozen/0.2.0")), Wit::load(&wit)];
    let host = tempfile::tempdir().expect("a scratch directory");
    for sub in ["plugins", "tenants", "data/in", "data/out"] {
        std::fs::create_dir_all(host.path().join(sub)).unwrap();
    }
    for plugin in synchost::bundled::ALL {
        std::fs::write(host.path().join("plugins").join(plugin.file_name), plugin.bytes).unwrap();
    }
    std::fs::write(host.path().join("synchost.toml"), "state_dir = \"state\"\n").unwrap();
    std::fs::write(host.path().join("data/in/rows.csv"), "id,name\n1,ada\n2,grace\n3,edsger\n").unwrap();
    std::fs::write(host.path().join("data/in/changes.jsonl"), "{\"op\":\"upsert\",\"row\":{\"id\":\"1\",\"name\":\"ada\"}}\n").unwrap();
    let engine = PluginEngine::new(EngineOptions::default()).expect("the engine starts");
    Fixture { wits, engine, host }
});

/// The harness reaches a whole pipeline: with the bundled file source in the
/// generated plugin's place, the run succeeds. (Checked once, at the first
/// input: a harness whose tenant never loads would fuzz nothing.)
static HARNESS_WORKS: LazyLock<()> = LazyLock::new(|| {
    let source = synchost::bundled::FILE_SOURCE.bytes;
    for event in [false, true] {
        let config = if event { r#"{ changelog = "/in/changes.jsonl", key = "id" }"# } else { r#"{ snapshot = "/in/rows.csv", key = "id" }"# };
        let report = run_pipeline(source, Role::Source, config, event)
            .unwrap_or_else(|e| panic!("the harness's own pipeline: {e}"));
        assert_eq!(report.status.to_string(), "succeeded", "the harness's own run: {:?}", report.error);
    }
});

/// A component with `role`'s world, built from an arbitrary module of its shape.
fn component(u: &mut Unstructured<'_>, role: Role) -> arbitrary::Result<Option<Vec<u8>>> {
    let wit = &FIXTURE.wits[usize::from(bool::arbitrary(u)?)];
    let (world, shape) = &wit.shapes[role as usize];
    let mut config = wasm_smith::Config {
        module_shape: Some(shape.clone()),
        max_funcs: u.int_in_range(0..=40)?,
        max_instructions: u.int_in_range(0..=400)?,
        // What the host's engine does not take, or a component cannot hold.
        allow_start_export: false,
        exceptions_enabled: false,
        gc_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        wide_arithmetic_enabled: false,
        compact_imports_enabled: false,
        ..wasm_smith::Config::default()
    };
    config.max_memory32_bytes = 1 << 26;
    let mut module = wasm_smith::Module::new(config, u)?.to_bytes();
    wit_component::embed_component_metadata(&mut module, &wit.resolve, *world, StringEncoding::UTF8, false)
        .expect("the world's metadata embeds");
    Ok(ComponentEncoder::default().validate(true).module(&module).and_then(|encoder| encoder.encode()).ok())
}

/// A tenant whose pipeline has the plugin `plugins/generated.wasm` (with
/// `digest`, and `config`) in `role`, and the bundled file plugins in the others.
fn tenant(role: Role, digest: &str, config: &str, event: bool) -> String {
    use synchost::bundled::{FILE_DESTINATION, FILE_SOURCE};
    let source_config = if event {
        r#"{ changelog = "/in/changes.jsonl", key = "id" }"#
    } else {
        r#"{ snapshot = "/in/rows.csv", key = "id" }"#
    };
    let generated = format!(
        "path = \"generated.wasm\"\nsha256 = \"{digest}\"\n\
         dirs = [{{ host = \"../data/in\", guest = \"/in\" }}]\n\
         limits = {{ call_timeout = \"300ms\", memory = \"64 MiB\", max_log = \"16 KiB\" }}\n\
         config = {config}\n"
    );
    let source = match role {
        Role::Source => generated.clone(),
        _ => format!(
            "path = \"{}\"\nsha256 = \"{}\"\ndirs = [{{ host = \"../data/in\", guest = \"/in\" }}]\nconfig = {source_config}\n",
            FILE_SOURCE.file_name,
            sha256(FILE_SOURCE.bytes)
        ),
    };
    let destination = match role {
        Role::Destination => generated.clone(),
        _ => format!(
            "path = \"{}\"\nsha256 = \"{}\"\n\
             dirs = [{{ host = \"../data/out\", guest = \"/out\", write = true }}]\n\
             config = {{ dir = \"/out\", shards = 2 }}\n",
            FILE_DESTINATION.file_name,
            sha256(FILE_DESTINATION.bytes)
        ),
    };
    let (transform, transforms) = match role {
        Role::Transform => (format!("[plugins.map]\n{generated}\n"), "[\"map\"]"),
        _ => (String::new(), "[]"),
    };
    let mode = if event { "mode = \"event\"" } else { "mode = \"diff\"\nmax_change_ratio = 100.0" };
    format!(
        "[plugins.src]\n{source}\n[plugins.dst]\n{destination}\n{transform}\
         [pipelines.main]\nsource = \"src\"\ntransforms = {transforms}\ndestination = \"dst\"\n\
         {mode}\n"
    )
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Runs the pipeline of a tenant with `plugin` in `role`: what the host
/// reported, or why the tenant did not load or the run was not recorded.
fn run_pipeline(plugin: &[u8], role: Role, config: &str, event: bool) -> Result<synchost::SyncReport, String> {
    let host = FIXTURE.host.path();
    std::fs::write(host.join("plugins/generated.wasm"), plugin).unwrap();
    std::fs::write(host.join("tenants/fuzz.toml"), tenant(role, &sha256(plugin), config, event)).unwrap();
    let runtime = Runtime::load(&host.join("synchost.toml"), Tenants::All).map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    let id = PipelineId { tenant: "fuzz".into(), pipeline: "main".into() };
    let job = runtime.job(&id, &stop, SyncOptions::default()).map_err(|e| e.to_string())?;
    job.run().map_err(|e| e.to_string())
}

fuzz_target!(|data: &[u8]| {
    LazyLock::force(&HARNESS_WORKS);
    let mut u = Unstructured::new(data);
    let (Ok(role), Ok(event)) = (Role::arbitrary(&mut u), bool::arbitrary(&mut u)) else { return };
    let Ok(Some(bytes)) = component(&mut u, role) else { return };

    // `plugin inspect`.
    let engine = &FIXTURE.engine;
    let Ok(compiled) = engine.compile("generated", &bytes) else { return };
    let setup = PluginSetup::bare("generated");
    let _ = plugin_info(engine, &compiled, &setup);
    let _ = config_schema(engine, &compiled, &setup);

    // A pipeline.
    let _ = run_pipeline(&bytes, role, "{}", event);
});
