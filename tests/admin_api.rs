//! The daemon's admin endpoint as an operator's tools use it: the HTTP API
//! (auth, errors, runs, pause and resume, a blocked plan approved, dead
//! letters retried, rollback), the metrics checked against the run records,
//! and the CLI going through the same API.

mod common;

use std::time::Duration;

use common::admin::{Daemon, wait_for};
use common::{HostDir, file_pipeline_tenant, flaky_event_tenant, people_csv};
use serde_json::json;

/// A host with a manual diff pipeline (`acme/main`) over `data/in/people.csv`.
fn diff_host() -> HostDir {
    let host = HostDir::new();
    host.write("data/in/people.csv", &people_csv(20, "p"));
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/people.csv", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#,
            "mode = \"diff\"\nmax_change_ratio = 0.2",
        ),
    );
    host
}

/// The value of a counter or gauge with exactly these labels in a Prometheus
/// text exposition, if present.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            return None;
        }
        let mut found: Vec<(String, String)> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        let mut wanted: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        found.sort();
        wanted.sort();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn the_api_refuses_without_the_token_and_answers_errors_as_json() {
    let host = diff_host();
    let daemon = Daemon::start(&host);

    // Health checks need no token; everything else does.
    let (status, body) = daemon.call("GET", "/healthz", None, None);
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    assert_eq!(daemon.call("GET", "/readyz", None, None).0, 200);
    for (method, path) in [
        ("GET", "/api/v1/tenants"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/reload"),
        ("POST", "/api/v1/tenants/acme/pipelines/main/sync"),
    ] {
        let (status, body) = daemon.call(method, path, None, None);
        assert_eq!((status, &body["code"]), (401, &json!("unauthorized")), "{method} {path}: {body}");
        let (status, _) = daemon.call(method, path, None, Some("not-the-token"));
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }
    // The token file is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host.path("state/admin.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Errors carry a stable code.
    let (status, body) = daemon.get("/api/v1/runs/999999");
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
    let (status, body) = daemon.get("/api/v1/runs/not-a-number");
    assert_eq!((status, &body["code"]), (400, &json!("bad_request")), "{body}");
    let (status, body) = daemon.get("/api/v1/runs?limit=0");
    assert_eq!((status, &body["code"]), (400, &json!("bad_request")), "{body}");
    let (status, body) = daemon.get("/api/v1/tenants/nobody/pipelines/main");
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
    let (status, body) = daemon.call("DELETE", "/api/v1/tenants", None, Some(&daemon.token));
    assert_eq!((status, &body["code"]), (405, &json!("method_not_allowed")), "{body}");
    let (status, body) = daemon.post("/api/v1/tenants/acme/pipelines/main/dead-letters/drop", Some(json!({})));
    assert_eq!((status, &body["code"]), (400, &json!("bad_request")), "an empty selection drops nothing: {body}");

    // The OpenAPI document describes every path the console uses.
    let (status, doc) = daemon.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/api/v1/runs/{run}/approve", "/api/v1/tenants/{tenant}/plugins/{plugin}/rollback", "/metrics"] {
        assert!(doc["paths"].get(path).is_some(), "the document lacks {path}");
    }
}

#[test]
fn an_operator_runs_pauses_approves_and_reads_the_metrics_through_the_api() {
    let host = diff_host();
    let daemon = Daemon::start(&host);

    // A manual pipeline has no next run; asked to, it runs.
    let status = daemon.pipeline("acme/main");
    assert!(status["next_run_at"].is_null() && status["paused"].is_null(), "{status}");
    let (code, body) = daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    assert_eq!(code, 202, "{body}");
    let first = daemon.wait_for_run_after("acme/main", None);
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["stats"]["created"], 20);
    assert_eq!(host.records("data/out").len(), 20);

    // The metrics agree with the run record.
    let (code, text) = daemon.get_text("/metrics");
    assert_eq!(code, 200);
    let labels = [("tenant", "acme"), ("pipeline", "main")];
    assert_eq!(metric(&text, "synchost_rows_created_total", &labels), Some(20.0), "{text}");
    assert_eq!(metric(&text, "synchost_rows_read_total", &labels), Some(20.0), "{text}");
    assert_eq!(
        metric(&text, "synchost_runs_total", &[("tenant", "acme"), ("pipeline", "main"), ("outcome", "succeeded")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("synchost_plugin_call_seconds_bucket{tenant=\"acme\",plugin=\"src\",function=\"snapshot\""),
        "{text}"
    );
    assert_eq!(metric(&text, "synchost_pipeline_paused", &labels), Some(0.0), "{text}");

    // Paused, it refuses to run, and stays paused across a restart.
    let (code, body) = daemon.post("/api/v1/tenants/acme/pipelines/main/pause", Some(json!({"reason": "migration"})));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["paused"]["reason"], "migration");
    let (code, body) = daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    assert_eq!((code, &body["code"]), (409, &json!("conflict")), "{body}");
    drop(daemon);
    let daemon = Daemon::start(&host);
    assert_eq!(daemon.pipeline("acme/main")["paused"]["reason"], "migration");
    // The CLI asks the same daemon.
    let status = host.json(&["status"]);
    assert!(status["source"].as_str().unwrap().starts_with("daemon"), "{status}");
    assert_eq!(status["tenants"][0]["pipelines"][0]["paused"]["reason"], "migration", "{status}");
    let resumed = host.json(&["resume", "acme/main"]);
    assert!(resumed["paused"].is_null(), "{resumed}");
    assert!(daemon.pipeline("acme/main")["paused"].is_null());

    // Half the names change: the guard blocks the plan; the API shows it
    // with samples, and approving it applies exactly it.
    host.write("data/in/people.csv", &people_csv(20, "q").replace("\n1,q1\n", "\n1,p1\n"));
    let (code, _) = daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    assert_eq!(code, 202);
    let blocked = daemon.wait_for_run_after("acme/main", first["id"].as_i64());
    assert_eq!(blocked["status"], "blocked", "{blocked}");
    let run = blocked["id"].as_i64().unwrap();
    assert_eq!(daemon.pipeline("acme/main")["blocked_run"], run);
    let (code, plan) = daemon.get(&format!("/api/v1/runs/{run}/plan"));
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["status"], "blocked");
    assert_eq!(plan["counts"]["updates"], 19, "{plan}");
    let sample = &plan["samples"]["updates"][0];
    assert_eq!(sample["changed"], json!(["name"]), "{plan}");
    assert!(sample["fields"]["name"].as_str().unwrap().starts_with('q'), "{plan}");
    let (_, text) = daemon.get_text("/metrics");
    assert_eq!(metric(&text, "synchost_blocked_plans", &labels), Some(1.0), "{text}");

    let (code, report) = daemon.post(&format!("/api/v1/runs/{run}/approve"), None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["stats"]["updated"], 19, "{report}");
    assert_eq!(host.records("data/out")["5"]["name"], "q5");
    let (code, again) = daemon.post(&format!("/api/v1/runs/{run}/approve"), None);
    assert_eq!((code, &again["code"]), (409, &json!("conflict")), "a plan is applied once: {again}");
    // `synchost approve` asks the daemon too, which says so.
    let output = host.synchost(&["approve", &run.to_string()]);
    assert!(!output.status.success());
    assert!(common::stderr(&output).contains("only a blocked plan is approved"), "{}", common::stderr(&output));

    // The run list filters.
    let (_, runs) = daemon.get("/api/v1/runs?tenant=acme&pipeline=main&status=succeeded");
    let ids: Vec<i64> = runs.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [run, first["id"].as_i64().unwrap()], "{runs}");
    let (_, detail) = daemon.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(detail["run"]["plugins"]["src"].as_str().map(str::len), Some(64), "{detail}");
}

#[test]
fn dead_letters_are_listed_retried_and_dropped_and_a_plugin_rolled_back_through_the_api() {
    let host = HostDir::new();
    let digest = host.install_fixture("flaky_destination.wasm");
    let tenant = |reject: u32| flaky_event_tenant(&digest, &format!("reject_percent = {reject}"), "");
    host.write("tenants/acme.toml", &tenant(100));
    let changelog: String =
        (0..3).map(|i| format!("{}\n", json!({"op": "upsert", "row": {"id": format!("k{i}"), "seq": 1}}))).collect();
    host.write("data/in/changes.jsonl", &changelog);
    let daemon = Daemon::start(&host);

    let (code, _) = daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    assert_eq!(code, 202);
    daemon.wait_for_run_after("acme/main", None);
    let (code, letters) = daemon.get("/api/v1/tenants/acme/pipelines/main/dead-letters");
    assert_eq!(code, 200);
    let ids: Vec<i64> = letters.as_array().unwrap().iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{letters}");
    assert_eq!(daemon.pipeline("acme/main")["dead_letters"], 3);

    let (code, outcome) =
        daemon.post("/api/v1/tenants/acme/pipelines/main/dead-letters/retry", Some(json!({"ids": [ids[0]]})));
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(outcome["requeued"], json!([ids[0]]));
    let (code, outcome) =
        daemon.post("/api/v1/tenants/acme/pipelines/main/dead-letters/drop", Some(json!({"ids": [ids[1]]})));
    assert_eq!((code, &outcome["dropped"]), (200, &json!(1)), "{outcome}");
    let status = daemon.pipeline("acme/main");
    assert_eq!((&status["dead_letters"], &status["retry_queue"]), (&json!(1), &json!(1)), "{status}");

    // A new destination config, then a rollback to the one before.
    host.write("tenants/acme.toml", &tenant(0));
    let (code, report) = daemon.post("/api/v1/reload", None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["changes"][0]["change"], "swapped", "{report}");
    let (_, plugins) = daemon.get("/api/v1/tenants/acme/plugins");
    let dst = plugins.as_array().unwrap().iter().find(|p| p["name"] == "dst").unwrap().clone();
    assert_eq!(dst["versions"].as_array().unwrap().len(), 2, "{dst}");
    let (code, change) = daemon.post("/api/v1/tenants/acme/plugins/dst/rollback", None);
    assert_eq!(code, 200, "{change}");
    assert_eq!(change["change"], "swapped");
    let status = host.json(&["status"]);
    assert_eq!(status["tenants"][0]["rolled_back"], true, "{status}");

    // The queued letter is retried by the next run (rejected again under the
    // rolled-back config), and the daemon's log carries the run.
    let (code, _) = daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    assert_eq!(code, 202);
    wait_for("the retried letter to settle", Duration::from_secs(120), || {
        let status = daemon.pipeline("acme/main");
        status["running"].is_null() && status["retry_queue"] == 0
    });
    assert_eq!(daemon.pipeline("acme/main")["dead_letters"], 2);
}

#[test]
fn metrics_scraped_during_an_event_sync_move_with_it_and_end_at_the_run_record() {
    let host = HostDir::new();
    let digest = host.install_fixture("flaky_destination.wasm");
    host.write("tenants/acme.toml", &flaky_event_tenant(&digest, "apply_delay_ms = 150", "max_batch = 10\nlanes = 1"));
    let changelog: String =
        (0..200).map(|i| format!("{}\n", json!({"op": "upsert", "row": {"id": format!("k{i}"), "seq": 1}}))).collect();
    host.write("data/in/changes.jsonl", &changelog);
    let daemon = Daemon::start(&host);
    let labels = [("tenant", "acme"), ("pipeline", "main")];

    let (code, _) = daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    assert_eq!(code, 202);
    // Mid-run: a scrape counts events while the run is still in progress
    // (it shows as running after the scrape), never more than the live run
    // has read by then: the counter moves with the run, not at its end.
    let live_read = || daemon.pipeline("acme/main")["running"]["stats"]["read"].as_u64();
    wait_for("a scrape that counts events of the run in progress", Duration::from_secs(120), || {
        let (_, text) = daemon.get_text("/metrics");
        let counted = metric(&text, "synchost_events_read_total", &labels).unwrap_or(0.0) as u64;
        match live_read() {
            Some(read) => {
                assert!(counted <= read, "the counter ({counted}) is ahead of the live run ({read}):\n{text}");
                counted > 0
            }
            None => false,
        }
    });

    let run = daemon.wait_for_run_after("acme/main", None);
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, text) = daemon.get_text("/metrics");
    let stats = &run["stats"];
    let counted = |name: &str| metric(&text, name, &labels).unwrap_or(0.0) as u64;
    assert_eq!(counted("synchost_events_read_total"), stats["read"].as_u64().unwrap(), "{text}");
    assert_eq!(counted("synchost_events_applied_total"), stats["upserted"].as_u64().unwrap(), "{text}");
    assert_eq!(counted("synchost_batch_commit_seconds_count"), stats["batches"].as_u64().unwrap(), "{text}");
    assert_eq!(metric(&text, "synchost_pipeline_running", &labels), Some(0.0), "{text}");
    assert_eq!(metric(&text, "synchost_retry_queue_depth", &labels), Some(0.0), "{text}");
}
