//! Applying a batch of operations, one request per operation, in order.
//!
//! | action | request |
//! |---|---|
//! | create | `POST {collection}` with the row (and its key) |
//! | update | `PATCH {collection}/{key}` with the changed fields, or `PUT` with the row (`update_method`) |
//! | upsert | `PUT {collection}/{key}` with the row (and its key) |
//! | delete | `DELETE {collection}/{key}`; 404 and 410 count as done |
//!
//! Each request carries the operation's idempotency key as `Idempotency-Key`,
//! so an API that honours it applies a redelivered operation once.

use serde_json::{Map, Value as Json};
use synchost_plugin_sdk::http::Method;
use synchost_plugin_sdk::{self as sdk, Action, Error, Operation, OperationBatch, Row};

use crate::client::{Status, describe};
use crate::config::{Api, UpdateMethod};

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

/// Sends one operation's request and judges the answer.
fn apply_one(api: &Api, columns: &[String], operation: Operation) -> Outcome {
    let Operation { idempotency_key, action } = operation;
    let (method, url, body) = match &action {
        Action::Create(row) => (Method::Post, api.collection_url.clone(), Some(body(api, columns, row, None, true))),
        Action::Update(update) => match api.update_method {
            UpdateMethod::Patch => (
                Method::Patch,
                api.record_url(&update.row.key),
                Some(body(api, columns, &update.row, Some(&update.changed), false)),
            ),
            UpdateMethod::Put => {
                (Method::Put, api.record_url(&update.row.key), Some(body(api, columns, &update.row, None, true)))
            }
        },
        Action::Upsert(row) => (Method::Put, api.record_url(&row.key), Some(body(api, columns, row, None, true))),
        Action::Delete(key) => (Method::Delete, api.record_url(key), None),
    };
    let body = body.map(|b| Json::Object(b).to_string());

    let response = match api.send(method, &url, Some(&idempotency_key), body.as_deref().map(str::as_bytes)) {
        Ok(response) => response,
        Err(e) => {
            return match Error::from(e) {
                config @ Error::Config(_) => Outcome::FailBatch(config),
                Error::Transient(reason) => Outcome::Halt(reason),
                rejected => Outcome::Failed(rejected),
            };
        }
    };
    match Status::of(response.status) {
        Status::Success => Outcome::Applied,
        // Already gone is what a delete wants: deleting twice is not an error.
        Status::Gone if matches!(action, Action::Delete(_)) => Outcome::Applied,
        Status::Unauthorized => Outcome::FailBatch(Error::Config(format!(
            "{}; {}",
            describe(method, &url, &response),
            api.credentials_hint()
        ))),
        Status::Redirect => Outcome::FailBatch(Error::Config(format!(
            "{}; redirects are not followed, set base_url to the final address",
            describe(method, &url, &response)
        ))),
        Status::Retry if response.status == 429 => Outcome::Halt(format!(
            "{}{}",
            describe(method, &url, &response),
            response.header("retry-after").map(|after| format!(" (retry after {after})")).unwrap_or_default()
        )),
        Status::Retry => Outcome::Failed(Error::Transient(describe(method, &url, &response))),
        Status::Gone | Status::Refused => Outcome::Failed(Error::Rejected(describe(method, &url, &response))),
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
