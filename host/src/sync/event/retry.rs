//! How a queued operation is kept in the retry queue of the state store and
//! rebuilt from it. (When it is tried again is the retry policy's, in
//! [`crate::sync::apply`].)
//!
//! Queued operations are kept as the same JSON that dead letters show
//! (`{"upsert": {"key", "fields"}}`, `{"delete": key}`; `create` and `update`
//! alike), so an operator reads one form everywhere and `dlq retry` can move a
//! letter into the queue as is. The plain JSON of a field does not always tell
//! its value back (bytes show as an array of numbers, `Json("5")` as `5`, a
//! NaN as `null`): such fields are also kept exactly, in the run archive's
//! encoding, under `"exact"`, so a retried operation is the one that failed.

use serde_json::{Map, Value as Json, json};
use synchost_model::{Action, Row, RowUpdate, Value};
use synchost_model::{row_to_json, value_from_json, value_to_json};

use crate::sync::values::{decode_value, encode_value};

/// An action as the JSON that dead letters and the retry queue keep.
pub(super) fn operation_json(columns: &[String], action: &Action) -> Json {
    let Some(row) = action.row() else { return json!({ (action.name()): action.key() }) };
    let mut body = json!({ "key": row.key, "fields": row_to_json(columns, row) });
    if let Action::Update(update) = action {
        body["changed"] = json!(update.changed);
    }
    // The fields whose plain JSON reads back as another value.
    let exact: Map<String, Json> = columns
        .iter()
        .zip(&row.values)
        .filter(|(_, value)| value_from_json(value_to_json(value)) != **value || is_nan(value))
        .map(|(column, value)| (column.clone(), encode_value(value.into())))
        .collect();
    if !exact.is_empty() {
        body["exact"] = Json::Object(exact);
    }
    json!({ (action.name()): body })
}

/// NaN is not equal to itself, so the comparison above cannot see that a
/// NaN's `null` reads back as a null.
fn is_nan(value: &Value) -> bool {
    matches!(value, Value::Float(f) if f.is_nan())
}

/// Rebuilds an action (and the columns of its row) from its JSON.
pub(crate) fn operation_from_json(json: &Json) -> Result<(Vec<String>, Action), String> {
    if let Some(key) = json.get("delete") {
        let key = key.as_str().ok_or_else(|| format!("`delete` is not a key in {json}"))?;
        return Ok((Vec::new(), Action::Delete(key.to_string())));
    }
    let (name, body) = ["upsert", "create", "update"]
        .iter()
        .find_map(|name| json.get(*name).map(|body| (*name, body)))
        .ok_or_else(|| format!("neither an upsert, a create, an update nor a delete: {json}"))?;
    let key = body.get("key").and_then(|k| k.as_str()).ok_or_else(|| format!("{name} without a key: {json}"))?;
    let fields =
        body.get("fields").and_then(|f| f.as_object()).ok_or_else(|| format!("{name} without fields: {json}"))?;
    let exact = body.get("exact").and_then(|e| e.as_object());
    let mut columns = Vec::with_capacity(fields.len());
    let mut values = Vec::with_capacity(fields.len());
    for (column, shown) in fields {
        let value = match exact.and_then(|exact| exact.get(column)) {
            Some(encoded) => decode_value(encoded).map_err(|e| format!("field `{column}`: {e}"))?,
            None => value_from_json(shown.clone()),
        };
        columns.push(column.clone());
        values.push(value);
    }
    let row = Row { key: key.to_string(), values };
    let action = match name {
        "create" => Action::Create(row),
        "update" => {
            let changed = body.get("changed").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default();
            Action::Update(RowUpdate { row, changed })
        }
        _ => Action::Upsert(row),
    };
    Ok((columns, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchost_model::Value;

    #[test]
    fn an_operation_survives_its_json_form() {
        let columns = vec!["id".to_string(), "n".to_string(), "x".to_string(), "tags".to_string()];
        let row = Row {
            key: "k1".into(),
            values: vec![Value::Text("k1".into()), Value::Integer(7), Value::Float(1.5), Value::Json("[1,2]".into())],
        };
        let json = operation_json(&columns, &Action::Upsert(row));
        let (back_columns, action) = operation_from_json(&json).unwrap();
        assert_eq!(operation_json(&back_columns, &action), json);
        let Action::Upsert(back) = action else { panic!("not an upsert") };
        assert_eq!(back.key, "k1");
        let n = back_columns.iter().position(|c| c == "n").unwrap();
        assert_eq!(back.values[n], Value::Integer(7));

        // Values whose plain JSON reads back as something else come back exactly.
        let odd = vec![
            Value::Json("5".into()),
            Value::Bytes(vec![0, 255]),
            Value::Float(f64::NAN),
            Value::Json("null".into()),
        ];
        let odd_columns: Vec<String> = (0..odd.len()).map(|i| format!("c{i}")).collect();
        let create = Action::Create(Row { key: "k3".into(), values: odd.clone() });
        let json = operation_json(&odd_columns, &create);
        assert_eq!(json["create"]["fields"]["c0"], serde_json::json!(5), "operators still read plain JSON: {json}");
        let (back_columns, back) = operation_from_json(&json).unwrap();
        assert_eq!(back_columns, odd_columns);
        let Action::Create(back) = back else { panic!("a create came back as {back:?}") };
        assert_eq!(back.values[0], odd[0]);
        assert_eq!(back.values[1], odd[1]);
        assert!(matches!(back.values[2], Value::Float(f) if f.is_nan()));
        assert_eq!(back.values[3], odd[3]);

        let (_, delete) = operation_from_json(&operation_json(&[], &Action::Delete("k2".into()))).unwrap();
        assert!(matches!(delete, Action::Delete(k) if k == "k2"));
        assert!(operation_from_json(&serde_json::json!({"upsert": {"fields": {}}})).is_err());
        assert!(operation_from_json(&serde_json::json!(42)).is_err());
    }
}
