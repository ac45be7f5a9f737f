//! The paged JSON API docs/connectors.md's HTTP sources read, served on
//! 127.0.0.1 for as long as the test process lives: `GET /api/people?limit=N
//! [&after=CURSOR]` answers `{"people": [...], "next": CURSOR or null}`, in
//! id order, and 400 for a cursor it never gave.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The API's people: `{"id": i, "name": "person i", "email": …}` for `1..=count`.
#[derive(Clone)]
pub struct PeopleApi {
    pub port: u16,
}

#[derive(serde::Deserialize)]
struct Paging {
    limit: Option<usize>,
    after: Option<String>,
}

fn person(id: u64) -> serde_json::Value {
    json!({"id": id, "name": format!("person {id}"), "email": format!("p{id}@example.com")})
}

async fn people(State(count): State<u64>, Query(paging): Query<Paging>) -> Response {
    let limit = paging.limit.unwrap_or(100).max(1) as u64;
    // Cursors look like `c7`: after the person with id 7.
    let start = match paging.after.as_deref().map(|c| c.strip_prefix('c').and_then(|id| id.parse::<u64>().ok())) {
        None => 1,
        Some(Some(id)) if id <= count => id + 1,
        Some(_) => return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unknown cursor"}))).into_response(),
    };
    let end = (start + limit - 1).min(count);
    let page: Vec<serde_json::Value> = (start..=end).map(person).collect();
    let next = (end < count).then(|| format!("c{end}"));
    axum::Json(json!({"people": page, "next": next})).into_response()
}

impl PeopleApi {
    /// Serves `count` people on a free port.
    pub fn start(count: u64) -> PeopleApi {
        let app = axum::Router::new().route("/api/people", axum::routing::get(people)).with_state(count);
        PeopleApi { port: super::serve(app) }
    }

    /// The guide's commands name the API `127.0.0.1:8080`; this is what to
    /// put in their place.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
