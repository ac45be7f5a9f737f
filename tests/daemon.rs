//! `synchost run`: pipelines on their schedules, and a clean shutdown on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::admin::wait_for;
use common::{BIN, HostDir, KillOnDrop, file_pipeline_tenant};
use serde_json::json;

/// Tenant `acme`: an event pipeline run every `period` over a changelog of
/// one event (key `k`, `n` = 1).
fn one_event_every(host: &HostDir, period: &str) {
    host.write("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "k", "n": 1}})));
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "n", from = "n" }]"#,
            &format!("mode = \"event\"\nschedule = \"every {period}\""),
        ),
    );
}

/// `synchost run` on the host directory, its log captured.
fn start_daemon(host: &HostDir) -> KillOnDrop {
    KillOnDrop(
        Command::new(BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .arg("run")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// `synchost run` on the host directory, logging at `info` to `daemon.log`
/// there (with `env` set too), so that a test can follow what it does while
/// it runs.
fn start_logging_daemon(host: &HostDir, env: &[(&str, &str)]) -> (KillOnDrop, impl Fn() -> String) {
    let log_path = host.path("daemon.log");
    let daemon = KillOnDrop(
        Command::new(BIN)
            .arg("--config")
            .arg(host.path("synchost.toml"))
            .arg("run")
            .env("SYNCHOST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    (daemon, move || std::fs::read_to_string(&log_path).unwrap_or_default())
}

/// The daemon's exit, waited for at most `limit` (what it is waiting for
/// is said in the panic).
fn wait_for_exit(daemon: &mut KillOnDrop, limit: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(exit) = daemon.try_wait().unwrap() {
            return exit;
        }
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_follows_the_schedule_and_stops_cleanly_on_sigterm() {
    let host = HostDir::new();
    host.write("data/in/changes.jsonl", "");
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "n", from = "n" }]"#,
            "mode = \"event\"\nschedule = \"every 200ms\"",
        ),
    );
    let mut daemon = start_daemon(&host);

    // Events appended while the daemon runs are picked up by its schedule.
    for n in 0..3 {
        host.append("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "k", "n": n}})));
        wait_for("the daemon to apply the event", Duration::from_secs(60), || {
            host.path("data/out/layout.json").exists() && host.records("data/out").get("k").is_some_and(|r| r["n"] == n)
        });
    }

    let status = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_for_exit(&mut daemon, Duration::from_secs(60), "the daemon did not stop after SIGTERM");
    let log = std::io::read_to_string(daemon.stderr.take().unwrap()).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert!(log.contains("shutting down") && log.contains("stopped"), "{log}");

    // Every run the daemon started was finished and recorded, none left running.
    let output = host.synchost(&["runs", "list", "--json", "--limit", "1000"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!runs.is_empty());
    assert!(runs.iter().all(|r| r["status"] == "succeeded" || r["status"] == "stopped"), "{runs:?}");
    let read: u64 = runs.iter().map(|r| r["stats"]["read"].as_u64().unwrap()).sum();
    assert_eq!(read, 3, "each event was read exactly once across the runs");
}

#[test]
fn with_json_logs_every_line_is_an_object_with_the_runs_fields() {
    let host = HostDir::new();
    one_event_every(&host, "200ms");
    let (mut daemon, log) = start_logging_daemon(&host, &[("SYNCHOST_LOG_FORMAT", "json")]);
    wait_for("a run to be logged", Duration::from_secs(60), || log().contains("run finished"));
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    wait_for_exit(&mut daemon, Duration::from_secs(60), "the daemon did not stop after SIGTERM");
    let lines: Vec<serde_json::Value> = log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let run = lines.iter().find(|l| l["message"] == "run finished").expect("a run finished line");
    assert_eq!(run["pipeline"], "acme/main", "{run}");
    assert_eq!(run["level"], "INFO", "{run}");
    assert_eq!(run["read"], 1, "{run}");
    assert!(run["run"].is_u64() && run["timestamp"].is_string(), "{run}");
}

#[test]
fn a_config_error_pauses_an_event_pipeline_and_the_daemon_stops_scheduling_it() {
    let host = HostDir::new();
    host.write("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "k", "n": 1}})));
    let digest = host.install_fixture("flaky_destination.wasm");
    host.write(
        "tenants/acme.toml",
        &common::pipeline_tenant_with_destination(
            r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "n", from = "n" }]"#,
            ("flaky_destination.wasm", &digest),
            r#"{ dir = "/out", fail_config = "the LMS rejects our credentials" }"#,
            "mode = \"event\"\nschedule = \"every 100ms\"",
        ),
    );
    // A second tenant on the same schedule, as a clock: while it runs again
    // and again, the paused pipeline must not (a fixed sleep would prove
    // nothing on a machine too busy to schedule anything meanwhile).
    host.write("data/in/clock.csv", "id,n\nk,1\n");
    std::fs::create_dir_all(host.path("data/clock-out")).unwrap();
    host.write(
        "tenants/clock.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/clock.csv", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "n", from = "n" }]"#,
            "mode = \"diff\"\nschedule = \"every 100ms\"",
        )
        .replace("../data/out", "../data/clock-out"),
    );
    let mut daemon = start_daemon(&host);
    let runs = |pipeline: &str| -> Vec<serde_json::Value> {
        let output = host.synchost(&["runs", "list", pipeline, "--json", "--limit", "100"]);
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    };
    wait_for("the first run", Duration::from_secs(60), || !runs("acme/main").is_empty());
    wait_for("ten scheduled runs of the other tenant", Duration::from_secs(120), || {
        runs("clock/main").iter().filter(|r| r["status"] == "succeeded").count() >= 10
    });
    assert_eq!(runs("acme/main").len(), 1, "a paused pipeline is not run again: {:?}", runs("acme/main"));

    // Touching the tenant file (its content unchanged) says "try again": it
    // runs once more, and pauses again on the same error.
    let tenant = std::fs::File::options().append(true).open(host.path("tenants/acme.toml")).unwrap();
    tenant.set_modified(std::time::SystemTime::now() + Duration::from_secs(1)).unwrap();
    wait_for("the run after the touch", Duration::from_secs(60), || runs("acme/main").len() == 2);

    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    let exit = daemon.wait().unwrap();
    let log = std::io::read_to_string(daemon.stderr.take().unwrap()).unwrap();
    assert!(exit.success(), "{log}");
    let runs = runs("acme/main");
    assert_eq!(runs.len(), 2, "paused again, and not run a third time: {runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "paused"), "{runs:?}");
    assert!(runs[0]["error"].as_str().unwrap().contains("the LMS rejects our credentials"), "{}", runs[0]);
    assert!(log.contains("pipeline paused") && log.contains("the LMS rejects our credentials"), "{log}");
    assert!(!host.path("data/out/layout.json").exists(), "nothing was written");
}

#[test]
fn a_tenant_slow_to_check_holds_up_neither_other_tenants_nor_sigterm() {
    // A tenant arrives whose transform spins in `info()` until its
    // `call_timeout` of five minutes: the reload checking it cannot finish
    // for that long. Another tenant arriving meanwhile must be loaded and
    // run, and a SIGTERM must stop the daemon at once.
    let host = HostDir::new();
    let digest = host.install_fixture("hostile_transform.wasm");
    let (mut daemon, log) = start_logging_daemon(&host, &[]);
    wait_for("the daemon to start", Duration::from_secs(60), || log().contains("no pipeline has a schedule"));
    host.write(
        "tenants/slow.toml",
        &format!(
            "[plugins.spin]\npath = \"hostile_transform.wasm\"\nsha256 = \"{digest}\"\n\
             config = {{ attack = \"info-spin\" }}\nlimits = {{ call_timeout = \"5m\" }}\n"
        ),
    );
    wait_for("the reload to start", Duration::from_secs(60), || log().contains("reloading: checking the tenant files"));

    // The other tenant: loaded, and its pipeline run, while `slow` is
    // still being checked.
    one_event_every(&host, "100ms");
    wait_for("the other tenant to run", Duration::from_secs(120), || {
        host.path("data/out/layout.json").exists() && host.records("data/out").get("k").is_some_and(|r| r["n"] == 1)
    });
    let slow_done =
        |log: &str| log.lines().any(|l| l.contains("slow") && (l.contains("(re)loaded") || l.contains("refused")));
    assert!(!slow_done(&log()), "the slow tenant was not done being checked:\n{}", log());

    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let signalled = Instant::now();
    // Far below the five minutes the reload would take.
    let exit = wait_for_exit(&mut daemon, Duration::from_secs(120), "SIGTERM went unanswered during the reload");
    eprintln!("stopped {} ms after SIGTERM, mid-reload", signalled.elapsed().as_millis());
    let log = log();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert!(log.contains("a reload was under way: it is left unfinished") && log.contains("stopped"), "{log}");
    assert!(!slow_done(&log), "the slow tenant was not installed half-checked:\n{log}");
}

#[test]
fn a_state_file_cut_short_under_the_daemon_ends_it_with_words_not_a_silent_sigbus() {
    // SQLite maps `state.db-shm` into memory; a file made unwritable or cut
    // short under the daemon faults the next access to it (SIGBUS), which
    // nothing survives. The daemon must say what happened and exit with its
    // own status, not vanish.
    let host = HostDir::new();
    host.write("data/in/people.csv", "id\n1\n2\n");
    // A diff sync records a run every 100 ms: the daemon writes its state
    // all the time.
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/people.csv", key = "id" }"#,
            r#"[{ name = "id", from = "id" }]"#,
            "mode = \"diff\"\nschedule = \"every 100ms\"\nmax_change_ratio = 1.0",
        ),
    );
    let (mut daemon, log) = start_logging_daemon(&host, &[]);
    let shm = host.path("state/state.db-shm");
    wait_for("the state store's shared memory", Duration::from_secs(60), || {
        std::fs::metadata(&shm).is_ok_and(|m| m.len() > 0)
    });
    std::fs::OpenOptions::new().write(true).open(&shm).unwrap().set_len(0).unwrap();
    let exit = wait_for_exit(&mut daemon, Duration::from_secs(120), "the daemon went on with its state file cut short");
    let log = log();
    assert_eq!(exit.code(), Some(synchost::fault::EXIT_MAPPED_FILE), "{exit:?}\n{log}");
    assert!(
        log.contains("SIGBUS") && log.contains("state.db-shm") && log.contains("Nothing committed is lost"),
        "{log}"
    );
}
