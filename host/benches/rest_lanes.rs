//! Diff apply in parallel: a first load into a REST API that takes 20 ms to
//! answer each request, applied with one lane and with 16.
//!
//! The REST destination sends one request per operation and waits for each,
//! so one lane applies at most 50 operations a second against this API
//! whatever the host does. Lanes split the operations by key, each lane with
//! its own destination instance, so the requests of different lanes are in
//! flight together; the plugin manages no threads. The API is an axum server
//! in this process that holds the records in memory and sleeps 20 ms before
//! answering each request (GET included).
//!
//! Each round syncs `--rows` rows (default 800) from a CSV through the file
//! source into an empty API, with `lanes = 1` and then `lanes = 16`, and checks
//! that the API holds every row afterwards. Medians of `--repeat` rounds
//! (default 3); the ratio is 1 lane's time over 16 lanes'.
//!
//! Run: `cargo bench -p synchost --bench rest_lanes` (`-- --rows N --repeat N`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};
use synchost::{PipelineId, Runtime, SyncOptions, Tenants};

mod common;
use common::{digest, median, prepare_host_dir};

/// What every request waits before it is answered.
const LATENCY: Duration = Duration::from_millis(20);

type Records = Arc<Mutex<BTreeMap<String, Map<String, Json>>>>;

/// Starts the API on a port of 127.0.0.1; it serves as long as the process.
fn start_api(records: Records) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port on 127.0.0.1");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(handle).with_state(records);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

/// `GET /people` lists every record (a bare array: one page), `POST /people`
/// creates one, `PATCH` and `DELETE /people/{key}` change or remove one.
async fn handle(State(records): State<Records>, method: Method, uri: Uri, body: Bytes) -> Response {
    tokio::time::sleep(LATENCY).await;
    let mut records = records.lock().unwrap();
    let key = uri.path().strip_prefix("/people/").map(str::to_string);
    let body: Option<Map<String, Json>> = serde_json::from_slice(&body).ok();
    let (status, answer) = match (method, key, body) {
        (Method::GET, None, _) => (StatusCode::OK, Json::Array(records.values().cloned().map(Json::Object).collect())),
        (Method::POST, None, Some(record)) => match record.get("id").and_then(Json::as_str) {
            Some(id) => {
                records.insert(id.to_string(), record.clone());
                (StatusCode::CREATED, Json::Object(record))
            }
            None => (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": "no id"})),
        },
        (Method::PATCH, Some(key), Some(fields)) => match records.get_mut(&key) {
            Some(record) => {
                record.extend(fields);
                (StatusCode::OK, Json::Object(record.clone()))
            }
            None => (StatusCode::NOT_FOUND, json!({"error": "no such record"})),
        },
        (Method::DELETE, Some(key), _) => {
            records.remove(&key);
            (StatusCode::NO_CONTENT, Json::Null)
        }
        _ => (StatusCode::BAD_REQUEST, json!({"error": "not understood"})),
    };
    (status, axum::Json(answer)).into_response()
}

/// A host directory whose tenant `bench` diffs `people.csv` into the API.
fn write_host(dir: &Path, port: u16, rows: usize, lanes: usize) -> std::io::Result<PathBuf> {
    use synchost::bundled::{FILE_SOURCE, REST_DESTINATION};
    prepare_host_dir(dir, &["tenants", "data/in"])?;
    let mut csv = String::from("id,name,email\n");
    for i in 1..=rows {
        csv += &format!("p{i},Person {i},p{i}@example.com\n");
    }
    std::fs::write(dir.join("data/in/people.csv"), csv)?;
    std::fs::write(dir.join("synchost.toml"), "state_dir = \"state\"\n")?;
    std::fs::write(
        dir.join("tenants/bench.toml"),
        format!(
            r#"[plugins.src]
path = "{}"
sha256 = "{}"
dirs = [{{ host = "../data/in", guest = "/in" }}]
config = {{ snapshot = "/in/people.csv", key = "id" }}

[plugins.dst]
path = "{}"
sha256 = "{}"
allowed_hosts = ["127.0.0.1:{port}"]
config = {{ base_url = "http://127.0.0.1:{port}", collection = "/people", pagination = "none" }}

[pipelines.people]
mode = "diff"
source = "src"
destination = "dst"
lanes = {lanes}
"#,
            FILE_SOURCE.file_name,
            digest(FILE_SOURCE.bytes),
            REST_DESTINATION.file_name,
            digest(REST_DESTINATION.bytes),
        ),
    )?;
    Ok(dir.join("synchost.toml"))
}

/// Seconds for a first load of `rows` rows with `lanes` lanes into an empty API.
fn first_load(records: &Records, port: u16, rows: usize, lanes: usize) -> f64 {
    records.lock().unwrap().clear();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_host(dir.path(), port, rows, lanes).expect("host directory");
    let runtime = Runtime::load(&config, Tenants::All).expect("the bench tenant loads");
    let id = PipelineId { tenant: "bench".into(), pipeline: "people".into() };
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let report = runtime.job(&id, &stop, SyncOptions::default()).expect("job").run().expect("sync");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.status.to_string(), "succeeded", "{:?}", report.error);
    assert_eq!(report.stats.created, rows as u64, "the sync's creates");
    assert_eq!(records.lock().unwrap().len(), rows, "records the API holds after the sync");
    seconds
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let rows: usize = flag("--rows").map_or(800, |r| r.parse().expect("--rows N"));
    let repeat: usize = flag("--repeat").map_or(3, |r| r.parse().expect("--repeat N"));

    let records = Records::default();
    let port = start_api(records.clone());
    let (mut one, mut sixteen, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=repeat {
        let serial = first_load(&records, port, rows, 1);
        let parallel = first_load(&records, port, rows, 16);
        eprintln!("round {round}: 1 lane {serial:.2} s, 16 lanes {parallel:.2} s");
        one.push(serial);
        sixteen.push(parallel);
        ratios.push(serial / parallel);
    }
    let (one, sixteen) = (median(one), median(sixteen));
    println!("first load of {rows} rows into a REST API answering in {} ms, medians of {repeat}:", LATENCY.as_millis());
    println!("{:<10} {:>10} {:>10}", "lanes", "seconds", "rows/s");
    println!("{:<10} {one:>10.2} {:>10.0}", 1, rows as f64 / one);
    println!("{:<10} {sixteen:>10.2} {:>10.0}", 16, rows as f64 / sixteen);
    println!("16 lanes vs 1: {:.2}x faster", median(ratios));
}
