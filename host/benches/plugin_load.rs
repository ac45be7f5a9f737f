//! Loading plugins: what the compiled-code cache saves at a restart, and what
//! many tenants sharing a few plugins cost in memory.
//!
//! a. **Restart with many distinct plugins.** `--plugins` tenants (default
//!    100), each with a file source → its own field mapper → a file
//!    destination. The mappers are distinct components: the bundled
//!    `field_mapper.wasm` with a distinct custom section appended (valid at
//!    the end of a component, and a new sha256 each), so a load has
//!    `--plugins` + 2 components to compile. `Runtime::load` (a fresh engine,
//!    as after a restart) is timed three ways: with the cache turned off (the
//!    baseline: compile everything, write nothing), cold (an empty cache:
//!    compile everything and write the cache), and warm (the cache filled).
//! b. **Memory of many tenants.** `--tenants` tenants (default 1,000) with the
//!    same three bundled plugins and one pipeline each, loaded through
//!    `Runtime::load` and left idle, each case in its own process: VmRSS
//!    before the load, and VmRSS and VmHWM (peak) after it, from
//!    /proc/self/status. Cold (the process compiles the three plugins) and
//!    warm (it loads them from the cache the cold one wrote).
//!
//! Times are medians of `--repeat` loads (default 3).
//!
//! Run: `cargo bench -p synchost --bench plugin_load` (`-- --plugins N
//! --tenants N --repeat N` to change the sizes).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use synchost::bundled::{FIELD_MAPPER, FILE_DESTINATION, FILE_SOURCE};
use synchost::plugin::{CompileStats, PluginSetup, plugin_info};
use synchost::{Runtime, Tenants};

mod common;
use common::{digest, median};

// The allocator the `synchost` binary uses, so that RSS is the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIB: f64 = 1024.0 * 1024.0;

struct Args {
    plugins: usize,
    tenants: usize,
    repeat: usize,
    /// Set in a child process: measure the memory of one load of `--dir`.
    memory: Option<String>,
    dir: Option<String>,
}

fn args() -> Args {
    let mut args = Args { plugins: 100, tenants: 1000, repeat: 3, memory: None, dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match arg.as_str() {
            "--plugins" => args.plugins = value().parse().expect("a number after --plugins"),
            "--tenants" => args.tenants = value().parse().expect("a number after --tenants"),
            "--repeat" => args.repeat = value().parse().expect("a number after --repeat"),
            "--memory" => args.memory = Some(value()),
            "--dir" => args.dir = Some(value()),
            _ => {} // cargo bench passes `--bench`
        }
    }
    args
}

/// `n` as an unsigned LEB128, as section sizes are written in wasm binaries.
fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a custom section named `synchost-bench` holding `payload`
/// appended: the same plugin, under another sha256.
fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"synchost-bench";
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(payload);
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section id
    leb128(body.len(), &mut bytes);
    bytes.extend_from_slice(&body);
    bytes
}

/// A plugin table of a tenant file.
fn plugin_table(name: &str, file: &str, digest: &str, rest: &str) -> String {
    format!("[plugins.{name}]\npath = \"{file}\"\nsha256 = \"{digest}\"\n{rest}\n")
}

/// A tenant: file source → the mapper in `mapper_file` → file destination,
/// one manual diff pipeline.
fn tenant(mapper_file: &str, mapper_digest: &str) -> String {
    plugin_table(
        "src",
        FILE_SOURCE.file_name,
        &digest(FILE_SOURCE.bytes),
        "dirs = [{ host = \"../data/in\", guest = \"/in\" }]\nconfig = { snapshot = \"/in/people.csv\", key = \"id\" }",
    ) + &plugin_table(
        "map",
        mapper_file,
        mapper_digest,
        "config = { fields = [{ name = \"id\", from = \"id\" }, { name = \"name\", template = \"{name|upper}\" }] }",
    ) + &plugin_table(
        "dst",
        FILE_DESTINATION.file_name,
        &digest(FILE_DESTINATION.bytes),
        "dirs = [{ host = \"../data/out\", guest = \"/out\", write = true }]\nconfig = { dir = \"/out\" }",
    ) + "[pipelines.main]\nmode = \"diff\"\nsource = \"src\"\ntransforms = [\"map\"]\ndestination = \"dst\"\n"
}

/// A host directory with the bundled plugins and `tenants` tenants; with
/// `distinct_mappers`, each tenant's mapper is a component of its own.
fn host_dir(tenants: usize, distinct_mappers: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["plugins", "tenants", "data/in", "data/out"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for plugin in [FILE_SOURCE, FILE_DESTINATION, FIELD_MAPPER] {
        std::fs::write(dir.path().join("plugins").join(plugin.file_name), plugin.bytes).unwrap();
    }
    std::fs::write(dir.path().join("data/in/people.csv"), "id,name\n1,Ann\n").unwrap();
    let shared_mapper = digest(FIELD_MAPPER.bytes);
    for i in 0..tenants {
        let text = if distinct_mappers {
            let bytes = with_custom_section(FIELD_MAPPER.bytes, format!("mapper {i}").as_bytes());
            let file = format!("field_mapper_{i:04}.wasm");
            std::fs::write(dir.path().join("plugins").join(&file), &bytes).unwrap();
            tenant(&file, &digest(&bytes))
        } else {
            tenant(FIELD_MAPPER.file_name, &shared_mapper)
        };
        std::fs::write(dir.path().join(format!("tenants/t{i:04}.toml")), text).unwrap();
    }
    set_host_file(dir.path(), true);
    dir
}

fn set_host_file(dir: &Path, cache: bool) {
    let text = if cache { "state_dir = \"state\"\n" } else { "state_dir = \"state\"\ncompiled_cache = false\n" };
    std::fs::write(dir.join("synchost.toml"), text).unwrap();
}

/// One `Runtime::load` of every tenant: seconds, and where the components came from.
fn timed_load(dir: &Path) -> (f64, CompileStats) {
    let started = Instant::now();
    let runtime = Runtime::load(&dir.join("synchost.toml"), Tenants::All).expect("the bench config loads");
    let seconds = started.elapsed().as_secs_f64();
    (seconds, runtime.engine.compile_stats())
}

fn restart(args: &Args) {
    assert!(args.plugins > 0, "--plugins must be at least 1");
    let components = args.plugins as u64 + 2;
    let host = host_dir(args.plugins, true);
    let dir = host.path();
    println!(
        "a. restart: {} tenants, {components} distinct components ({} field mappers made distinct by a custom \
         section, the file source and the file destination), median of {}",
        args.plugins, args.plugins, args.repeat
    );

    // The appended section must leave a working plugin, not just one that compiles.
    let runtime = Runtime::load(&dir.join("synchost.toml"), Tenants::All).expect("the bench config loads");
    let last = format!("t{:04}", args.plugins - 1);
    let tenant = runtime.tenant(&last).expect("every tenant loaded");
    let info = plugin_info(&runtime.engine, &tenant.plugins["map"], &PluginSetup::bare("map"))
        .expect("the altered mapper runs");
    assert_eq!(info.name, "field-mapper", "the altered mapper answers info()");
    drop((tenant, runtime));
    let cache_dir = dir.join("state/compiled");
    let cache_bytes: u64 = std::fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    std::fs::remove_dir_all(&cache_dir).unwrap();

    let (mut off, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        set_host_file(dir, false);
        let (seconds, stats) = timed_load(dir);
        assert_eq!((stats.compiled, stats.disk_hits), (components, 0), "cache off: {stats:?}");
        off.push(seconds);

        set_host_file(dir, true);
        let (seconds, stats) = timed_load(dir);
        assert_eq!((stats.compiled, stats.disk_hits), (components, 0), "cold: {stats:?}");
        cold.push(seconds);

        let (seconds, stats) = timed_load(dir);
        assert_eq!((stats.compiled, stats.disk_hits), (0, components), "warm: {stats:?}");
        warm.push(seconds);
        std::fs::remove_dir_all(&cache_dir).unwrap();
    }
    let (off, cold, warm) = (median(off), median(cold), median(warm));
    let per = |seconds: f64| seconds * 1000.0 / components as f64;
    println!("{:<40} {:>8.3} s {:>8.1} ms/component", "cache off (baseline: compile all)", off, per(off));
    println!(
        "{:<40} {:>8.3} s {:>8.1} ms/component  {:.2}x cache-off time",
        "cold (empty cache: compile and write)",
        cold,
        per(cold),
        cold / off
    );
    println!(
        "{:<40} {:>8.3} s {:>8.1} ms/component  {:.3}x cold time ({:.0}x faster)",
        "warm (cache filled: load from disk)",
        warm,
        per(warm),
        warm / cold,
        cold / warm
    );
    println!(
        "{:<40} {:>8.1} MiB on disk for {components} components ({:.2} MiB each; the .wasm files are {:.2} MiB each)",
        "cache size",
        cache_bytes as f64 / MIB,
        cache_bytes as f64 / MIB / components as f64,
        FIELD_MAPPER.bytes.len() as f64 / MIB
    );
}

/// VmRSS and VmHWM of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// In a child process: one load of `dir`, printing a line the parent reads.
fn memory_child(dir: &Path) {
    let (before, _) = rss();
    let started = Instant::now();
    let runtime = Runtime::load(&dir.join("synchost.toml"), Tenants::All).expect("the bench config loads");
    let seconds = started.elapsed().as_secs_f64();
    let (after, peak) = rss();
    let stats = runtime.engine.compile_stats();
    let tenants = runtime.tenants().len();
    println!(
        "{before} {after} {peak} {seconds} {tenants} {} {} {}",
        stats.compiled, stats.disk_hits, stats.memory_hits
    );
}

fn memory(args: &Args) {
    let host = host_dir(args.tenants, false);
    println!(
        "b. memory: {} tenants sharing the three bundled plugins (one pipeline each), loaded and idle; \
         one process per case",
        args.tenants
    );
    let exe = std::env::current_exe().unwrap();
    for case in ["cold", "warm"] {
        let output = Command::new(&exe).args(["--memory", case, "--dir"]).arg(host.path()).output().unwrap();
        assert!(output.status.success(), "the {case} child failed: {}", String::from_utf8_lossy(&output.stderr));
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<f64> = line.split_whitespace().map(|f| f.parse().unwrap()).collect();
        let [before, after, peak, seconds, tenants, compiled, disk_hits, memory_hits] = fields[..] else {
            panic!("the {case} child printed `{line}`")
        };
        assert_eq!(tenants as usize, args.tenants, "every tenant loaded");
        println!(
            "{:<6} load {:>6.2} s  RSS before {:>6.1} MiB, after {:>6.1} MiB (+{:.1} MiB, {:.1} KiB/tenant), \
             peak {:>6.1} MiB  [{compiled} compiled, {disk_hits} from the cache, {memory_hits} shared]",
            case,
            seconds,
            before / MIB,
            after / MIB,
            (after - before) / MIB,
            (after - before) / 1024.0 / args.tenants as f64,
            peak / MIB,
        );
        let target = 200.0;
        println!(
            "{:<6} target: RSS at most {target:.0} MiB; peak is {:.2}x the target{}",
            "",
            peak / MIB / target,
            if peak / MIB <= target { " (met)" } else { " (NOT met)" }
        );
    }
}

fn main() {
    let args = args();
    if let (Some(_case), Some(dir)) = (&args.memory, &args.dir) {
        memory_child(Path::new(dir));
        return;
    }
    restart(&args);
    memory(&args);
}
