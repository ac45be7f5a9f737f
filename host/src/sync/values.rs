//! Field values on the host side: comparing them and showing them as JSON.

use crate::plugin::types::{Row, Value};

/// Whether two values are the same for a sync. Floats compare by bits as well,
/// so that NaN equals itself and a row holding one is not updated forever;
/// bytes and nested JSON compare by the JSON they show as, since destinations
/// that keep JSON give bytes back as an array.
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x == y || x.to_bits() == y.to_bits(),
        (Value::Bytes(_), Value::Json(_)) | (Value::Json(_), Value::Bytes(_)) | (Value::Json(_), Value::Json(_)) => {
            value_to_json(a) == value_to_json(b)
        }
        _ => a == b,
    }
}

/// A value as JSON: nested JSON text is parsed, bytes become an array.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Text(s) => J::String(s.clone()),
        Value::Bytes(bytes) => J::Array(bytes.iter().map(|b| J::from(*b)).collect()),
        Value::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| J::String(text.clone())),
    }
}

/// A row as a JSON object of its fields.
pub fn row_to_json(columns: &[String], row: &Row) -> serde_json::Value {
    let fields = columns.iter().zip(&row.values).map(|(c, v)| (c.clone(), value_to_json(v))).collect();
    serde_json::Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_equals_itself_and_bytes_equal_their_json() {
        assert!(values_equal(&Value::Float(f64::NAN), &Value::Float(f64::NAN)));
        assert!(values_equal(&Value::Bytes(vec![1, 2]), &Value::Json("[1,2]".into())));
        assert!(values_equal(&Value::Json("{\"a\": 1}".into()), &Value::Json("{\"a\":1}".into())));
        assert!(!values_equal(&Value::Text("1".into()), &Value::Integer(1)));
        assert!(!values_equal(&Value::Null, &Value::Text(String::new())));
    }
}
