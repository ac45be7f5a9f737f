//! The engine's typed events, as an observer of the library hears them: what
//! the CLI's progress line, and metrics or an API later, are built on.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use common::{HostDir, file_pipeline_tenant};
use synchost::sync::SyncEvent;
use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

const FIELDS: &str = r#"[{ name = "id", from = "id" }, { name = "name", from = "name" }]"#;

/// Every event heard, as a short line.
fn recorder() -> (synchost::sync::Observer, Arc<Mutex<Vec<String>>>) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let observer: synchost::sync::Observer = Arc::new(move |event: &SyncEvent<'_>| {
        let line = match event {
            SyncEvent::RunStarted { pipeline, .. } => format!("started {pipeline}"),
            SyncEvent::PageRead { stats, .. } => format!("read {}", stats.read),
            SyncEvent::BatchApplied { done, total, .. } => format!("applied {done}/{total:?}"),
            SyncEvent::PlanBlocked { reason, .. } => format!("blocked: {reason}"),
            SyncEvent::BatchCommitted { .. } => "committed".to_string(),
            SyncEvent::LimitBreached { limit, .. } => format!("limit {limit}"),
            SyncEvent::RunFinished { status, stats, .. } => format!("finished {status:?} created {}", stats.created),
            SyncEvent::PluginSwapped { plugin, .. } => format!("swapped {plugin}"),
        };
        sink.lock().unwrap().push(line);
    });
    (observer, heard)
}

#[test]
fn a_diff_run_tells_its_start_its_pages_its_batches_and_its_end() {
    let host = HostDir::new();
    let csv: String = std::iter::once("id,name\n".to_string()).chain((1..=5).map(|i| format!("{i},n{i}\n"))).collect();
    host.write("data/in/people.csv", &csv);
    let source = r#"{ snapshot = "/in/people.csv", key = "id", page_size = 2 }"#;
    host.write(
        "tenants/acme.toml",
        &file_pipeline_tenant(source, FIELDS, "mode = \"diff\"\napply_batch = 2\nmax_change_ratio = 10.0"),
    );
    let mut runtime = Runtime::load(&host.path("synchost.toml"), Tenants::All).expect("the config loads");
    let (observer, heard) = recorder();
    runtime.observer = observer;
    let stop = AtomicBool::new(false);
    let report = runtime.job(&PipelineId::new("acme", "main"), &stop, SyncOptions::default()).unwrap().run().unwrap();
    assert_eq!(report.stats.created, 5);

    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.first().map(String::as_str), Some("started acme/main"), "{heard:?}");
    assert_eq!(heard.last().map(String::as_str), Some("finished Succeeded created 5"), "{heard:?}");
    // Pages of two rows after the first: the reads count up to the whole source.
    assert!(heard.iter().any(|e| e == "read 5"), "{heard:?}");
    // Batches of two operations, counted against the plan's five.
    let applied: Vec<&str> = heard.iter().filter(|e| e.starts_with("applied")).map(String::as_str).collect();
    assert_eq!(applied, ["applied 2/Some(5)", "applied 4/Some(5)", "applied 5/Some(5)"], "{heard:?}");
}

#[test]
fn a_blocked_plan_is_told_with_its_reason() {
    let host = HostDir::new();
    host.write("data/in/people.csv", "id,name\n1,a\n2,b\n3,c\n");
    let source = r#"{ snapshot = "/in/people.csv", key = "id" }"#;
    host.write("tenants/acme.toml", &file_pipeline_tenant(source, FIELDS, "mode = \"diff\"\nmax_change_ratio = 0.2"));
    let mut runtime = Runtime::load(&host.path("synchost.toml"), Tenants::All).unwrap();
    let stop = AtomicBool::new(false);
    let id = PipelineId::new("acme", "main");
    runtime.job(&id, &stop, SyncOptions::default()).unwrap().run().unwrap();
    // Two of three records change: above the ratio.
    host.write("data/in/people.csv", "id,name\n1,x\n2,y\n3,c\n");
    let (observer, heard) = recorder();
    runtime.observer = observer;
    let report = runtime.job(&id, &stop, SyncOptions::default()).unwrap().run().unwrap();
    assert_eq!(report.status, synchost::state::RunStatus::Blocked);
    let heard = heard.lock().unwrap().clone();
    assert!(heard.iter().any(|e| e.starts_with("blocked: ") && e.contains("max_change_ratio")), "{heard:?}");
    assert_eq!(heard.last().map(String::as_str), Some("finished Blocked created 0"), "{heard:?}");
}
