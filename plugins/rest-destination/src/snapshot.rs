//! Reading the collection page by page for diff syncs.
//!
//! The host's page token carries the API's own position: the cursor the API
//! returned (cursor paging) or the next page number (page paging), so paging
//! stays stateless on this side as the WIT asks.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use synchost_plugin_sdk::http::Method;
use synchost_plugin_sdk::{self as sdk, Error, Page, Table, TableBuilder, Value};

use crate::client::{Status, describe};
use crate::config::{Api, Pagination, encode};

/// One page of the collection, starting at `token` (`None`: the first).
pub(crate) fn page(api: &Api, token: Option<String>) -> Result<Page, Error> {
    let size = api.page_size.to_string();
    // The page number asked for, with page paging.
    let (query, page_number): (Vec<(&str, String)>, Option<u64>) = match api.pagination {
        Pagination::Cursor => {
            let mut query = vec![(api.page_size_param.as_str(), size)];
            if let Some(cursor) = &token {
                query.push((api.cursor_param.as_str(), cursor.clone()));
            }
            (query, None)
        }
        Pagination::Page => {
            let number = match &token {
                Some(token) => token
                    .parse::<u64>()
                    .map_err(|_| Error::Config(format!("page token `{token}` is not a page number")))?,
                None => api.first_page,
            };
            (vec![(api.page_param.as_str(), number.to_string()), (api.page_size_param.as_str(), size)], Some(number))
        }
        Pagination::None => (Vec::new(), None),
    };
    let url = if query.is_empty() {
        api.collection_url.clone()
    } else {
        let query: Vec<String> =
            query.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect();
        format!("{}?{}", api.collection_url, query.join("&"))
    };

    let response = api.send(Method::Get, &url, None, None)?;
    match Status::of(response.status) {
        Status::Success => {}
        Status::Retry => return Err(Error::Transient(describe(Method::Get, &url, &response))),
        Status::Unauthorized => {
            return Err(Error::Config(format!(
                "{}; {}",
                describe(Method::Get, &url, &response),
                api.credentials_hint()
            )));
        }
        // A listing that is not there or refused means the URL or the paging
        // keys are wrong for this API, whatever the record.
        Status::Gone | Status::Redirect | Status::Refused => {
            return Err(Error::Config(format!(
                "{}; check base_url, collection and the paging keys",
                describe(Method::Get, &url, &response)
            )));
        }
    }

    let not_a_list = |why: String| Error::Config(format!("GET {url}: {why}"));
    let json: Json =
        serde_json::from_slice(&response.body).map_err(|e| not_a_list(format!("the response is not JSON ({e})")))?;
    let (items, next) = match json {
        // A bare array is the whole page: nothing names a next cursor.
        Json::Array(items) => (items, None),
        Json::Object(mut object) => {
            let items = match object.remove(&api.items_field) {
                Some(Json::Array(items)) => items,
                Some(_) => return Err(not_a_list(format!("`{}` (items_field) is not a list", api.items_field))),
                None => {
                    return Err(not_a_list(format!("the response has no `{}` list (items_field)", api.items_field)));
                }
            };
            let next = match object.remove(&api.next_field) {
                None | Some(Json::Null) => None,
                Some(Json::String(s)) if s.is_empty() => None,
                Some(Json::String(s)) => Some(s),
                Some(Json::Number(n)) => Some(n.to_string()),
                Some(other) => {
                    return Err(not_a_list(format!(
                        "`{}` (next_field) is neither text nor null: {other}",
                        api.next_field
                    )));
                }
            };
            (items, next)
        }
        other => return Err(not_a_list(format!("expected a list or an object, got {}", kind(&other)))),
    };

    let next = match (api.pagination, page_number) {
        (Pagination::Cursor, _) => {
            // An API that hands back the cursor it was given would page forever.
            if next.is_some() && next == token {
                return Err(not_a_list(format!("`{}` repeats the cursor it was asked for", api.next_field)));
            }
            next
        }
        // Only an empty page ends: a short one may be the API capping
        // `per_page` below what was asked, and stopping there would make
        // the rest of the collection look deleted.
        (Pagination::Page, Some(number)) if !items.is_empty() => Some((number + 1).to_string()),
        (Pagination::Page | Pagination::None, _) => None,
    };

    let rows = table(api, items).map_err(not_a_list)?;
    sdk::log::debug(&format!("GET {url}: {} records, next page: {}", rows.len(), next.is_some()));
    Ok(Page { rows, next })
}

/// Lays the API's items out as a table under the synchost field names; the
/// columns are every field any item has, in name order (an item without one
/// gets null).
fn table(api: &Api, items: Vec<Json>) -> Result<Table, String> {
    let mut records = Vec::with_capacity(items.len());
    let mut column_set = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let Json::Object(item) = item else {
            return Err(format!("item {index} is {}, not an object", kind(&item)));
        };
        let key = match item.get(&api.key_field) {
            Some(Json::String(key)) => key.clone(),
            Some(Json::Number(key)) => key.to_string(),
            Some(other) => {
                return Err(format!(
                    "item {index}: key field `{}` is {}, not text or a number",
                    api.key_field,
                    kind(other)
                ));
            }
            None => return Err(format!("item {index} has no key field `{}` (key_field)", api.key_field)),
        };
        let fields: Vec<(String, Value)> = item
            .into_iter()
            .filter_map(|(name, value)| {
                api.field_name(&name).map(|ours| (ours.to_string(), sdk::value_from_json(value)))
            })
            .collect();
        for (name, _) in &fields {
            column_set.insert(name.clone(), ());
        }
        records.push((key, fields));
    }
    // Every column is known up front, so placing each item's fields by name
    // adds none (and of two fields renamed alike, the last counts).
    let mut table = TableBuilder::with_capacity(column_set.into_keys().collect(), records.len());
    for (key, fields) in &records {
        table.push_fields(key, fields);
    }
    Ok(table.finish())
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "text",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}
