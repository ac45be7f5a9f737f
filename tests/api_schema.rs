//! The admin API against its own OpenAPI document: schemathesis (from PyPI,
//! pinned) generates requests for every operation, valid and not, against a
//! real daemon with real tenants, and fails on any 5xx answer or any answer
//! that does not match the document.

mod common;

use std::process::Command;
use std::time::Duration;

use common::admin::{Daemon, wait_for};
use common::{HostDir, file_pipeline_tenant, python};

#[test]
fn every_answer_of_the_api_matches_its_openapi_document_and_none_is_a_server_error() {
    let host = HostDir::new();
    let mut csv = String::from("id,name\n");
    (0..10).for_each(|i| csv += &format!("{i},n{i}\n"));
    host.write("data/in/people.csv", &csv);
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(
            r#"{ snapshot = "/in/people.csv", key = "id" }"#,
            r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#,
            "mode = \"diff\"",
        ),
    );
    let daemon = Daemon::start(&host);
    daemon.post("/api/v1/tenants/acme/pipelines/main/sync", None);
    daemon.wait_for_run_after("acme/main", None);

    let (status, document) = daemon.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    let schema = host.path("openapi.json");
    std::fs::write(&schema, document.to_string()).unwrap();

    let venv = python::venv();
    let output = Command::new(venv.join("bin/schemathesis"))
        .arg("run")
        .arg(&schema)
        .args(["--url", &daemon.url])
        .args(["--header", &format!("Authorization: Bearer {}", daemon.token)])
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance"])
        .args(["--max-examples", "25", "--seed", "20261207", "--workers", "2", "--request-timeout", "120"])
        .env("NO_COLOR", "1")
        // Its cache of found failures goes with the host directory.
        .current_dir(host.path(""))
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{report}\n--- daemon log ---\n{}", daemon.log());
    println!("{report}");

    // The daemon is still serving afterwards.
    wait_for("the daemon to answer after the run", Duration::from_secs(30), || {
        daemon.call("GET", "/readyz", None, None).0 == 200
    });
}
