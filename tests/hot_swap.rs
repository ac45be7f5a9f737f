//! Hot swap under load: `synchost run` serves an event sync while its
//! transform is replaced every second, and broken versions are refused while
//! the sync carries on.
//!
//! The two good versions are the bundled field mapper and the same component
//! with a custom section appended (another sha256, the same code); their
//! configs tag each row `v1` or `v2`. The checks:
//! - no event is lost: every key ends at its last event;
//! - cursors are continuous: each batch starts where the previous committed
//!   batch ended, across runs and swaps;
//! - every batch is processed by exactly one version: the tag on each key's
//!   final record is that of the version recorded for the run whose batch
//!   covered the key's last event;
//! - a broken version (a config its plugin's schema refuses, traps in
//!   `info()`, wrong world, wrong WIT version) is refused, reported by
//!   `synchost status`, and the sync goes on.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, HostDir, KillOnDrop, sha256};
use serde_json::{Value, json};

const EVENTS: usize = 100_000;
const KEYS: usize = 1_000;
const CHUNKS: usize = 20;
const PATIENCE: Duration = Duration::from_secs(120);

/// The two tests here each run a daemon under load and time what it does;
/// they take turns rather than compete for the machine's two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A component with a custom section appended: valid, with another digest.
fn with_custom_section(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(b"payload");
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits one LEB128 byte
    out.extend_from_slice(&section);
    out
}

/// The bundled mapper with its export renamed to a WIT version the host does
/// not support (same length, so the binary stays well formed).
fn future_wit_version(bytes: &[u8]) -> Vec<u8> {
    let (from, to): (&[u8], &[u8]) = (b"synchost:plugin/transform@0.2.", b"synchost:plugin/transform@9.2.");
    let mut out = bytes.to_vec();
    let mut renamed = 0;
    for i in 0..out.len().saturating_sub(from.len()) {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            renamed += 1;
        }
    }
    assert!(renamed > 0, "the mapper's export name was not found");
    out
}

/// The tenant file with `transform` (a file in plugins/) tagging rows `tag`,
/// or configured with `config` instead when given.
fn tenant(host: &HostDir, transform: &str, tag: &str, config: Option<&str>) -> String {
    let digest = sha256(&std::fs::read(host.path(&format!("plugins/{transform}"))).unwrap());
    let fields = format!(
        r#"[{{ name = "id", from = "id" }}, {{ name = "seq", from = "seq" }}, {{ name = "tag", template = "{tag}" }}]"#
    );
    let mapper_config = format!("config = {{ fields = {fields} }}");
    common::file_pipeline_tenant(
        r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
        &fields,
        "mode = \"event\"\nschedule = \"every 100ms\"\nmax_batch = 1000\nlanes = 2",
    )
    .replace("path = \"field_mapper.wasm\"", &format!("path = \"{transform}\""))
    .replace(&sha256(synchost::bundled::FIELD_MAPPER.bytes), &digest)
    .replace(&mapper_config, config.unwrap_or(&mapper_config))
    // The destination, slowed down, so that runs last long enough for swaps
    // to land in the middle of them.
    .replace("path = \"file_destination.wasm\"", "path = \"flaky_destination.wasm\"")
    .replace(
        &sha256(synchost::bundled::FILE_DESTINATION.bytes),
        &sha256(&common::fixture_plugin("flaky_destination.wasm")),
    )
    // Slow enough that the daemon is busy applying most of the time the
    // writer writes (100 batches of 80 ms over its 10 s): a swap then lands
    // mid-run, however fast the machine, and the run hands over.
    .replace("config = { dir = \"/out\", shards = 4 }", "config = { dir = \"/out\", shards = 4, apply_delay_ms = 80 }")
}

/// Replaces the tenant file the way an editor does: write aside, rename over.
fn install_tenant(host: &HostDir, text: &str) {
    host.write("tenants/acme.toml.new", text);
    std::fs::rename(host.path("tenants/acme.toml.new"), host.path("tenants/acme.toml")).unwrap();
}

/// What `synchost status --json` says; `Null` if it said nothing readable
/// (the daemon may be starting).
fn status(host: &HostDir) -> Value {
    let output = host.synchost(&["status", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// The digest of the `map` plugin the tenant runs, as `status` shows it.
fn map_digest(status: &Value) -> Option<String> {
    let plugins = status["tenants"][0]["plugins"].as_array().cloned().unwrap_or_default();
    plugins.iter().find(|p| p["name"] == "map").map(|p| p["digest"].as_str().unwrap().to_string())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `synchost run` on the host directory; its log goes to `daemon.log` there,
/// so that a test that fails can show it.
fn start_daemon(host: &HostDir) -> KillOnDrop {
    let daemon = Command::new(BIN)
        .arg("--config")
        .arg(host.path("synchost.toml"))
        .arg("run")
        .env("SYNCHOST_LOG", "info")
        .stderr(std::fs::File::create(host.path("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(daemon)
}

/// Waits for the daemon's admin socket to answer: until then `status` would
/// answer from the files instead.
fn wait_until_answering(host: &HostDir) {
    let answering = Instant::now();
    while !host.path("state/admin.sock").exists()
        || !status(host)["source"].as_str().is_some_and(|s| s.starts_with("daemon"))
    {
        assert!(answering.elapsed() < PATIENCE, "the daemon never answered on its socket:\n{}", daemon_log(host));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon serving the tenant on the bundled mapper (`v1`), answering on
/// its socket, with a second version (named by a custom section `name`)
/// written beside it as `plugins/mapper_v2.wasm`, whose bytes are returned.
fn serve_v1_with_v2_beside(host: &HostDir, name: &str) -> (KillOnDrop, Vec<u8>) {
    let v2 = with_custom_section(synchost::bundled::FIELD_MAPPER.bytes, name);
    std::fs::write(host.path("plugins/mapper_v2.wasm"), &v2).unwrap();
    host.install_fixture("flaky_destination.wasm");
    host.write("data/in/changes.jsonl", "");
    install_tenant(host, &tenant(host, "field_mapper.wasm", "v1", None));
    let daemon = start_daemon(host);
    wait_until_answering(host);
    (daemon, v2)
}

fn daemon_log(host: &HostDir) -> String {
    std::fs::read_to_string(host.path("daemon.log")).unwrap_or_default()
}

fn stop_daemon(host: &HostDir, mut daemon: KillOnDrop) -> String {
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let exit = daemon.wait().unwrap();
    let log = daemon_log(host);
    assert!(exit.success(), "the daemon did not stop cleanly ({exit:?}):\n{log}");
    log
}

/// The refusal `synchost status` shows for the tenant once `broken` is installed.
fn refusal_after(host: &HostDir, broken: &str) -> String {
    install_tenant(host, broken);
    let mut problems = String::new();
    wait_for("the broken version to be refused", || {
        let status = status(host);
        let tenant = &status["tenants"][0];
        match tenant["refused"]["problems"].as_array() {
            Some(list) if tenant["health"] == "degraded" => {
                problems = list.iter().map(|p| p.as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n");
                true
            }
            _ => false,
        }
    });
    problems
}

#[test]
fn an_event_sync_survives_a_transform_swap_every_second_and_refuses_broken_versions() {
    let _turn = take_turn();
    let host = HostDir::new();
    let mapper = synchost::bundled::FIELD_MAPPER.bytes;
    std::fs::write(host.path("plugins/mapper_v2.wasm"), with_custom_section(mapper, "synchost-test-v2")).unwrap();
    std::fs::write(host.path("plugins/future.wasm"), future_wit_version(mapper)).unwrap();
    host.install_fixture("hostile_transform.wasm");
    host.install_fixture("flaky_destination.wasm");
    let versions = [
        ("field_mapper.wasm", sha256(mapper), "v1"),
        ("mapper_v2.wasm", sha256(&with_custom_section(mapper, "synchost-test-v2")), "v2"),
    ];
    host.write("data/in/changes.jsonl", "");
    install_tenant(&host, &tenant(&host, versions[0].0, versions[0].2, None));
    let daemon = start_daemon(&host);

    // The writer appends the changelog in chunks while the swapper below
    // replaces the transform every second.
    let changelog = host.path("data/in/changes.jsonl");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for chunk in 0..CHUNKS {
            let mut text = String::new();
            for i in chunk * EVENTS / CHUNKS..(chunk + 1) * EVENTS / CHUNKS {
                text += &format!("{}\n", json!({"op": "upsert", "row": {"id": format!("k{}", i % KEYS), "seq": i}}));
            }
            std::fs::OpenOptions::new().append(true).open(&changelog).unwrap().write_all(text.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    let mut swaps = 0;
    let mut refused = Vec::new();
    let started = Instant::now();
    while !writer.is_finished() || swaps < 8 {
        std::thread::sleep(Duration::from_secs(1));
        swaps += 1;
        let (file, _, tag) = &versions[swaps % 2];
        // Now and then, a broken version first: it must be refused, and the
        // good version after it must go in as usual.
        let broken = match swaps {
            2 => Some((
                tenant(
                    &host,
                    "field_mapper.wasm",
                    "x",
                    Some("config = { fields = [{ name = \"id\", from = \"id\" }], colour = \"blue\" }"),
                ),
                "config",
            )),
            3 => Some((
                tenant(&host, "hostile_transform.wasm", "x", Some("config = { attack = \"info-trap\" }")),
                "info",
            )),
            5 => Some((tenant(&host, "file_source.wasm", "x", None), "world")),
            7 => Some((tenant(&host, "future.wasm", "x", None), "version")),
            _ => None,
        };
        if let Some((text, kind)) = broken {
            refused.push((kind, refusal_after(&host, &text)));
        }
        install_tenant(&host, &tenant(&host, file, tag, None));
        // The next swap waits until the daemon has taken this one: on a busy
        // machine two swaps must not fold into one reload (or none).
        let (_, digest, _) = &versions[swaps % 2];
        wait_for("the daemon to take the new version", || {
            let status = status(&host);
            status["source"].as_str().is_some_and(|s| s.starts_with("daemon"))
                && map_digest(&status).as_ref() == Some(digest)
        });
        assert!(started.elapsed() < 3 * PATIENCE, "the swapping took too long");
    }
    writer.join().unwrap();

    // Every key reaches its last event.
    let last_seq: BTreeMap<String, u64> = (0..KEYS).map(|k| (format!("k{k}"), (EVENTS - KEYS + k) as u64)).collect();
    wait_for("every event to be applied", || {
        host.path("data/out/layout.json").exists() && {
            let records = host.records("data/out");
            records.len() == KEYS && last_seq.iter().all(|(k, seq)| records[k]["seq"] == json!(seq))
        }
    });
    let log = stop_daemon(&host, daemon);

    // The refusals name what is wrong, and the sync went on past each.
    let (config, info, world, version) = (&refused[0].1, &refused[1].1, &refused[2].1, &refused[3].1);
    assert!(
        config.contains("plugins.map.config.colour: unknown key `colour`: the plugin does not take it"),
        "{config}"
    );
    assert!(info.contains("`info()` of the new version failed") && info.contains("trapped"), "{info}");
    assert!(world.contains("is a source plugin, but this place needs a transform plugin"), "{world}");
    assert!(version.contains("synchost:plugin@9.2") && version.contains("this host supports"), "{version}");

    // Runs and their batches, oldest first.
    let mut runs: Vec<Value> =
        host.json(&["runs", "list", "--limit", "100000"]).as_array().unwrap().iter().rev().cloned().collect();
    runs.retain(|r| r["stats"]["batches"].as_u64().unwrap_or(0) > 0);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "a run did not succeed: {runs:#?}\n{log}");
    let digests: Vec<String> = runs.iter().map(|r| r["plugins"]["map"].as_str().unwrap().to_string()).collect();
    for (_, digest, _) in &versions {
        assert!(digests.contains(digest), "no run used {digest}: the swaps did not take effect\n{log}");
    }
    let changes = runs.windows(2).filter(|w| w[0]["plugins"]["map"] != w[1]["plugins"]["map"]).count();
    assert!(changes >= 4, "only {changes} version changes between runs in {swaps} swaps\n{log}");
    // Runs last several seconds (the destination is slow), so swaps land in
    // the middle of them: those runs hand over at a batch boundary.
    let handed_over = log.matches("handed_over=true").count();
    eprintln!("{swaps} swaps, {} runs with batches, {changes} version changes, {handed_over} hand-overs", runs.len());
    assert!(handed_over >= 1, "no run handed over to a new version mid-way\n{log}");

    // (start, end, tag) of every committed batch, in order; cursors continuous.
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    let mut expected_start = 0u64;
    for (run, digest) in runs.iter().zip(&digests) {
        let tag = versions.iter().find(|(_, d, _)| d == digest).map(|v| v.2).expect("a known version");
        let shown = host.json(&["runs", "show", &run["id"].to_string()]);
        for batch in shown["batches"].as_array().unwrap() {
            let start: u64 = batch["cursor_before"].as_str().map_or(0, |c| c.parse().unwrap());
            let end: u64 = batch["cursor_after"].as_str().unwrap().parse().unwrap();
            assert_eq!(start, expected_start, "batch of run {} does not start where the last one ended", run["id"]);
            expected_start = end;
            spans.push((start, end, tag));
        }
    }
    let text = std::fs::read_to_string(host.path("data/in/changes.jsonl")).unwrap();
    assert_eq!(expected_start as usize, text.len(), "the cursor did not reach the end of the changelog");

    // Each key's final record carries the tag of the version that processed
    // the batch holding the key's last event.
    let records = host.records("data/out");
    let mut offset = 0u64;
    let mut last_event_at: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.split_inclusive('\n') {
        let event: Value = serde_json::from_str(line).unwrap();
        last_event_at.insert(event["row"]["id"].as_str().unwrap().to_string(), offset);
        offset += line.len() as u64;
    }
    for (key, at) in &last_event_at {
        let (_, _, tag) = spans.iter().find(|(s, e, _)| (*s..*e).contains(at)).expect("a batch covers every event");
        assert_eq!(records[key]["tag"], json!(tag), "key {key}: its last batch ran on {tag}");
    }
}

#[test]
fn reload_status_and_rollback_work_through_the_admin_socket() {
    let _turn = take_turn();
    let host = HostDir::new();
    let mapper = synchost::bundled::FIELD_MAPPER.bytes;
    let (daemon, v2) = serve_v1_with_v2_beside(&host, "synchost-test-v2");
    let before = status(&host);
    assert_eq!(before["tenants"][0]["health"], "ok", "{before:#}");
    assert_eq!(map_digest(&before), Some(sha256(mapper)));

    // A new version, then `synchost reload` (the watcher may get there first:
    // either way the daemon ends up on v2).
    install_tenant(&host, &tenant(&host, "mapper_v2.wasm", "v2", None));
    let reload = host.synchost(&["reload"]);
    assert!(reload.status.success(), "{}", common::stderr(&reload));
    wait_for("v2 to be active", || map_digest(&status(&host)) == Some(sha256(&v2)));
    host.append("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "a", "seq": 1}})));
    wait_for("the event to sync on v2", || {
        host.path("data/out/layout.json").exists()
            && host.records("data/out").get("a").is_some_and(|r| r["tag"] == "v2")
    });

    // Rollback returns to v1 and says so in the status; new events get v1.
    let rollback = host.json(&["plugin", "rollback", "acme", "map"]);
    assert_eq!(rollback["change"], "swapped", "{rollback:#}");
    assert_eq!(rollback["plugins"]["map"], json!(sha256(mapper)));
    let after = status(&host);
    assert_eq!(map_digest(&after), Some(sha256(mapper)));
    assert_eq!(after["tenants"][0]["rolled_back"], true);
    host.append("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "a", "seq": 2}})));
    wait_for("the event to sync on v1", || host.records("data/out")["a"] == json!({"id": "a", "seq": 2, "tag": "v1"}));
    // Nothing older to return to.
    let again = host.synchost(&["plugin", "rollback", "acme", "map"]);
    assert!(!again.status.success());
    assert!(common::stderr(&again).contains("has no earlier version to return to"), "{}", common::stderr(&again));

    // A broken tenant file is refused with its place; v1 keeps running.
    host.write("tenants/acme.toml", "[plugins.map\n");
    let refused = host.synchost(&["reload"]);
    assert!(!refused.status.success());
    let text = common::stdout(&refused);
    assert!(text.contains("acme: new version refused") && text.contains("acme.toml:1:"), "{text}");
    assert_eq!(map_digest(&status(&host)), Some(sha256(mapper)));
    stop_daemon(&host, daemon);

    // With no daemon, status reads the files and state: the broken tenant is shown as such.
    let offline = status(&host);
    assert!(offline["source"].as_str().unwrap().starts_with("no daemon running"), "{offline:#}");
    assert_eq!(offline["tenants"][0]["health"], "not loaded", "{offline:#}");
}

#[test]
fn a_reload_asked_for_is_done_at_once_while_the_watcher_waits_for_quiet() {
    let _turn = take_turn();
    let host = HostDir::new();
    host.write("synchost.toml", &common::host_config("watch_debounce = \"1h\"\n"));
    let mapper = synchost::bundled::FIELD_MAPPER.bytes;
    let (daemon, v2) = serve_v1_with_v2_beside(&host, "synchost-test-debounce");
    assert_eq!(map_digest(&status(&host)), Some(sha256(mapper)));

    // The watcher sees the new version but waits an hour for the files to be
    // quiet; the daemon must go on answering meanwhile, and `synchost reload`
    // swaps the new version in at once and says so.
    install_tenant(&host, &tenant(&host, "mapper_v2.wasm", "v2", None));
    let reload = host.synchost(&["reload"]);
    let said = common::stdout(&reload);
    assert!(reload.status.success(), "{said}{}", common::stderr(&reload));
    assert!(said.contains("acme: now running") && said.contains(&format!("map={}", &sha256(&v2)[..12])), "{said}");
    assert_eq!(map_digest(&status(&host)), Some(sha256(&v2)));
    stop_daemon(&host, daemon);
}

#[test]
fn an_edit_that_lands_while_another_tenant_is_checked_is_not_lost() {
    // A reload reads every tenant file, then checks the changed ones; a
    // check can take a while. An edit landing meanwhile must still be the
    // version that ends up running, never dropped as "nothing changed".
    let _turn = take_turn();
    let host = HostDir::new();
    let hostile = host.install_fixture("hostile_transform.wasm");
    host.write("data/in/people.csv", "id,name\n1,Ann\n2,Bob\n");
    // Tenant `a` is checked first (tenant files are read in name order);
    // `b` is the one edited while `a` is checked.
    let tenant = |out: &str, tag: &str| {
        common::file_pipeline_tenant(
            r#"{ snapshot = "/in/people.csv", key = "id" }"#,
            &format!(r#"[{{ name = "id", from = "id" }}, {{ name = "tag", template = "{tag}" }}]"#),
            "mode = \"diff\"\nschedule = \"every 200ms\"\nmax_change_ratio = 1.0",
        )
        .replace("../data/out", &format!("../data/{out}"))
    };
    for out in ["out-a", "out-b"] {
        std::fs::create_dir_all(host.path(&format!("data/{out}"))).unwrap();
    }
    let write_tenant = |name: &str, text: &str| {
        host.write(&format!("tenants/{name}.toml.new"), text);
        std::fs::rename(host.path(&format!("tenants/{name}.toml.new")), host.path(&format!("tenants/{name}.toml")))
            .unwrap();
    };
    write_tenant("a", &tenant("out-a", "a1"));
    write_tenant("b", &tenant("out-b", "v1"));
    let daemon = start_daemon(&host);
    let tags_of_b = || {
        let records = common::read_records(&host.path("data/out-b"));
        records.values().map(|r| r["tag"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()
    };
    wait_for("tenant b's first sync", || host.path("data/out-b/layout.json").exists() && tags_of_b() == ["v1", "v1"]);

    // `a` gets a transform whose `info()` spins until its call_timeout, and
    // `b` a new version, in one reload.
    let mapper_digest = sha256(synchost::bundled::FIELD_MAPPER.bytes);
    let slow_a = tenant("out-a", "a2")
        .replace("path = \"field_mapper.wasm\"", "path = \"hostile_transform.wasm\"")
        .replace(&mapper_digest, &hostile)
        .replace(
            r#"config = { fields = [{ name = "id", from = "id" }, { name = "tag", template = "a2" }] }"#,
            "config = { attack = \"info-spin\" }\nlimits = { call_timeout = \"4s\" }",
        );
    assert!(slow_a.contains("info-spin"), "the tenant template changed:\n{slow_a}");
    write_tenant("a", &slow_a);
    write_tenant("b", &tenant("out-b", "v2"));
    // While `a` is being checked, `b` changes again.
    wait_for("the check of tenant a to start", || daemon_log(&host).contains("info-spin: spinning in info()"));
    write_tenant("b", &tenant("out-b", "v3"));

    // `b` does not wait for `a`'s check: tenants are checked side by side.
    wait_for("tenant b to sync its last version", || tags_of_b() == ["v3", "v3"]);
    wait_for("tenant a's check to be cut short", || daemon_log(&host).contains("exceeded its `call_timeout` limit"));
    stop_daemon(&host, daemon);
}
