//! Hostile plugins: the host must survive every one of them.
//!
//! Each test runs `synchost run` with two tenants side by side in one host
//! process: `evil`, an event pipeline (file source → a hostile transform →
//! file destination), and `good`, an ordinary diff pipeline over a few hundred
//! rows. The hostile transform is the `hostile_transform.wasm` fixture
//! (plugins/fixtures/hostile-transform), with one attack chosen in its
//! config, or a plugin file that cannot even be loaded. For every attack the
//! tests check that
//!
//! 1. the daemon stays up (and still stops cleanly on SIGTERM),
//! 2. the failure is reported precisely: the tenant, the plugin, and the limit
//!    or capability that stopped it,
//! 3. nothing of the evil tenant is committed: no cursor moves, a later run
//!    starts from where the first did, and its destination stays empty,
//! 4. the good tenant, syncing at the same time in the same process, finishes
//!    with all its rows right, and goes on syncing a change made afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, HostDir, file_pipeline_tenant, sha256};
use serde_json::{Value, json};

/// How long to wait for anything the daemon does. The suite shares two cores
/// with the other tests, so this is generous; waits poll and end as soon as
/// the condition holds.
const PATIENCE: Duration = Duration::from_secs(180);

/// The evil tenant's limits unless a test needs another: tight, so that an
/// attack is cut short quickly.
const TIGHT: &str = r#"{ call_timeout = "500ms", memory = "64 MiB" }"#;

/// Events in the evil tenant's changelog.
const EVIL_EVENTS: usize = 10;

// --- the attacks that run ---

#[test]
fn the_fixture_syncs_normally_when_it_does_not_attack() {
    // The control for every test below: with `attack = "none"` the same
    // tenants sync, so a failure below is the attack's doing.
    let host = HostDir::new();
    let outcome = Evil::fixture(&host, r#"{ attack = "none" }"#, TIGHT).run(&host, Expect::Success);
    let records = outcome.evil_records;
    assert_eq!(records.len(), EVIL_EVENTS);
    assert_eq!(records["e3"], json!({"id": "e3", "name": "Evil 3"}));
}

#[test]
fn an_endless_loop_is_stopped_at_the_call_timeout() {
    let host = HostDir::new();
    let outcome = Evil::fixture(&host, r#"{ attack = "loop" }"#, TIGHT).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `call_timeout` limit"]);
}

#[test]
fn a_sleep_inside_a_host_call_is_stopped_at_the_call_timeout() {
    // An hour's sleep is one WASI call, outside wasm code where the epoch
    // interrupts: the host's own timers must end it.
    let host = HostDir::new();
    let limits = r#"{ call_timeout = "2s", memory = "64 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "sleep" }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `call_timeout` limit"]);
}

#[test]
fn an_http_server_that_never_answers_holds_a_call_no_longer_than_its_call_timeout() {
    // The listener never accepts, so nothing ever answers; the HTTP timeout
    // is far off (and beyond the test's patience): the call's own deadline
    // must end the request.
    let host = HostDir::new();
    let listener = Listener::new();
    let url = format!("http://127.0.0.1:{}/never", listener.port);
    let limits = r#"{ call_timeout = "2s", memory = "64 MiB", http_timeout = "10m" }"#;
    let mut evil = Evil::fixture(&host, &format!(r#"{{ attack = "http", url = "{url}" }}"#), limits);
    evil.plugin_extra = format!(r#"allowed_hosts = ["127.0.0.1:{}"]"#, listener.port);
    let outcome = evil.run(&host, Expect::Failure);
    let error = outcome.error();
    assert!(
        error.contains("exceeded its `call_timeout` limit")
            || error.contains(&format!("GET {url} failed: ConnectionReadTimeout")),
        "the call did not end at its deadline: {error}"
    );
}

#[test]
fn an_endless_loop_runs_out_of_fuel_where_fuel_is_metered() {
    let host = HostDir::new();
    // Fuel, unlike the clock, does not depend on the machine's load: with a
    // timeout far away, fuel is what must stop the loop.
    host.write("synchost.toml", &common::host_config("\n[limits]\nfuel = 100_000_000_000\n"));
    let limits = r#"{ call_timeout = "60s", memory = "64 MiB", fuel = 200_000_000 }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "loop" }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `fuel` limit"]);
}

#[test]
fn unbounded_memory_growth_is_stopped_at_the_memory_cap() {
    let host = HostDir::new();
    // A timeout well beyond what filling 64 MiB takes, so that the memory cap
    // and nothing else stops it.
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "memory" }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `memory` limit"]);
}

#[test]
fn unbounded_recursion_is_stopped_at_the_stack_cap() {
    let host = HostDir::new();
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "recursion" }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `stack` limit"]);
}

#[test]
fn one_row_over_max_rows_is_refused() {
    // The cap is exact. (A small answer like this also stays within what the
    // host lets one call copy out of the guest at all, so it is the row count
    // that must be reported; the test below covers a far bigger answer.)
    let host = HostDir::new();
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB", max_rows = 100_000 }"#;
    let outcome =
        Evil::fixture(&host, r#"{ attack = "huge-rows", rows = 100_001 }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `max_rows` limit"]);
}

#[test]
fn too_many_rows_from_one_call_are_refused() {
    let host = HostDir::new();
    // 500,000 empty rows fit the guest's 64 MiB; five times `max_rows`.
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB", max_rows = 100_000 }"#;
    let outcome =
        Evil::fixture(&host, r#"{ attack = "huge-rows", rows = 500_000 }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `max_rows` limit"]);
}

#[test]
fn a_table_of_a_million_columns_and_no_rows_is_refused_at_max_columns() {
    // No rows and no bytes: only the column count can stop it, and the host
    // must refuse it without work that grows faster than the columns.
    let host = HostDir::new();
    let limits = r#"{ call_timeout = "20s", memory = "512 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "wide-table" }"#, limits).run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `max_columns` limit", "returned 1000000 columns, at most 4096"]);
    // For the record (a figure, not a timed assertion): the whole refused run.
    let first = outcome.evil_runs.last().unwrap();
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(first[field].as_str().unwrap()).unwrap();
    eprintln!(
        "the run refusing 1,000,000 columns took {} ms",
        (at("finished_at") - at("started_at")).num_milliseconds()
    );
}

#[test]
fn a_table_whose_offsets_point_past_its_data_is_refused() {
    let host = HostDir::new();
    let outcome = Evil::fixture(&host, r#"{ attack = "malformed-table" }"#, "{}").run(&host, Expect::Failure);
    outcome.assert_error(&["malformed table: column `id`: `ends` ends at byte", "but the data holds"]);
}

#[test]
fn a_little_over_max_output_is_refused() {
    // 5 MiB against a 4 MiB cap: exact, like the row cap above.
    let host = HostDir::new();
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB", max_output = "4 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "huge-bytes", values = 1, value_mib = 5 }"#, limits)
        .run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `max_output` limit"]);
}

#[test]
fn too_many_bytes_from_one_call_are_refused() {
    let host = HostDir::new();
    // 4 × 8 MiB of text: twice `max_output`, half the guest's memory cap, so
    // that the output cap is what trips.
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB", max_output = "16 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "huge-bytes", values = 4, value_mib = 8 }"#, limits)
        .run(&host, Expect::Failure);
    outcome.assert_error(&["exceeded its `max_output` limit"]);
}

#[test]
fn a_trap_halfway_through_a_batch_keeps_nothing_of_it() {
    let host = HostDir::new();
    let outcome = Evil::fixture(&host, r#"{ attack = "trap-midway" }"#, TIGHT).run(&host, Expect::Failure);
    outcome.assert_error(&["`transform` trapped", "wasm `unreachable` instruction executed"]);
    // The panic message the plugin printed on its way down tells the operator why.
    assert!(
        outcome.log.contains("trapping on purpose after mapping 5 of 10 rows"),
        "the plugin's panic message is not in the log:\n{}",
        outcome.log
    );
    // Half the batch was mapped when it trapped; none of it may surface.
    assert!(!outcome.evil_out_text.contains("mapped before the trap"));
}

#[test]
fn files_outside_the_grants_cannot_be_read() {
    let host = HostDir::new();
    let marker = "TOP-SECRET-7f3a9c";
    host.write("data/secret.txt", &format!("{marker}\n"));
    // The transform's own grant, with two ways out of it: `..` and a symlink
    // to the secret's absolute path.
    host.write("data/evil-grant/allowed.txt", "fine\n");
    std::os::unix::fs::symlink(host.path("data/secret.txt"), host.path("data/evil-grant/escape")).unwrap();
    let secret_on_host = host.path("data/secret.txt").display().to_string();
    let paths = [
        "/etc/passwd",
        // The file source's grant: a store per plugin, so the transform must
        // not see it.
        "/in/changes.jsonl",
        &secret_on_host,
        "/grant/../secret.txt",
        "/grant/escape",
    ];
    let config = format!(r#"{{ attack = "read-outside", path = {} }}"#, toml_list(&paths));
    let mut evil = Evil::fixture(&host, &config, TIGHT);
    evil.plugin_extra = r#"dirs = [{ host = "../data/evil-grant", guest = "/grant" }]"#.to_string();
    let outcome = evil.run(&host, Expect::Failure);

    // The plugin tried each path and was refused each time: it says so in
    // its own `config` error, which the host passes on naming it.
    let expected: Vec<String> = paths.iter().map(|p| format!("cannot read `{p}`")).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    outcome.assert_error(&expected);
    for leak in [marker, "root:x:0:0", "\"op\":\"upsert\""] {
        assert!(!outcome.evil_out_text.contains(leak), "`{leak}` reached the evil destination");
        assert!(!outcome.log.contains(leak), "`{leak}` reached the log:\n{}", outcome.log);
    }
}

#[test]
fn the_environment_and_arguments_of_the_host_do_not_reach_a_plugin() {
    let host = HostDir::new();
    let mut evil = Evil::fixture(&host, r#"{ attack = "read-env" }"#, TIGHT);
    evil.daemon_env = vec![("SYNCHOST_TEST_SECRET", "hunter2")];
    let outcome = evil.run(&host, Expect::Success);

    // What the plugin saw, as it wrote it into every row.
    assert_eq!(outcome.evil_records.len(), EVIL_EVENTS);
    for (key, record) in &outcome.evil_records {
        let seen = match &record["environment"] {
            Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        };
        assert_eq!(seen["env"], json!({}), "record {key}: the plugin saw an environment: {seen}");
        assert_eq!(seen["args"], json!([]), "record {key}: the plugin saw arguments: {seen}");
    }
    // It printed the same to stderr: the log shows its output, and no secret.
    assert!(outcome.log.contains("hostile-transform environment"), "plugin stderr is not in the log:\n{}", outcome.log);
    for leak in ["hunter2", "SYNCHOST_TEST_SECRET"] {
        assert!(!outcome.evil_out_text.contains(leak), "`{leak}` reached the evil destination");
        assert!(!outcome.log.contains(leak), "`{leak}` reached the log:\n{}", outcome.log);
    }
}

#[test]
fn http_to_a_host_not_on_the_allowlist_is_refused() {
    let host = HostDir::new();
    let mut evil = Evil::fixture(&host, r#"{ attack = "http", url = "http://example.com/exfiltrate?data=1" }"#, TIGHT);
    evil.plugin_extra = r#"allowed_hosts = ["example.org"]"#.to_string();
    let outcome = evil.run(&host, Expect::Failure);
    outcome.assert_error(&["GET http://example.com/exfiltrate?data=1 failed: HttpRequestDenied"]);
}

#[test]
fn http_to_a_loopback_address_that_is_not_listed_is_refused() {
    let host = HostDir::new();
    let listener = Listener::new();
    let url = format!("http://127.0.0.1:{}/admin", listener.port);
    let mut evil = Evil::fixture(&host, &format!(r#"{{ attack = "http", url = "{url}" }}"#), TIGHT);
    evil.plugin_extra = r#"allowed_hosts = ["example.com"]"#.to_string();
    let outcome = evil.run(&host, Expect::Failure);
    outcome.assert_error(&[&format!("GET {url} failed: HttpRequestDenied")]);
    listener.assert_never_connected();
}

#[test]
fn a_listed_name_that_resolves_to_loopback_is_refused() {
    let host = HostDir::new();
    let listener = Listener::new();
    // The name is allowed; the address it resolves to is loopback, which only
    // a grant of the address itself opens (DNS must not be a way in).
    let url = format!("http://localhost:{}/admin", listener.port);
    let mut evil = Evil::fixture(&host, &format!(r#"{{ attack = "http", url = "{url}" }}"#), TIGHT);
    evil.plugin_extra = format!(r#"allowed_hosts = ["localhost:{}"]"#, listener.port);
    let outcome = evil.run(&host, Expect::Failure);
    outcome.assert_error(&[&format!("GET {url} failed: HttpRequestDenied")]);
    listener.assert_never_connected();
}

#[test]
fn http_to_a_listed_loopback_address_is_allowed() {
    // The control for the two tests above: the listener is reachable, and the
    // fixture does reach it once the address itself is listed.
    let host = HostDir::new();
    let listener = Listener::new();
    let port = listener.port;
    let server = std::thread::spawn(move || listener.serve_once("hello from the test"));
    let url = format!("http://127.0.0.1:{port}/data");
    let mut evil = Evil::fixture(&host, &format!(r#"{{ attack = "http", url = "{url}" }}"#), TIGHT);
    evil.plugin_extra = format!(r#"allowed_hosts = ["127.0.0.1:{port}"]"#);
    let outcome = evil.run(&host, Expect::SuccessWith(1));
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /data HTTP/1.1\r\n"), "{request}");
    assert_eq!(outcome.evil_records[&url], json!({"status": 200, "body": "hello from the test"}));
}

#[test]
fn a_flood_of_output_is_capped_and_the_sync_goes_on() {
    let host = HostDir::new();
    // 50 MiB to each of stdout and stderr; the default `max_log` (64 KiB per
    // call) keeps a sliver of it. A timeout that leaves room for the writes.
    let limits = r#"{ call_timeout = "10s", memory = "64 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "stdout-flood" }"#, limits).run(&host, Expect::Success);
    assert_eq!(outcome.evil_records.len(), EVIL_EVENTS, "the sync went on after the flood");
    assert!(outcome.log.contains("FLOOD-STDOUT"), "none of the plugin's stdout reached the log");
    assert!(outcome.log.contains("FLOOD-STDERR"), "none of the plugin's stderr reached the log");
    assert!(
        outcome.log_bytes < 1024 * 1024,
        "the daemon logged {} bytes: the plugin's output was not capped",
        outcome.log_bytes
    );
}

#[test]
fn a_flood_of_host_log_lines_is_capped_like_output_and_the_sync_goes_on() {
    let host = HostDir::new();
    // 50 MiB of `host.log` lines per call: `max_log` (64 KiB per call by
    // default) covers them as it covers stdout and stderr.
    let limits = r#"{ call_timeout = "20s", memory = "64 MiB" }"#;
    let outcome = Evil::fixture(&host, r#"{ attack = "log-flood" }"#, limits).run(&host, Expect::Success);
    assert_eq!(outcome.evil_records.len(), EVIL_EVENTS, "the sync went on after the flood");
    assert!(outcome.log.contains("FLOOD-LOG"), "none of the plugin's log lines reached the log");
    assert!(
        outcome.log.contains("more bytes to stdout, stderr and host.log in one call than its max_log of"),
        "the dropped lines were not counted in the log"
    );
    assert!(
        outcome.log_bytes < 1024 * 1024,
        "the daemon logged {} bytes: the plugin's log lines were not capped",
        outcome.log_bytes
    );
}

// --- plugins that cannot be loaded ---

#[test]
fn a_plugin_importing_an_interface_the_host_lacks_is_not_loaded() {
    let host = HostDir::new();
    let digest = host.install_fixture("unknown_import.wasm");
    let evil = Evil::plugin_file("unknown_import.wasm", &digest, "{}");
    let messages = ["plugin `hostile` cannot be linked", "synchost:evil/backdoor"];
    evil.run(&host, Expect::LoadError(&messages));
    assert_validate_fails(&host, &messages);
}

#[test]
fn a_malformed_wasm_file_is_not_loaded() {
    let host = HostDir::new();
    let bytes = b"MZ\x90\0 this is not WebAssembly \xff\xfe\0\x01";
    let evil = Evil::bad_file(&host, "garbage.wasm", bytes);
    let messages = ["plugin `hostile` is not a WebAssembly component"];
    evil.run(&host, Expect::LoadError(&messages));
    assert_validate_fails(&host, &messages);
}

#[test]
fn a_core_module_instead_of_a_component_is_not_loaded() {
    let host = HostDir::new();
    // The smallest valid core module: magic and version, no sections.
    let evil = Evil::bad_file(&host, "core_module.wasm", b"\0asm\x01\0\0\0");
    let messages = ["plugin `hostile` is not a WebAssembly component"];
    evil.run(&host, Expect::LoadError(&messages));
    assert_validate_fails(&host, &messages);
}

/// `synchost validate` fails, naming the evil tenant's file and the plugin,
/// and finds nothing wrong with the good tenant.
fn assert_validate_fails(host: &HostDir, messages: &[&str]) {
    let output = host.synchost(&["validate"]);
    let text = common::stdout(&output) + &common::stderr(&output);
    assert!(!output.status.success(), "validate passed:\n{text}");
    assert!(text.contains("evil.toml"), "validate does not name the tenant file:\n{text}");
    for message in messages {
        assert!(text.contains(message), "validate does not say `{message}`:\n{text}");
    }
    assert!(!text.contains("good.toml"), "validate blames the good tenant:\n{text}");
}

// --- the harness ---

/// The evil tenant: a file source, the plugin under test (named `hostile`)
/// as its transform, and a file destination.
struct Evil {
    /// The plugin's file in `plugins/` and its sha256.
    file_name: String,
    digest: String,
    /// Its `config` and, for the fixture, `limits` (inline TOML tables).
    config: String,
    limits: Option<String>,
    /// More keys for its table (`dirs`, `allowed_hosts`).
    plugin_extra: String,
    /// Environment variables the daemon gets on top of the test's.
    daemon_env: Vec<(&'static str, &'static str)>,
}

impl Evil {
    /// The hostile-transform fixture with this config and these limits
    /// (inline TOML tables).
    fn fixture(host: &HostDir, config: &str, limits: &str) -> Evil {
        let digest = host.install_fixture("hostile_transform.wasm");
        let mut evil = Evil::plugin_file("hostile_transform.wasm", &digest, config);
        evil.limits = Some(limits.to_string());
        evil
    }

    /// A plugin file already in `plugins/`, pinned by `digest`.
    fn plugin_file(file_name: &str, digest: &str, config: &str) -> Evil {
        Evil {
            file_name: file_name.to_string(),
            digest: digest.to_string(),
            config: config.to_string(),
            limits: None,
            plugin_extra: String::new(),
            daemon_env: Vec::new(),
        }
    }

    /// A plugin file with these bytes, correctly pinned: the digest matches,
    /// so what the host refuses is the content.
    fn bad_file(host: &HostDir, file_name: &str, bytes: &[u8]) -> Evil {
        std::fs::write(host.path("plugins").join(file_name), bytes).unwrap();
        Evil::plugin_file(file_name, &sha256(bytes), "{}")
    }

    /// The tenant file, with `config` for the plugin under test.
    fn tenant_file(&self, config: &str) -> String {
        use synchost::bundled::{FILE_DESTINATION, FILE_SOURCE};
        let limits = self.limits.as_ref().map(|l| format!("limits = {l}\n")).unwrap_or_default();
        format!(
            r#"[plugins.src]
path = "{src}"
sha256 = "{src_digest}"
dirs = [{{ host = "../data/evil-in", guest = "/in" }}]
config = {{ changelog = "/in/changes.jsonl", key = "id" }}

[plugins.hostile]
path = "{file_name}"
sha256 = "{digest}"
config = {config}
{limits}{extra}

[plugins.dst]
path = "{dst}"
sha256 = "{dst_digest}"
dirs = [{{ host = "../data/evil-out", guest = "/out", write = true }}]
config = {{ dir = "/out", shards = 4 }}

[pipelines.main]
mode = "event"
source = "src"
transforms = ["hostile"]
destination = "dst"
schedule = "every 300ms"
"#,
            src = FILE_SOURCE.file_name,
            src_digest = sha256(FILE_SOURCE.bytes),
            file_name = self.file_name,
            digest = self.digest,
            extra = self.plugin_extra,
            dst = FILE_DESTINATION.file_name,
            dst_digest = sha256(FILE_DESTINATION.bytes),
        )
    }

    /// Sets up both tenants, runs the daemon until the evil tenant has done
    /// what `expect` says and the good tenant has synced, then a change of the
    /// good tenant's data, stops the daemon with SIGTERM and checks what every
    /// hostile case shares. What is left to check per attack is returned.
    fn run(self, host: &HostDir, expect: Expect<'_>) -> Outcome {
        let good = GoodTenant::set_up(host);
        let changelog: String = (0..EVIL_EVENTS)
            .map(|i| {
                format!("{}\n", json!({"op": "upsert", "row": {"id": format!("e{i}"), "name": format!("Evil {i}")}}))
            })
            .collect();
        host.write("data/evil-in/changes.jsonl", &changelog);
        std::fs::create_dir_all(host.path("data/evil-out")).unwrap();
        host.write("tenants/evil.toml", &self.tenant_file(&self.config));

        let mut daemon = Daemon::start(host, &self.daemon_env);
        let evil_runs = || runs(host, "evil/main");

        // Phase one: the good tenant's first sync, while the evil tenant does
        // its worst.
        match expect {
            Expect::Failure => daemon.wait_for("a failed run of the evil tenant", |_| {
                evil_runs().iter().any(|r| r["status"] != "running" && r["status"] != "succeeded")
            }),
            Expect::Success | Expect::SuccessWith(_) => {
                let want = match expect {
                    Expect::SuccessWith(n) => n,
                    _ => EVIL_EVENTS,
                };
                daemon.wait_for("the evil tenant's sync", |_| {
                    evil_runs().iter().any(|r| r["status"] == "succeeded" && r["stats"]["read"].as_u64() > Some(0))
                        && common::read_records(&host.path("data/evil-out")).len() == want
                })
            }
            Expect::LoadError(messages) => daemon.wait_for("the daemon to report the evil tenant", |daemon| {
                let log = daemon.log();
                messages.iter().all(|m| log.contains(m))
            }),
        }
        daemon.wait_for("the good tenant's first sync", |_| host.records("data/out") == good.expected(1));

        // A failed event run that is scheduled again must start from the
        // same place: nothing of the failed run was committed.
        if matches!(expect, Expect::Failure) && evil_runs().iter().any(|r| r["status"] == "failed") {
            daemon.wait_for("the evil tenant's second failed run", |_| {
                evil_runs().iter().filter(|r| r["status"] == "failed").count() >= 2
            });
        }

        // Phase two: the good tenant goes on syncing after the attack.
        good.change(host);
        daemon.wait_for("the good tenant to sync a change", |_| host.records("data/out") == good.expected(2));

        daemon.assert_alive();
        let (exit, log, log_bytes) = daemon.stop();
        assert!(exit.success(), "the daemon did not exit cleanly: {exit:?}\n{log}");
        assert!(log.contains("stopped"), "the daemon did not report a clean stop:\n{log}");

        let evil_runs = evil_runs();
        let good_runs = runs(host, "good/main");
        assert!(!good_runs.is_empty());
        // The good tenant syncs on a schedule, so the test's own SIGTERM may
        // land during its newest run: that one may end `stopped` (having
        // committed nothing, as a diff run stopped before it applies does).
        // Every run before it succeeded.
        let (newest, older) = good_runs.split_first().unwrap();
        let stopped_by_us = newest["status"] == "stopped"
            && newest["error"].as_str().is_some_and(|e| e.contains("shutdown"))
            && ["created", "updated", "deleted"].iter().all(|n| newest["stats"][n].as_u64().unwrap_or(0) == 0);
        assert!(
            newest["status"] == "succeeded" || stopped_by_us,
            "the good tenant's newest run neither succeeded nor was stopped cleanly by the test's shutdown: {newest}"
        );
        for run in older {
            assert_eq!(run["status"], "succeeded", "a run of the good tenant did not succeed: {run}");
        }
        for run in evil_runs.iter().chain(&good_runs) {
            assert_ne!(run["status"], "running", "a run was left running: {run}");
        }

        let evil_out_text = dir_text(&host.path("data/evil-out"));
        let evil_records = common::read_records(&host.path("data/evil-out"));
        let outcome = Outcome { evil_runs, evil_records, evil_out_text, log, log_bytes };
        match expect {
            Expect::Failure => {
                outcome.assert_nothing_committed();
                if self.file_name == "hostile_transform.wasm" {
                    self.assert_recovers(host);
                }
            }
            Expect::LoadError(messages) => {
                assert!(outcome.evil_runs.is_empty(), "a tenant that did not load ran: {:?}", outcome.evil_runs);
                assert!(outcome.evil_records.is_empty());
                // Which tenant was left out is on the same line as why.
                for message in messages {
                    assert!(
                        outcome.log.lines().any(|l| l.contains(message)
                            && ["evil.toml", "tenant=evil", "tenant `evil`"].iter().any(|t| l.contains(t))),
                        "the log does not name the tenant beside `{message}`:\n{}",
                        outcome.log
                    );
                }
            }
            Expect::Success | Expect::SuccessWith(_) => {}
        }
        outcome
    }

    /// With the attack called off, the evil pipeline's next sync starts from
    /// the first event and applies them all: the failed runs left no cursor
    /// and nothing half-done behind.
    fn assert_recovers(&self, host: &HostDir) {
        host.write("tenants/evil.toml", &self.tenant_file(r#"{ attack = "none" }"#));
        let (ok, report) = host.sync("evil/main", &[]);
        assert!(ok, "the evil pipeline did not recover once harmless: {report}");
        assert_eq!(report["stats"]["cursor_before"], Value::Null, "{report}");
        assert_eq!(report["stats"]["read"], EVIL_EVENTS, "every event was read again: {report}");
        let records = common::read_records(&host.path("data/evil-out"));
        assert_eq!(records.len(), EVIL_EVENTS);
        assert_eq!(records["e0"], json!({"id": "e0", "name": "Evil 0"}));
    }
}

/// What the evil tenant is expected to do.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// Run and fail, every time.
    Failure,
    /// Sync its events, each to one record.
    Success,
    /// Sync, leaving this many records.
    SuccessWith(usize),
    /// Not load: the daemon logs these messages and runs it never.
    LoadError(&'a [&'a str]),
}

/// What the run left behind, for the checks particular to an attack.
struct Outcome {
    /// The evil pipeline's runs, newest first.
    evil_runs: Vec<Value>,
    evil_records: std::collections::BTreeMap<String, Value>,
    /// Every file the evil destination wrote, as text.
    evil_out_text: String,
    /// The daemon's log (what was kept of it) and its full length.
    log: String,
    log_bytes: u64,
}

impl Outcome {
    /// The evil tenant's first failure: its run's error.
    fn error(&self) -> &str {
        let first = self.evil_runs.last().expect("the evil tenant ran");
        first["error"].as_str().unwrap_or_else(|| panic!("the evil run has no error: {first}"))
    }

    /// The error names the tenant, the plugin and the call, and says each of
    /// `expected`; and the daemon logged it.
    fn assert_error(&self, expected: &[&str]) {
        let error = self.error();
        for part in ["tenant `evil`", "plugin `hostile`", "`transform`"].iter().chain(expected) {
            assert!(error.contains(part), "the error does not say `{part}`: {error}");
        }
        assert!(self.log.contains(error), "the daemon did not log the error `{error}`:\n{}", self.log);
    }

    /// No run of the evil pipeline succeeded or moved the cursor, a run after
    /// the first started from no cursor, and its destination has no record.
    fn assert_nothing_committed(&self) {
        assert!(!self.evil_runs.is_empty());
        for run in &self.evil_runs {
            // A run that had just started when the test stopped the daemon
            // ends `stopped`; it too must leave nothing behind.
            assert!(
                ["failed", "paused", "stopped"].iter().any(|s| run["status"] == *s),
                "an evil run did not fail: {run}"
            );
            assert!(run["error"].is_string(), "a failed run without its error: {run}");
            assert_eq!(run["stats"]["cursor_before"], Value::Null, "a cursor was committed: {run}");
            assert_eq!(run["stats"]["cursor_after"], Value::Null, "a cursor was committed: {run}");
            assert_eq!(run["stats"]["batches"], 0, "a batch was committed: {run}");
        }
        assert!(self.evil_records.is_empty(), "the evil destination was written: {:?}", self.evil_records);
    }
}

/// The well-behaved tenant: a diff pipeline from a CSV of a few hundred
/// people through the field mapper into a file destination.
struct GoodTenant;

impl GoodTenant {
    /// Rows in the first version of the CSV; the second adds 50.
    const ROWS: usize = 300;

    fn set_up(host: &HostDir) -> GoodTenant {
        host.write("data/in/people.csv", &GoodTenant::csv(1));
        host.write(
            "tenants/good.toml",
            &file_pipeline_tenant(
                r#"{ snapshot = "/in/people.csv", key = "id", page_size = 64 }"#,
                r#"[{ name = "id", from = "id" }, { name = "name", template = "{first} {last|upper}" }, { name = "grade", from = "grade" }]"#,
                // The second version changes more than the default guard
                // lets through unapproved; this test is not about the guard.
                "mode = \"diff\"\nschedule = \"every 300ms\"\nmax_change_ratio = 1.0",
            ),
        );
        GoodTenant
    }

    /// The people in version 1 or 2 of the data: version 2 renames every
    /// tenth person and adds 50 more. The new names are as long as the old
    /// ones: the file source pages by byte offset, so a sync that read its
    /// first pages from version 1 and the rest from version 2 still lands on
    /// whole lines (and the next sync sees all of version 2).
    fn people(version: u32) -> Vec<(String, String, String, u32)> {
        let count = if version == 1 { Self::ROWS } else { Self::ROWS + 50 };
        (0..count)
            .map(|i| {
                let first = if version == 2 && i % 10 == 0 { format!("Fresh{i}") } else { format!("First{i}") };
                (format!("p{i:04}"), first, format!("Last{i}"), (i % 12 + 1) as u32)
            })
            .collect()
    }

    fn csv(version: u32) -> String {
        let mut csv = "id,first,last,grade\n".to_string();
        for (id, first, last, grade) in GoodTenant::people(version) {
            csv.push_str(&format!("{id},{first},{last},{grade}\n"));
        }
        csv
    }

    fn expected(&self, version: u32) -> std::collections::BTreeMap<String, Value> {
        GoodTenant::people(version)
            .into_iter()
            .map(|(id, first, last, grade)| {
                let fields =
                    json!({"id": id, "name": format!("{first} {}", last.to_uppercase()), "grade": grade.to_string()});
                (id, fields)
            })
            .collect()
    }

    /// Replaces the CSV with version 2 at once (a rename), so that no sync
    /// reads half a file.
    fn change(&self, host: &HostDir) {
        host.write("data/people.csv.new", &GoodTenant::csv(2));
        std::fs::rename(host.path("data/people.csv.new"), host.path("data/in/people.csv")).unwrap();
    }
}

/// `synchost run` in a host directory, its log read as it comes (so that a
/// chatty daemon never blocks on a full pipe) and kept up to a bound.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    log_bytes: Arc<AtomicU64>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How much of the daemon's log is kept for the checks; beyond it, only the
/// length is counted (a flood the host did not cap shows in the length).
const LOG_KEPT: usize = 16 * 1024 * 1024;

impl Daemon {
    fn start(host: &HostDir, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .arg("run")
            .env("SYNCHOST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start synchost run");
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_bytes = Arc::new(AtomicU64::new(0));
        let reader = {
            let (log, log_bytes) = (log.clone(), log_bytes.clone());
            std::thread::spawn(move || {
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = stderr.read(&mut buffer) {
                    log_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let mut log = log.lock().unwrap();
                    let room = LOG_KEPT.saturating_sub(log.len());
                    log.extend_from_slice(&buffer[..n.min(room)]);
                }
            })
        };
        Daemon { child, log, log_bytes, reader: Some(reader) }
    }

    /// The log so far, without terminal colour codes.
    fn log(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.log.lock().unwrap()))
    }

    fn assert_alive(&mut self) {
        if let Some(exit) = self.child.try_wait().unwrap() {
            panic!("the daemon died ({exit:?}):\n{}", self.log());
        }
    }

    /// Polls `done` (which may look at the daemon's log) until it holds, failing if the daemon dies or `PATIENCE`
    /// runs out first.
    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        loop {
            self.assert_alive();
            if done(self) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}; the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and the exit status, the log and its full length once the
    /// daemon has exited.
    fn stop(mut self) -> (ExitStatus, String, u64) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let start = Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(start.elapsed() < PATIENCE, "the daemon did not stop after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        self.reader.take().unwrap().join().unwrap();
        (exit, self.log(), self.log_bytes.load(Ordering::Relaxed))
    }
}

impl Drop for Daemon {
    /// A test that fails half-way must not leave a daemon behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP port on 127.0.0.1 that the tests watch for connections.
struct Listener {
    listener: TcpListener,
    port: u16,
}

impl Listener {
    fn new() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Listener { listener, port }
    }

    /// Nobody connected. The kernel completes a connection and queues it
    /// whether or not anyone accepts it, so an empty queue means no attempt
    /// got through, even one closed since.
    fn assert_never_connected(&self) {
        self.listener.set_nonblocking(true).unwrap();
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("the plugin connected to the test's port from {peer}"),
            Err(e) => panic!("cannot check the listener: {e}"),
        }
    }

    /// Answers one HTTP request with 200 and `body`; returns the request head.
    fn serve_once(self, body: &str) -> String {
        let (mut stream, _) = self.listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).unwrap();
            assert!(n > 0, "the request ended before its head did");
            request.extend_from_slice(&buffer[..n]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).unwrap();
        String::from_utf8_lossy(&request).into_owned()
    }
}

/// A pipeline's runs, newest first; none while the state cannot be read yet.
fn runs(host: &HostDir, pipeline: &str) -> Vec<Value> {
    let output = host.synchost(&["runs", "list", pipeline, "--limit", "1000", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_default()
}

/// Every file under `dir`, concatenated as text, to look for leaks in.
fn dir_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&dir_text(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A TOML array of strings.
fn toml_list(items: &[&str]) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::to_string(items).unwrap()
}

// --- sources that would never let a run end ---

/// A tenant whose pipeline `main` reads the `hostile_source.wasm` fixture with
/// `attack`, through the field mapper into the file destination; `pipeline`
/// is the rest of the pipeline's table (its mode, budgets).
fn hostile_source_tenant(host: &HostDir, attack: &str, pipeline: &str) -> String {
    let digest = host.install_fixture("hostile_source.wasm");
    let tenant =
        file_pipeline_tenant(&format!(r#"{{ attack = "{attack}" }}"#), r#"[{ name = "n", from = "n" }]"#, pipeline);
    let file_source = format!(
        "path = \"{}\"\nsha256 = \"{}\"\ndirs = [{{ host = \"../data/in\", guest = \"/in\" }}]\n",
        synchost::bundled::FILE_SOURCE.file_name,
        sha256(synchost::bundled::FILE_SOURCE.bytes)
    );
    assert!(tenant.contains(&file_source), "file_pipeline_tenant changed its source table");
    tenant.replace(&file_source, &format!("path = \"hostile_source.wasm\"\nsha256 = \"{digest}\"\n"))
}

/// Syncs `acme/main` once, expecting it to end `status` with an error that
/// says each of `expected`; returns the report.
fn sync_ends(host: &HostDir, status: &str, expected: &[&str]) -> Value {
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok || status == "succeeded", "the sync succeeded: {report}");
    assert_eq!(report["status"], status, "{report}");
    let error = report["error"].as_str().unwrap_or_else(|| panic!("no error in {report}"));
    for part in expected {
        assert!(error.contains(part), "the error does not say `{part}`: {error}");
    }
    report
}

/// Nothing reached the destination, and there is no plan to approve.
fn assert_nothing_planned(host: &HostDir, report: &Value) {
    assert!(
        !host.path("data/out/layout.json").exists() || host.records("data/out").is_empty(),
        "the destination was written: {:?}",
        host.records("data/out")
    );
    let approve = host.synchost(&["approve", &report["run"].to_string()]);
    assert!(!approve.status.success(), "a plan from a cut-short read could be approved");
}

#[test]
fn a_snapshot_that_never_ends_is_stopped_at_max_run_rows_and_plans_nothing() {
    let host = HostDir::new();
    host.write(
        "tenants/acme.toml",
        &hostile_source_tenant(&host, "endless-snapshot", "mode = \"diff\"\nmax_run_rows = 5000"),
    );
    let report = sync_ends(
        &host,
        "failed",
        &["read more than 5000 source rows", "over its max_run_rows", "pipelines.main.max_run_rows"],
    );
    assert!(report["stats"]["read"].as_u64().unwrap() <= 5100, "read on past the budget: {report}");
    assert_nothing_planned(&host, &report);
}

#[test]
fn a_snapshot_that_never_ends_is_stopped_at_max_run_memory() {
    let host = HostDir::new();
    // Run budgets default from synchost.toml's [limits].
    host.write("synchost.toml", &common::host_config("[limits]\nmax_run_memory = \"2 MiB\"\n"));
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "endless-snapshot", "mode = \"diff\""));
    let report = sync_ends(&host, "failed", &["would hold more than 2.0 MiB for its plan", "over its max_run_memory"]);
    assert_nothing_planned(&host, &report);
}

#[test]
fn a_page_token_handed_back_again_is_a_contract_breach() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "stuck-token", "mode = \"diff\""));
    let report = sync_ends(
        &host,
        "failed",
        &["plugin `src`", "`snapshot` broke the contract", "handed back page token `0` again"],
    );
    assert_nothing_planned(&host, &report);
}

#[test]
fn empty_pages_without_end_are_a_contract_breach() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "empty-pages", "mode = \"diff\""));
    let report = sync_ends(&host, "failed", &["`snapshot` broke the contract", "returned 1000 empty pages in a row"]);
    assert_eq!(report["stats"]["read"], 0, "{report}");
    assert_nothing_planned(&host, &report);
}

#[test]
fn an_event_cursor_that_moves_without_events_is_a_contract_breach() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "empty-moving-cursor", "mode = \"event\""));
    let report = sync_ends(
        &host,
        "failed",
        &["`events` broke the contract", "moved its cursor 100 times in a row without returning an event"],
    );
    // How far it moved is kept, in one state write rather than one per call.
    assert_eq!(report["stats"]["batches"], 1, "{report}");
    assert_eq!(report["stats"]["cursor_after"], "99", "{report}");
}

#[test]
fn an_event_cursor_that_stands_still_or_goes_back_is_a_contract_breach() {
    let host = HostDir::new();
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "events-same-cursor", "mode = \"event\""));
    sync_ends(&host, "failed", &["`events` broke the contract", "returned 1 events but left its cursor at `0`"]);

    let host = HostDir::new();
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "cursor-back", "mode = \"event\""));
    let report = sync_ends(&host, "failed", &["`events` broke the contract", "went back to cursor `1`"]);
    // The batches before the breach were applied and committed.
    assert_eq!(report["stats"]["cursor_after"], "2", "{report}");
}

#[test]
fn an_event_run_stops_at_max_run_rows_and_the_next_one_goes_on() {
    let host = HostDir::new();
    let changelog: String =
        (0..300).map(|i| format!("{}\n", json!({"op": "upsert", "row": {"id": format!("k{i}")}}))).collect();
    host.write("data/in/changes.jsonl", &changelog);
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }]"#,
            "mode = \"event\"\nmax_batch = 50\nmax_run_rows = 100",
        ),
    );
    let report = sync_ends(&host, "stopped", &["read more than 100 events", "the next run goes on from its cursor"]);
    let first = report["stats"]["read"].as_u64().unwrap();
    assert!((101..300).contains(&first), "{report}");
    assert_eq!(host.records("data/out").len() as u64, first, "what was read was applied and committed");
    // The next runs go on from the cursor until every event is in.
    let started = Instant::now();
    while host.records("data/out").len() < 300 {
        assert!(started.elapsed() < PATIENCE, "the runs never caught up");
        let (_, report) = host.sync("acme/main", &[]);
        assert!(report["status"] == "stopped" || report["status"] == "succeeded", "{report}");
    }
}

#[test]
fn a_shutdown_during_a_diff_read_records_the_run_stopped_with_no_plan() {
    // The destination holds some records, so that a plan made from a read cut
    // short would delete or create enough to be saved as blocked, and could
    // then be approved.
    let host = HostDir::new();
    host.write("tenants/acme.toml", &hostile_source_tenant(&host, "none", "mode = \"diff\""));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(host.records("data/out").len(), 300);

    host.write(
        "tenants/acme.toml",
        &hostile_source_tenant(
            &host,
            "endless-snapshot",
            "mode = \"diff\"\nschedule = \"every 1h\"\nmax_run_rows = 100_000_000",
        ),
    );
    let mut daemon = Daemon::start(&host, &[]);
    daemon.wait_for("the run to be reading", |_| {
        runs(&host, "acme/main").first().is_some_and(|r| r["status"] == "running")
    });
    let (exit, log, _) = daemon.stop();
    assert!(exit.success(), "{log}");
    let newest = runs(&host, "acme/main").into_iter().next().unwrap();
    assert_eq!(newest["status"], "stopped", "{newest}");
    assert_nothing_planned_beyond(&host, &newest, 300);
}

/// The destination still holds its `records`, and `run` left no plan to approve.
fn assert_nothing_planned_beyond(host: &HostDir, run: &Value, records: usize) {
    assert_eq!(host.records("data/out").len(), records, "the destination was written");
    let approve = host.synchost(&["approve", &run["id"].to_string()]);
    assert!(!approve.status.success(), "a plan from a cut-short read could be approved");
}

#[test]
fn a_full_disk_under_the_file_destination_is_named_and_leaves_no_temporary_file() {
    let host = HostDir::new();
    let rows: String = std::iter::once("id,name\n".to_string())
        .chain((0..4000).map(|i| format!("{i},{}\n", "x".repeat(40))))
        .collect();
    host.write("data/in/people.csv", &rows);
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/people.csv", key = "id" }"#,
            r#"[{ name = "name", from = "name" }]"#,
            "mode = \"diff\"",
        ),
    );
    // data/out becomes a 64 KiB file system, mounted in a user and mount
    // namespace of the sync's own (no privilege needed, nothing left behind).
    let script = r#"out=$1; shift
        mount -t tmpfs -o size=64k synchost-full "$out" || exit 97
        "$@"; status=$?
        echo "left in data/out: $(ls -A "$out" | tr '\n' ' ')" >&2
        exit $status"#;
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"])
        .arg(host.path("data/out"))
        .arg(BIN)
        .arg("--config")
        .arg(host.path("synchost.toml"))
        .args(["sync", "acme/main", "--json"])
        .env("SYNCHOST_LOG", "warn")
        .output()
        .expect("run unshare (util-linux)");
    let (stdout, stderr) = (common::stdout(&output), common::stderr(&output));
    assert_ne!(output.status.code(), Some(97), "cannot mount a small file system for the test: {stderr}");
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
    assert_ne!(report["status"], "succeeded", "{report}");
    let error = report.to_string();
    assert!(error.contains("cannot write `/out/"), "{report}");
    assert!(error.contains("a full disk"), "{report}");
    let left = stderr.lines().find(|l| l.starts_with("left in data/out:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(!left.contains(".tmp"), "a temporary file was left behind: {left}");
}
