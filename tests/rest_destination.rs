//! The REST destination plugin end to end: the real binary syncs into a small
//! in-memory REST API served by this test on 127.0.0.1, over `wasi:http`,
//! through the tenant's `allowed_hosts` and `secrets`.
//!
//! The API (`/api/people`) lists records with cursor paging (or page numbers
//! when asked with `page`), creates with POST, changes with PATCH and PUT,
//! removes with DELETE, answers 401 without `Authorization: Bearer s3cret`,
//! answers a write again with its first answer when the `Idempotency-Key`
//! repeats, and logs every request it receives so the tests can check what
//! went over the wire. Faults are injected per record key. It can also behave as
//! json-server does (a PUT replaces, and answers 404 for a new key); and one
//! test runs against json-server itself (0.17.4, installed with npm into the
//! target directory).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{HostDir, file_pipeline_tenant, sha256};
use serde_json::{Map, Value as Json, json};

const TOKEN: &str = "s3cret";

/// One request as the API received it.
#[derive(Debug, Clone)]
struct Logged {
    method: String,
    /// The record key for `/api/people/{key}` (decoded), or `None` for the
    /// collection.
    key: Option<String>,
    query: BTreeMap<String, String>,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    body: Option<Json>,
    status: u16,
}

/// The API's state: its records, what it received, and its injected faults.
#[derive(Default)]
struct ApiState {
    records: BTreeMap<String, Map<String, Json>>,
    log: Vec<Logged>,
    /// Writes to these keys answer 503 this many more times.
    unavailable: BTreeMap<String, u32>,
    /// Writes to these keys are refused with 422 and this message.
    invalid: BTreeMap<String, String>,
    /// Answers to writes that succeeded, by their `Idempotency-Key`.
    answered: BTreeMap<String, (StatusCode, Json)>,
    /// As json-server does: a PUT replaces an existing record and answers
    /// 404 for a key it does not have.
    put_replaces_existing_only: bool,
}

/// A running API; the server thread lives as long as the test process.
#[derive(Clone)]
struct Api {
    port: u16,
    state: Arc<Mutex<ApiState>>,
}

impl Api {
    fn start() -> Api {
        let state = Arc::new(Mutex::new(ApiState::default()));
        let port = common::serve(axum::Router::new().fallback(handle).with_state(state.clone()));
        Api { port, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap()
    }

    fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    fn clear_log(&self) {
        self.lock().log.clear();
    }

    fn records(&self) -> BTreeMap<String, Map<String, Json>> {
        self.lock().records.clone()
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }
}

/// Every request: check the token, log, route. Routing by hand keeps one
/// place that logs what arrived, whatever the answer.
async fn handle(
    State(state): State<Arc<Mutex<ApiState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let key = uri.path().strip_prefix("/api/people/").map(percent_decode);
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect();
    let json_body: Option<Json> = (!body.is_empty()).then(|| serde_json::from_slice(&body).expect("a JSON body"));

    let mut state = state.lock().unwrap();
    let (status, answer) = if !uri.path().starts_with("/api/people") {
        (StatusCode::NOT_FOUND, json!({"error": "no such collection"}))
    } else if header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
        (StatusCode::UNAUTHORIZED, json!({"error": "invalid token"}))
    } else if let Some(answered) = header("idempotency-key").and_then(|k| state.answered.get(&k).cloned()) {
        answered
    } else {
        let answer = route(&mut state, &method, key.as_deref(), &query, json_body.clone());
        // A write's answer is kept under its idempotency key, as Stripe's API
        // does: the same key again gets the same answer and changes nothing.
        if let Some(idempotency_key) = header("idempotency-key")
            && method != Method::GET
            && answer.0.is_success()
        {
            state.answered.insert(idempotency_key, answer.clone());
        }
        answer
    };
    state.log.push(Logged {
        method: method.to_string(),
        key,
        query,
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        body: json_body,
        status: status.as_u16(),
    });
    (status, axum::Json(answer)).into_response()
}

fn route(
    state: &mut ApiState,
    method: &Method,
    key: Option<&str>,
    query: &BTreeMap<String, String>,
    body: Option<Json>,
) -> (StatusCode, Json) {
    // Faults first: they apply to every write naming the key.
    let write_key = key.map(str::to_string).or_else(|| body.as_ref().and_then(|b| b["id"].as_str().map(String::from)));
    if *method != Method::GET
        && let Some(key) = &write_key
    {
        if let Some(left) = state.unavailable.get_mut(key)
            && *left > 0
        {
            *left -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "try again later"}));
        }
        if let Some(message) = state.invalid.get(key) {
            return (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": message}));
        }
    }
    let object = |body: Option<Json>| match body {
        Some(Json::Object(object)) => object,
        other => panic!("expected a JSON object body, got {other:?}"),
    };
    match (method.as_str(), key) {
        ("GET", None) => (StatusCode::OK, list(state, query)),
        ("POST", None) => {
            let record = object(body);
            let Some(key) = record.get("id").and_then(Json::as_str).map(String::from) else {
                return (StatusCode::BAD_REQUEST, json!({"error": "id is required"}));
            };
            if state.records.contains_key(&key) {
                return (StatusCode::CONFLICT, json!({"error": "exists"}));
            }
            state.records.insert(key, record.clone());
            (StatusCode::CREATED, Json::Object(record))
        }
        ("PATCH", Some(key)) => match state.records.get_mut(key) {
            Some(record) => {
                record.extend(object(body));
                (StatusCode::OK, Json::Object(record.clone()))
            }
            None => (StatusCode::NOT_FOUND, json!({"error": "no such person"})),
        },
        ("GET", Some(key)) => match state.records.get(key) {
            Some(record) => (StatusCode::OK, Json::Object(record.clone())),
            None => (StatusCode::NOT_FOUND, json!({"error": "no such person"})),
        },
        ("PUT", Some(key)) if state.put_replaces_existing_only && !state.records.contains_key(key) => {
            (StatusCode::NOT_FOUND, json!({"error": "no such person"}))
        }
        ("PUT", Some(key)) => {
            let mut record = object(body);
            record.insert("id".into(), json!(key));
            state.records.insert(key.to_string(), record.clone());
            (StatusCode::OK, Json::Object(record))
        }
        ("DELETE", Some(key)) => match state.records.remove(key) {
            Some(_) => (StatusCode::NO_CONTENT, Json::Null),
            None => (StatusCode::NOT_FOUND, json!({"error": "no such person"})),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, json!({"error": "not here"})),
    }
}

/// Lists records in key order: by page number when asked with `page`, else by
/// cursor. The cursor holds a space and a slash, so a client that does not
/// encode it breaks.
fn list(state: &ApiState, query: &BTreeMap<String, String>) -> Json {
    let record = |r: &Map<String, Json>| Json::Object(r.clone());
    if let Some(page) = query.get("page") {
        let page: usize = page.parse().unwrap();
        let per_page: usize = query["per_page"].parse().unwrap();
        let items: Vec<Json> = state.records.values().skip((page - 1) * per_page).take(per_page).map(record).collect();
        return json!({ "items": items });
    }
    let limit: usize = query.get("limit").map_or(100, |l| l.parse().unwrap());
    let after = query.get("cursor").map(|c| c.strip_prefix("after /").expect("a cursor this API gave").to_string());
    let items: Vec<(&String, &Map<String, Json>)> =
        state.records.iter().filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after)).take(limit).collect();
    let more = items.last().is_some_and(|(last, _)| state.records.keys().any(|k| k > *last));
    let next = if more { json!(format!("after /{}", items.last().unwrap().0)) } else { Json::Null };
    json!({ "items": items.iter().map(|(_, r)| record(r)).collect::<Vec<_>>(), "next": next })
}

/// Undoes percent-encoding (the plugin encodes spaces as `%20`, never `+`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("a percent escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8 after decoding")
}

// --- the tenant ---

/// Mapper fields: the source's `id`, `name` and `email`.
const FIELDS: &str = r#"[
  { name = "id", from = "id" },
  { name = "name", from = "name" },
  { name = "email", from = "email" },
]"#;

/// How the tenant file grants the destination network access and its secret.
struct Grants<'a> {
    /// The `allowed_hosts` line, or none.
    allowed_hosts: Option<String>,
    secret: &'a str,
}

impl Grants<'_> {
    fn for_api(api: &Api) -> Grants<'static> {
        Grants { allowed_hosts: Some(format!("[\"127.0.0.1:{}\"]", api.port)), secret: TOKEN }
    }
}

/// A host whose `acme/main` pipeline reads `data/in` with the file source
/// (`source_config`), maps `FIELDS`, and writes to the test API through the
/// REST destination with `destination_extra` added to its config.
fn rest_host(api: &Api, grants: Grants, source_config: &str, destination_extra: &str, pipeline: &str) -> HostDir {
    let host = HostDir::new();
    let digest = sha256(synchost::bundled::REST_DESTINATION.bytes);
    let tenant = file_pipeline_tenant(source_config, FIELDS, pipeline);
    // Swap the file destination's table for the REST destination's.
    let start = tenant.find("[plugins.dst]").expect("the tenant has a dst plugin");
    let end = tenant.find("[pipelines.main]").expect("the tenant has a main pipeline");
    let allowed = grants.allowed_hosts.map(|hosts| format!("allowed_hosts = {hosts}\n")).unwrap_or_default();
    let destination = format!(
        r#"[plugins.dst]
path = "rest_destination.wasm"
sha256 = "{digest}"
{allowed}secrets = {{ api_token = "{secret}" }}
config = {{ base_url = "{base}", collection = "/people", auth_secret = "api_token", fields = {{ name = "full_name" }}{destination_extra} }}

"#,
        secret = grants.secret,
        base = api.base_url(),
    );
    host.write("tenants/acme.toml", &format!("{}{destination}{}", &tenant[..start], &tenant[end..]));
    host
}

const DIFF_SOURCE: &str = r#"{ snapshot = "/in/people.csv", key = "id" }"#;
const EVENT_SOURCE: &str = r#"{ changelog = "/in/changes.jsonl", key = "id" }"#;
/// The change guard off, so that small data sets can change freely.
const DIFF: &str = "mode = \"diff\"\nmax_change_ratio = 10.0";

fn people_csv(rows: &[(u32, &str)]) -> String {
    let mut csv = "id,name,email\n".to_string();
    for (id, name) in rows {
        csv += &format!("{id},{name},{}@example.com\n", name.to_lowercase());
    }
    csv
}

fn count(report: &Json, field: &str) -> u64 {
    report["stats"][field].as_u64().unwrap_or_else(|| panic!("no stats.{field} in {report}"))
}

/// The requests that changed something (anything but GET), as (method, key).
fn writes(log: &[Logged]) -> Vec<(String, Option<String>)> {
    log.iter().filter(|r| r.method != "GET").map(|r| (r.method.clone(), r.key.clone())).collect()
}

// --- the tests ---

#[test]
fn a_diff_sync_creates_pages_updates_and_deletes_through_the_api() {
    let api = Api::start();
    let names = ["Ann", "Bob", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
    let rows: Vec<(u32, &str)> = (1..).zip(names).collect();
    let host = rest_host(&api, Grants::for_api(&api), DIFF_SOURCE, ", page_size = 3", DIFF);
    host.write("data/in/people.csv", &people_csv(&rows));

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "created"), 8, "{report}");
    let records = api.records();
    assert_eq!(records.len(), 8);
    assert_eq!(
        Json::Object(records["2"].clone()),
        json!({"id": "2", "full_name": "Bob", "email": "bob@example.com"}),
        "fields are sent under their mapped names, with the key in `id`"
    );
    let log = api.log();
    assert!(log.iter().all(|r| r.authorization.as_deref() == Some("Bearer s3cret")), "every request carries the token");
    assert_eq!(writes(&log).iter().filter(|(method, _)| method == "POST").count(), 8, "{:?}", writes(&log));
    assert!(log.iter().all(|r| r.status < 300), "no request failed: {log:?}");

    // Bob is renamed, Di leaves.
    api.clear_log();
    let changed: Vec<(u32, &str)> = rows
        .iter()
        .copied()
        .filter(|(id, _)| *id != 4)
        .map(|(id, name)| (id, if id == 2 { "Rob" } else { name }))
        .collect();
    host.write("data/in/people.csv", &people_csv(&changed));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(
        (count(&report, "created"), count(&report, "updated"), count(&report, "deleted"), count(&report, "unchanged")),
        (0, 1, 1, 6),
        "{report}"
    );
    let log = api.log();
    assert_eq!(
        writes(&log),
        [("DELETE".to_string(), Some("4".to_string())), ("PATCH".to_string(), Some("2".to_string()))],
        "exactly one delete and one patch"
    );
    let patch = log.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.body, Some(json!({"full_name": "Rob", "email": "rob@example.com"})), "only the changed fields");
    // The snapshot of 8 records came in pages of 3, each after the first
    // asking for the cursor the one before returned.
    let pages: Vec<&Logged> = log.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages.iter().all(|r| r.query.get("limit").map(String::as_str) == Some("3")), "{pages:?}");
    assert_eq!(pages[0].query.get("cursor"), None);
    assert_eq!(pages[1].query.get("cursor").map(String::as_str), Some("after /3"));
    assert_eq!(pages[2].query.get("cursor").map(String::as_str), Some("after /6"));
    let records = api.records();
    assert_eq!(records.keys().collect::<Vec<_>>(), ["1", "2", "3", "5", "6", "7", "8"]);
    assert_eq!(records["2"]["full_name"], "Rob");

    // Nothing changed at the source: nothing is written.
    api.clear_log();
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(
        (count(&report, "created"), count(&report, "updated"), count(&report, "deleted"), count(&report, "unchanged")),
        (0, 0, 0, 7),
        "{report}"
    );
    assert_eq!(writes(&api.log()), [], "an idle sync sends only reads");
}

#[test]
fn page_number_paging_reads_until_an_empty_page() {
    let api = Api::start();
    let rows: Vec<(u32, &str)> = (1..).zip(["Ann", "Bob", "Cy", "Di", "Ed"]).collect();
    let host = rest_host(&api, Grants::for_api(&api), DIFF_SOURCE, ", pagination = \"page\", page_size = 2", DIFF);
    host.write("data/in/people.csv", &people_csv(&rows));
    assert!(host.sync("acme/main", &[]).0);

    api.clear_log();
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "unchanged"), 5, "every record was read back: {report}");
    let pages: Vec<String> = api.log().iter().map(|r| format!("{} {:?}", r.method, r.query)).collect();
    assert_eq!(
        pages,
        (1..=4).map(|page| format!("GET {{\"page\": \"{page}\", \"per_page\": \"2\"}}")).collect::<Vec<_>>(),
        "pages 1-3 hold the records, page 4 is empty and ends the listing"
    );
}

#[test]
fn an_event_sync_puts_and_deletes_in_order_per_key_with_idempotency_keys() {
    let api = Api::start();
    let host = rest_host(&api, Grants::for_api(&api), EVENT_SOURCE, "", "mode = \"event\"\nmax_batch = 2");
    let upsert = |id: &str, name: &str| json!({"op": "upsert", "row": {"id": id, "name": name, "email": null}});
    let delete = |id: &str| json!({"op": "delete", "key": id});
    // Two events a batch, so that each key's operations span batches.
    let events = [
        upsert("1", "Ann"),
        upsert("a/b c", "Bob"),
        delete("1"),
        upsert("a/b c", "Rob"),
        upsert("1", "Annie"),
        delete("a/b c"),
        delete("never-created"),
    ];
    host.write("data/in/changes.jsonl", &events.iter().map(|e| format!("{e}\n")).collect::<String>());

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "read"), 7, "{report}");
    assert_eq!(
        (
            count(&report, "upserted"),
            count(&report, "deleted"),
            count(&report, "dead_lettered"),
            count(&report, "failed")
        ),
        (4, 3, 0, 0),
        "every operation applied, the delete of a key the API never had included: {report}"
    );
    let log = api.log();
    let per_key = |key: &str| -> Vec<String> {
        log.iter().filter(|r| r.key.as_deref() == Some(key)).map(|r| r.method.clone()).collect()
    };
    assert_eq!(per_key("1"), ["PUT", "DELETE", "PUT"]);
    assert_eq!(per_key("a/b c"), ["PUT", "PUT", "DELETE"], "a key with a slash and a space is one path segment");
    assert_eq!(per_key("never-created"), ["DELETE"]);
    assert!(
        log.iter().any(|r| r.key.as_deref() == Some("never-created") && r.status == 404),
        "the API did not have it, and that counts as deleted"
    );
    let records = api.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(Json::Object(records["1"].clone()), json!({"id": "1", "full_name": "Annie", "email": null}));

    let keys: Vec<&str> = log.iter().filter_map(|r| r.idempotency_key.as_deref()).collect();
    assert_eq!(keys.len(), 7, "every write carries an Idempotency-Key: {log:?}");
    assert!(keys.iter().all(|k| !k.is_empty()));
    assert_eq!(keys.iter().collect::<std::collections::BTreeSet<_>>().len(), 7, "one key per operation: {keys:?}");
    assert_eq!(report["stats"]["pending_retries"], 0, "{report}");

    api.clear_log();
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "read"), 0);
    assert!(api.log().is_empty(), "nothing new: nothing sent");
}

#[test]
fn a_destination_not_on_allowed_hosts_is_refused_before_any_request() {
    let api = Api::start();
    let unlisted = || Grants { allowed_hosts: None, secret: TOKEN };
    let other_port = || Grants { allowed_hosts: Some(format!("[\"127.0.0.1:{}\"]", api.port ^ 1)), secret: TOKEN };
    let check = |case: &str, report: &Json| {
        let error = report["error"].as_str().unwrap_or_else(|| panic!("{case}: no error in {report}"));
        assert!(error.contains("plugin `dst`"), "{case}: the error names the plugin: {error}");
        assert!(error.contains("HttpRequestDenied") && error.contains("allowed_hosts"), "{case}: {error}");
    };

    // A diff sync is refused on its first read of the destination.
    for (case, grants) in [("no allowed_hosts", unlisted()), ("another port", other_port())] {
        let host = rest_host(&api, grants, DIFF_SOURCE, "", DIFF);
        host.write("data/in/people.csv", &people_csv(&[(1, "Ann")]));
        let (ok, report) = host.sync("acme/main", &[]);
        assert!(!ok, "{case}: the sync must fail: {report}");
        check(case, &report);
        assert_eq!(count(&report, "created"), 0, "{case}");
    }

    // An event sync is refused on its first write (a request with a body),
    // and pauses with its cursor where it was.
    let host = rest_host(&api, unlisted(), EVENT_SOURCE, "", "mode = \"event\"");
    host.write("data/in/changes.jsonl", &format!("{}\n", json!({"op": "upsert", "row": {"id": "1", "name": "Ann"}})));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "paused", "{report}");
    check("event sync", &report);
    assert_eq!(report["stats"]["cursor_after"], Json::Null, "{report}");

    assert!(api.log().is_empty(), "the API never heard from the plugin: {:?}", api.log());
}

#[test]
fn a_wrong_secret_is_a_config_error_and_nothing_counts_as_applied() {
    let api = Api::start();
    let wrong = || Grants { allowed_hosts: Some(format!("[\"127.0.0.1:{}\"]", api.port)), secret: "wrong" };

    // A diff sync fails on its first read of the destination.
    let host = rest_host(&api, wrong(), DIFF_SOURCE, "", DIFF);
    host.write("data/in/people.csv", &people_csv(&[(1, "Ann")]));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("plugin `dst`") && error.contains("answered 401"), "{error}");
    assert!(
        error.contains("invalid token") && error.contains("`api_token`"),
        "the API's reason and the secret: {error}"
    );
    assert_eq!(writes(&api.log()), [], "nothing was written");

    // An event sync is refused on its first write: the batch is not
    // committed, the cursor stays, and fixing the secret applies it all.
    api.clear_log();
    let host = rest_host(&api, wrong(), EVENT_SOURCE, "", "mode = \"event\"");
    let events = [
        json!({"op": "upsert", "row": {"id": "1", "name": "Ann", "email": null}}),
        json!({"op": "delete", "key": "2"}),
    ];
    host.write("data/in/changes.jsonl", &events.iter().map(|e| format!("{e}\n")).collect::<String>());
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "paused", "a config error pauses the pipeline: {report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("plugin `dst`") && error.contains("answered 401"), "{error}");
    assert_eq!(report["stats"]["cursor_after"], Json::Null, "the cursor did not move: {report}");
    assert_eq!(count(&report, "dead_lettered"), 0, "{report}");
    assert!(api.records().is_empty());
    assert!(api.log().iter().all(|r| r.status == 401), "{:?}", api.log());

    let tenant = std::fs::read_to_string(host.path("tenants/acme.toml")).unwrap();
    host.write("tenants/acme.toml", &tenant.replace("api_token = \"wrong\"", &format!("api_token = \"{TOKEN}\"")));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "read"), 2, "the batch is read again from the old cursor: {report}");
    assert_eq!(api.records().keys().collect::<Vec<_>>(), ["1"]);
}

#[test]
fn unavailable_answers_are_retried_and_invalid_records_are_rejected_with_the_api_reason() {
    let api = Api::start();
    {
        let mut state = api.lock();
        state.unavailable.insert("2".into(), 2);
        state.invalid.insert("4".into(), "email must not belong to a robot".into());
    }
    let rows: Vec<(u32, &str)> = (1..).zip(["Ann", "Bob", "Cy", "Robot", "Ed"]).collect();
    let host = rest_host(&api, Grants::for_api(&api), DIFF_SOURCE, "", DIFF);
    host.write("data/in/people.csv", &people_csv(&rows));

    let (ok, report) = host.sync("acme/main", &[]);
    // A rejected record does not fail the run, but the run says it left one out.
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "succeeded_with_errors", "{report}");
    assert!(report["error"].as_str().unwrap().contains("1 rejected"), "{report}");
    assert_eq!((count(&report, "created"), count(&report, "rejected")), (4, 1), "{report}");
    assert!(count(&report, "retried") >= 2, "the two 503s were retried within the run: {report}");
    let failures: Vec<(String, String)> = serde_json::from_value(report["failures"].clone()).unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (key, reason) = &failures[0];
    assert_eq!(key, "4");
    assert!(reason.starts_with("rejected error"), "{reason}");
    assert!(reason.contains("answered 422") && reason.contains("email must not belong to a robot"), "{reason}");

    let log = api.log();
    let attempts: Vec<&Logged> =
        log.iter().filter(|r| r.method == "POST" && r.body.as_ref().unwrap()["id"] == "2").collect();
    assert_eq!(attempts.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 503, 201]);
    assert!(
        attempts.iter().all(|r| r.idempotency_key == attempts[0].idempotency_key && r.idempotency_key.is_some()),
        "a retried operation keeps its Idempotency-Key: {attempts:?}"
    );
    assert_eq!(api.records().keys().collect::<Vec<_>>(), ["1", "2", "3", "5"]);
}

#[test]
fn a_record_larger_than_a_stream_chunk_crosses_whole_both_ways() {
    let api = Api::start();
    let host = rest_host(&api, Grants::for_api(&api), DIFF_SOURCE, "", DIFF);
    // Far beyond one write or read of the plugin's HTTP client (64 KiB) and
    // the host's stream buffers, so the body goes in many pieces.
    let long: String = (0..300_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    host.write("data/in/people.csv", &people_csv(&[(1, &long), (2, "Bob")]));

    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "created"), 2, "{report}");
    assert_eq!(api.records()["1"]["full_name"].as_str(), Some(long.as_str()), "the body arrived whole");

    // Reading it back (a response of the same size) finds nothing to change.
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!((count(&report, "unchanged"), count(&report, "updated")), (2, 0), "{report}");
}

#[test]
fn config_mistakes_are_reported_by_key_before_any_request() {
    let api = Api::start();
    let base = api.base_url();
    let collection = "collection = \"/people\"";
    let tenant_with = |from: &str, to: &str| {
        let host = rest_host(&api, Grants::for_api(&api), DIFF_SOURCE, "", DIFF);
        let tenant = std::fs::read_to_string(host.path("tenants/acme.toml")).unwrap();
        assert!(tenant.contains(from), "the tenant file has `{from}`");
        host.write("tenants/acme.toml", &tenant.replacen(from, to, 1));
        host.write("data/in/people.csv", &people_csv(&[(1, "Ann")]));
        host
    };
    // Mistakes of shape, which the plugin's config schema catches: `validate`
    // names the tenant file's key, and no plugin call is made at all.
    let schema_cases = [
        (format!("{collection}, pagesize = 3"), "plugins.dst.config.pagesize: unknown key `pagesize`"),
        (format!("{collection}, page_size = \"three\""), "plugins.dst.config.page_size: \"three\" is not of type"),
        (
            format!("{collection}, pagination = \"offset\""),
            "plugins.dst.config.pagination: \"offset\" is not allowed here: expected \"cursor\"|\"page\"|\"none\"",
        ),
        (format!("{collection}, page_size = 0"), "plugins.dst.config.page_size: 0 is less than the minimum of 1"),
    ];
    for (to, expected) in schema_cases {
        let host = tenant_with(collection, &to);
        let output = host.synchost(&["validate"]);
        assert!(!output.status.success(), "{to}: validate passed");
        let error = common::stderr(&output);
        assert!(error.contains("acme.toml:") && error.contains(expected), "{to}: `{expected}` not in: {error}");
        let (ok, report) = host.sync("acme/main", &[]);
        assert!(!ok && report["error"].as_str().unwrap().contains(expected), "{to}: {report}");
    }
    // Mistakes only the plugin can see, reported by key when it reads its
    // config, before any request.
    // (what to replace in the tenant file, by what, what the error must say)
    let cases = [
        (
            "fields = { name = \"full_name\" }",
            "fields = { name = \"full_name\", email = \"full_name\" }".to_string(),
            vec!["`fields.", "API field `full_name`"],
        ),
        (base.as_str(), "ftp://127.0.0.1/api".to_string(), vec!["`base_url`", "not an http:// or https:// URL"]),
        (
            "auth_secret = \"api_token\"",
            "auth_secret = \"crm_token\"".to_string(),
            vec!["`auth_secret`", "no secret `crm_token`", "`secrets`"],
        ),
    ];
    for (from, to, expected) in cases {
        let host = tenant_with(from, &to);
        let (ok, report) = host.sync("acme/main", &[]);
        assert!(!ok, "{to}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("plugin `dst`"), "{to}: {error}");
        assert!(!error.contains(" at line "), "no position in the host's JSON rendering: {error}");
        for part in expected {
            assert!(error.contains(part), "{to}: `{part}` not in: {error}");
        }
    }
    assert!(api.log().is_empty(), "no request went out: {:?}", api.log());
}

/// An API that keeps a field the sync does not write (`homeroom`) on record 1,
/// whose PUT replaces and 404s on a missing key, as json-server's does.
#[test]
fn plugin_test_passes_the_rest_destination_against_the_api() {
    let api = Api::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("rest_destination.wasm"), synchost::bundled::REST_DESTINATION.bytes).unwrap();
    let config = json!({"base_url": api.base_url(), "collection": "/people", "auth_secret": "api_token"});
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    let (allow, secret) = (format!("127.0.0.1:{}", api.port), format!("api_token={TOKEN}"));
    let report = common::plugin_test_passes(
        d,
        &["rest_destination.wasm", "--plugin-config", "config.json", "--allow-host", &allow, "--secret", &secret],
    );
    assert!(report.contains("7 passed, 0 failed, 0 skipped"), "{report}");
    assert!(api.records().is_empty(), "the checks clean up after themselves: {:?}", api.records());
    // The redelivered create went over the wire twice with one key.
    let posts: Vec<Option<String>> =
        api.log().into_iter().filter(|r| r.method == "POST").map(|r| r.idempotency_key).collect();
    assert!(posts.windows(2).any(|pair| pair[0].is_some() && pair[0] == pair[1]), "{posts:?}");
}

fn json_server_like(api: &Api) {
    let mut state = api.lock();
    state.put_replaces_existing_only = true;
    let record = json!({"id": "1", "full_name": "Ann", "email": null, "homeroom": "B12"});
    state.records.insert("1".into(), record.as_object().unwrap().clone());
}

#[test]
fn upserts_create_missing_records_and_keep_fields_the_sync_does_not_write() {
    let upsert = |id: &str, name: &str| json!({"op": "upsert", "row": {"id": id, "name": name, "email": null}});
    let events = format!("{}\n{}\n", upsert("1", "Annie"), upsert("2", "Bob"));
    for (extra, methods) in [
        // PUT, and POST where the PUT found nothing; the GET before the PUT
        // merges the row into the record.
        (r#", upsert_method = "put-then-post", put_merges = true"#, vec!["GET", "PUT", "GET", "POST"]),
        // PATCH merges by itself; POST where it found nothing.
        (r#", upsert_method = "patch-then-post""#, vec!["PATCH", "PATCH", "POST"]),
    ] {
        let api = Api::start();
        json_server_like(&api);
        // One lane, so that the requests come in a known order.
        let host = rest_host(&api, Grants::for_api(&api), EVENT_SOURCE, extra, "mode = \"event\"\nlanes = 1");
        host.write("data/in/changes.jsonl", &events);
        let (ok, report) = host.sync("acme/main", &[]);
        assert!(ok, "{extra}: {report}");
        assert_eq!(count(&report, "upserted"), 2, "{extra}: {report}");
        let records = api.records();
        assert_eq!(
            Json::Object(records["1"].clone()),
            json!({"id": "1", "full_name": "Annie", "email": null, "homeroom": "B12"}),
            "{extra}: the hand-kept field survives"
        );
        assert_eq!(
            Json::Object(records["2"].clone()),
            json!({"id": "2", "full_name": "Bob", "email": null}),
            "{extra}"
        );
        let sent: Vec<String> = api.log().iter().map(|r| r.method.clone()).collect();
        assert_eq!(sent, methods, "{extra}");
    }

    // Without them, such an API answers 404 to the new key: it is rejected,
    // and the run says so rather than succeed.
    let api = Api::start();
    json_server_like(&api);
    let host = rest_host(&api, Grants::for_api(&api), EVENT_SOURCE, "", "mode = \"event\"");
    host.write("data/in/changes.jsonl", &events);
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(!ok, "{report}");
    assert_eq!(report["status"], "succeeded_with_errors", "{report}");
    assert_eq!(count(&report, "dead_lettered"), 1, "{report}");
}

#[test]
fn a_diff_update_by_put_keeps_fields_the_sync_does_not_write_with_put_merges() {
    let api = Api::start();
    json_server_like(&api);
    let host =
        rest_host(&api, Grants::for_api(&api), DIFF_SOURCE, r#", update_method = "put", put_merges = true"#, DIFF);
    host.write("data/in/people.csv", "id,name,email\n1,Annie,\n");
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "updated"), 1, "{report}");
    assert_eq!(
        Json::Object(api.records()["1"].clone()),
        json!({"id": "1", "full_name": "Annie", "email": null, "homeroom": "B12"})
    );
}

/// json-server, at the version pinned here, installed with npm once into the
/// target directory; fails loudly when npm or its registry is not there.
fn json_server_bin() -> std::path::PathBuf {
    const VERSION: &str = "0.17.4";
    static INSTALLED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let prefix = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("json-server-{VERSION}"));
            let bin = prefix.join("node_modules/.bin/json-server");
            if !bin.exists() {
                let output = std::process::Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                    .arg(&prefix)
                    .arg(format!("json-server@{VERSION}"))
                    .output()
                    .unwrap_or_else(|e| panic!("this test needs npm to install json-server {VERSION}: {e}"));
                assert!(
                    output.status.success() && bin.exists(),
                    "npm could not install json-server {VERSION}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            bin
        })
        .clone()
}

/// A json-server serving `db` under `/api`, killed when dropped.
struct JsonServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl JsonServer {
    fn start(db: &Json) -> JsonServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db.json"), db.to_string()).unwrap();
        std::fs::write(dir.path().join("routes.json"), r#"{ "/api/*": "/$1" }"#).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(json_server_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--routes", "routes.json", "db.json"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start json-server");
        let server = JsonServer { child, port, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while server.get("/api/people").is_none() {
            assert!(std::time::Instant::now() < deadline, "json-server did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }

    /// What a GET of `path` answers, as JSON; `None` when nothing answers.
    fn get(&self, path: &str) -> Option<Json> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (_, body) = answer.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// An `Api` that names this server, for `rest_host`.
    fn api(&self) -> Api {
        Api { port: self.port, state: Arc::default() }
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn against_json_server_upserts_create_new_records_and_keep_hand_edited_fields() {
    let server = JsonServer::start(&json!({ "people": [{"id": "1", "full_name": "Ann", "homeroom": "B12"}] }));
    let api = server.api();
    let options = r#", pagination = "none", upsert_method = "put-then-post", put_merges = true"#;
    let host = rest_host(&api, Grants::for_api(&api), EVENT_SOURCE, options, "mode = \"event\"");
    let upsert = |id: &str, name: &str| json!({"op": "upsert", "row": {"id": id, "name": name, "email": null}});
    host.write("data/in/changes.jsonl", &format!("{}\n{}\n", upsert("1", "Annie"), upsert("3001", "Bob")));
    let (ok, report) = host.sync("acme/main", &[]);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "upserted"), 2, "{report}");
    assert_eq!(
        server.get("/api/people/1"),
        Some(json!({"id": "1", "full_name": "Annie", "email": null, "homeroom": "B12"})),
        "the field the event does not carry survives"
    );
    assert_eq!(server.get("/api/people/3001"), Some(json!({"id": "3001", "full_name": "Bob", "email": null})));
}
