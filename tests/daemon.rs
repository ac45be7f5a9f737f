//! `synchost run`: pipelines on their schedules, and a clean shutdown on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, HostDir, file_pipeline_tenant};
use serde_json::json;

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
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
    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(host.path("synchost.toml"))
        .arg("run")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Events appended while the daemon runs are picked up by its schedule.
    for n in 0..3 {
        host.append("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "k", "n": n}})));
        wait_for("the daemon to apply the event", Duration::from_secs(20), || {
            host.path("data/out/layout.json").exists() && host.records("data/out").get("k").is_some_and(|r| r["n"] == n)
        });
    }

    let status = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = daemon.try_wait().unwrap() {
            break exit;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the daemon did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
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
