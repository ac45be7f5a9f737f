//! Applying a batch of operations, one request per operation, in order.
//!
//! | action | request |
//! |---|---|
//! | create | `POST {collection}` with the row (and its key) |
//! | update | `PATCH {collection}/{key}` with the changed fields, or `PUT` with the row (`update_method`) |
//! | upsert | `PUT {collection}/{key}` with the row (and its key); with `upsert_method`, a POST when the PUT or a PATCH answers 404 |
//! | delete | `DELETE {collection}/{key}`; 404 and 410 count as done |
//!
//! With `put_merges`, every PUT is preceded by a GET of the record, and the row
//! is merged into what the API holds, so fields the sync does not write
//! survive an API whose PUT replaces the whole record.
//!
//! Each request carries the operation's idempotency key as `Idempotency-Key`,
//! so an API that honours it applies a redelivered operation once.

use serde_json::{Map, Value as Json};
use synchost_plugin_sdk::http::Method;
use synchost_plugin_sdk::{self as sdk, Action, Error, Operation, OperationBatch, Row};

use crate::client::{Status, describe};
use crate::config::{Api, UpdateMethod, UpsertMethod};

/// Applies `batch`: one outcome per operation, or an error for the whole batch
/// when the API refuses the credentials or the host refuses the destination
/// (every other request would fail the same way).
pub(crate) fn apply(api: &Api, batch: OperationBatch) -> Result<Vec<Result<(), Error>>, Error> {
    let OperationBatch { columns, operations } = batch;
    let mut outcomes = Vec::with_capacity(operations.len());
    // Once the connection fails or the API asks to slow down, the rest of the
    // batch is not sent: each request would wait out the same timeout or add
    // to the load, and the host retries them all later anyway.
    let mut halted: Option<String> = None;
    for operation in operations {
        if let Some(reason) = &halted {
            outcomes.push(Err(Error::Transient(format!("not sent: {reason}"))));
            continue;
        }
        outcomes.push(match apply_one(api, &columns, operation) {
            Outcome::Applied => Ok(()),
            Outcome::Failed(error) => Err(error),
            Outcome::Halt(reason) => {
                halted = Some(reason.clone());
                Err(Error::Transient(reason))
            }
            Outcome::FailBatch(error) => return Err(error),
        });
    }
    Ok(outcomes)
}

/// What became of one operation.
enum Outcome {
    Applied,
    /// This operation failed (transient or rejected); go on with the next.
    Failed(Error),
    /// This operation failed transiently, and so would the rest for now.
    Halt(String),
    /// Nothing in the batch can apply until an operator acts.
    FailBatch(Error),
}

/// Sends one operation's requests and judges the answer.
fn apply_one(api: &Api, columns: &[String], operation: Operation) -> Outcome {
    let Operation { idempotency_key: key, action } = operation;
    let full = |row: &Row| body(api, columns, row, None, true);
    match &action {
        Action::Create(row) => send(api, Method::Post, &api.collection_url, &key, Some(full(row)), false),
        Action::Update(update) => match api.update_method {
            UpdateMethod::Patch => {
                let changed = body(api, columns, &update.row, Some(&update.changed), false);
                send(api, Method::Patch, &api.record_url(&update.row.key), &key, Some(changed), false)
            }
            UpdateMethod::Put => put(api, &update.row.key, &key, full(&update.row)).unwrap_or_else(|missing| missing),
        },
        Action::Upsert(row) => upsert(api, row, &key, full(row)),
        Action::Delete(record) => send(api, Method::Delete, &api.record_url(record), &key, None, true),
    }
}

/// An upsert, as `upsert_method` says: a record the API does not have yet is
/// created with a POST where its PUT or PATCH answers 404.
fn upsert(api: &Api, row: &Row, key: &str, record: Map<String, Json>) -> Outcome {
    let url = api.record_url(&row.key);
    let missing = match api.upsert_method {
        UpsertMethod::Put => return put(api, &row.key, key, record).unwrap_or_else(|missing| missing),
        UpsertMethod::PutThenPost => match put(api, &row.key, key, record.clone()) {
            Ok(outcome) => return outcome,
            Err(missing) => missing,
        },
        UpsertMethod::PatchThenPost => match request(api, Method::Patch, &url, key, Some(&record)) {
            Ok(response) if response.status == 404 => judge(api, Method::Patch, &url, &response, false),
            Ok(response) => return judge(api, Method::Patch, &url, &response, false),
            Err(outcome) => return outcome,
        },
    };
    match missing {
        Outcome::Failed(_) => send(api, Method::Post, &api.collection_url, key, Some(record), false),
        other => other,
    }
}

/// A PUT of `record`, merged first into what the API holds when `put_merges`
/// asks. `Err` with its outcome when the API has no such record (404), for
/// an upsert to create it.
fn put(api: &Api, record_key: &str, key: &str, record: Map<String, Json>) -> Result<Outcome, Outcome> {
    let url = api.record_url(record_key);
    let record = if api.put_merges {
        let response = match request(api, Method::Get, &url, key, None) {
            Ok(response) => response,
            Err(outcome) => return Ok(outcome),
        };
        if response.status == 404 {
            return Err(judge(api, Method::Get, &url, &response, false));
        }
        if !(200..300).contains(&response.status) {
            return Ok(judge(api, Method::Get, &url, &response, false));
        }
        match serde_json::from_slice::<Json>(&response.body) {
            Ok(Json::Object(mut held)) => {
                held.extend(record);
                held
            }
            _ => {
                return Ok(Outcome::Failed(Error::Rejected(format!(
                    "GET {url}: the record is not a JSON object, so the row cannot be merged into it"
                ))));
            }
        }
    } else {
        record
    };
    let response = match request(api, Method::Put, &url, key, Some(&record)) {
        Ok(response) => response,
        Err(outcome) => return Ok(outcome),
    };
    let outcome = judge(api, Method::Put, &url, &response, false);
    if response.status == 404 { Err(outcome) } else { Ok(outcome) }
}

/// Sends one request and judges its answer.
fn send(api: &Api, method: Method, url: &str, key: &str, body: Option<Map<String, Json>>, delete: bool) -> Outcome {
    match request(api, method, url, key, body.as_ref()) {
        Ok(response) => judge(api, method, url, &response, delete),
        Err(outcome) => outcome,
    }
}

/// Sends one request; a request that got no answer is already its outcome.
fn request(
    api: &Api,
    method: Method,
    url: &str,
    key: &str,
    body: Option<&Map<String, Json>>,
) -> Result<sdk::http::Response, Outcome> {
    let body = body.map(|b| Json::Object(b.clone()).to_string());
    api.send(method, url, Some(key), body.as_deref().map(str::as_bytes)).map_err(|e| match Error::from(e) {
        config @ Error::Config(_) => Outcome::FailBatch(config),
        Error::Transient(reason) => Outcome::Halt(reason),
        rejected => Outcome::Failed(rejected),
    })
}

/// What an answer means for the operation.
fn judge(api: &Api, method: Method, url: &str, response: &sdk::http::Response, delete: bool) -> Outcome {
    match Status::of(response.status) {
        Status::Success => Outcome::Applied,
        // Already gone is what a delete wants: deleting twice is not an error.
        Status::Gone if delete => Outcome::Applied,
        Status::Unauthorized => Outcome::FailBatch(Error::Config(format!(
            "{}; {}",
            describe(method, url, response),
            api.credentials_hint()
        ))),
        Status::Redirect => Outcome::FailBatch(Error::Config(format!(
            "{}; redirects are not followed, set base_url to the final address",
            describe(method, url, response)
        ))),
        Status::Retry if response.status == 429 => Outcome::Halt(format!(
            "{}{}",
            describe(method, url, response),
            response.header("retry-after").map(|after| format!(" (retry after {after})")).unwrap_or_default()
        )),
        Status::Retry => Outcome::Failed(Error::Transient(describe(method, url, response))),
        Status::Gone | Status::Refused => Outcome::Failed(Error::Rejected(describe(method, url, response))),
    }
}

/// The JSON body for `row` under the API's field names: every column, or only
/// `changed` ones; `with_key` adds the key under `key_field` unless a column
/// already fills that field (the API needs it to create a record from a POST).
fn body(api: &Api, columns: &[String], row: &Row, changed: Option<&[String]>, with_key: bool) -> Map<String, Json> {
    let mut object = Map::new();
    for (column, value) in columns.iter().zip(&row.values) {
        if changed.is_some_and(|changed| !changed.contains(column)) {
            continue;
        }
        if let Some(name) = api.api_name(column) {
            object.insert(name.to_string(), sdk::value_to_json(value));
        }
    }
    if with_key && !object.contains_key(&api.key_field) {
        object.insert(api.key_field.clone(), Json::String(row.key.clone()));
    }
    object
}
