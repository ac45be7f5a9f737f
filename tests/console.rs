//! The web console in a real browser: Playwright (Python) driving Debian's
//! chromium against a real `synchost run` with real tenants. Each step is
//! done through the page by `tests/browser/console.py`; this test checks
//! what the step should have changed outside the browser (the destination,
//! the dead letters, `synchost status`). Screenshots of every page are kept
//! in `target/console-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::admin::{Daemon, wait_for};
use common::{HostDir, flaky_event_tenant, people_csv, python, sha256};
use serde_json::json;

/// Two tenants: `district` (a diff pipeline whose second plan the guard
/// blocks) and `shop` (an event pipeline into a destination that rejects
/// every key, so it holds dead letters).
fn host() -> HostDir {
    let host = HostDir::new();
    host.write("district/in/people.csv", &people_csv(12, "p"));
    let district = common::file_pipeline_tenant(
        r#"{ snapshot = "/in/people.csv", key = "id" }"#,
        r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#,
        "mode = \"diff\"\nmax_change_ratio = 0.2",
    )
    .replace("../data/in", "../district/in")
    .replace("../data/out", "../district/out");
    host.write("tenants/district.toml", &district);
    std::fs::create_dir_all(host.path("district/out")).unwrap();

    let digest = host.install_fixture("flaky_destination.wasm");
    host.write("tenants/shop.toml", &shop_tenant(&digest, 100));
    let changelog: String = (0..2)
        .map(|i| format!("{}\n", json!({"op": "upsert", "row": {"id": format!("order{i}"), "seq": 1}})))
        .collect();
    host.write("data/in/changes.jsonl", &changelog);
    // A third order never came as an event.
    let orders: String = (0..3).map(|i| format!("{}\n", json!({"id": format!("order{i}"), "seq": 1}))).collect();
    host.write("data/in/orders.jsonl", &orders);
    host
}

/// The shop's orders: events on a changelog, and a snapshot (which its
/// reconciliations read).
fn shop_tenant(digest: &str, reject_percent: u32) -> String {
    flaky_event_tenant(digest, &format!("reject_percent = {reject_percent}"), "").replace(
        r#"{ changelog = "/in/changes.jsonl", key = "id" }"#,
        r#"{ snapshot = "/in/orders.jsonl", changelog = "/in/changes.jsonl", key = "id" }"#,
    )
}

/// Where the screenshots go: kept after the test, as its artifacts.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs one step of the browser script; panics with its output if it fails.
fn browser(daemon: &Daemon, token: &str, args: &[&str]) -> String {
    let venv = python::venv();
    let chromium = python::chromium();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/console.py");
    let output = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(args)
        .env("SYNCHOST_URL", &daemon.url)
        .env("SYNCHOST_TOKEN", token)
        .env("SCREENSHOTS", screenshots())
        .env("CHROMIUM", chromium)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser step {args:?} failed:\n{text}\n--- daemon log ---\n{}", daemon.log());
    text
}

#[test]
fn an_operator_works_the_console_in_a_real_browser() {
    let host = host();
    let daemon = Daemon::start(&host);

    // A first load of the district, then a change the guard blocks.
    let (code, _) = daemon.post("/api/v1/tenants/district/pipelines/main/sync", None);
    assert_eq!(code, 202);
    let first = daemon.wait_for_run_after("district/main", None);
    assert_eq!(first["status"], "succeeded", "{first}");
    host.write("district/in/people.csv", &people_csv(12, "q"));
    daemon.post("/api/v1/tenants/district/pipelines/main/sync", None);
    let blocked = daemon.wait_for_run_after("district/main", first["id"].as_i64());
    assert_eq!(blocked["status"], "blocked", "{blocked}");
    let blocked_run = blocked["id"].as_i64().unwrap().to_string();
    // The shop's events are all rejected: dead letters.
    daemon.post("/api/v1/tenants/shop/pipelines/main/sync", None);
    wait_for("the shop's dead letters", Duration::from_secs(120), || daemon.pipeline("shop/main")["dead_letters"] == 2);
    // A second version of the shop's destination config, to roll back from.
    let digest = sha256(&std::fs::read(host.path("plugins/flaky_destination.wasm")).unwrap());
    host.write("tenants/shop.toml", &shop_tenant(&digest, 99));
    let (_, reload) = daemon.post("/api/v1/reload", None);
    assert_eq!(reload["changes"][0]["change"], "swapped", "{reload}");

    browser(&daemon, "wrong-token", &["unauthorised"]);
    browser(&daemon, &daemon.token, &["overview", "--tenants", "district,shop"]);
    browser(&daemon, &daemon.token, &["run", "--run", &first["id"].to_string()]);

    // Approving the blocked plan from the page changes the destination.
    assert_eq!(host.records("district/out")["3"]["name"], "p3");
    browser(&daemon, &daemon.token, &["approve", "--run", &blocked_run]);
    assert_eq!(host.records("district/out")["3"]["name"], "q3");

    // Retrying a dead letter from the page puts it back in the retry queue.
    browser(&daemon, &daemon.token, &["retry", "--tenant", "shop", "--pipeline", "main"]);
    let status = daemon.pipeline("shop/main");
    assert_eq!((&status["dead_letters"], &status["retry_queue"]), (&json!(1), &json!(1)), "{status}");

    // A rollback from the page shows in `synchost status`.
    assert_eq!(host.json(&["status"])["tenants"][1]["rolled_back"], false);
    browser(&daemon, &daemon.token, &["rollback", "--tenant", "shop", "--plugin", "dst"]);
    let status = host.json(&["status"]);
    assert_eq!(status["tenants"][1]["name"], "shop");
    assert_eq!(status["tenants"][1]["rolled_back"], true, "{status}");

    // A reconciliation asked for from the page finds the three orders the
    // destination lacks (it rejects every one of them).
    browser(&daemon, &daemon.token, &["reconcile", "--tenant", "shop", "--pipeline", "main", "--missing", "3"]);
    let last = &daemon.pipeline("shop/main")["last_reconcile"];
    assert_eq!(
        (last["mode"].as_str(), last["stats"]["drift"]["missing"].as_u64()),
        (Some("reconcile"), Some(3)),
        "{last}"
    );

    for page in ["overview.png", "plan.png", "approved.png", "pipeline.png", "plugins.png", "run.png", "reconcile.png"]
    {
        assert!(screenshots().join(page).exists(), "no screenshot {page}");
    }
}
