//! The JSON forms of values and rows, and JSON objects read straight into
//! table cells.
//!
//! [`value_to_json`] and [`value_from_json`] are how values show as JSON
//! everywhere (reports, dead letters, destinations that keep JSON): nested
//! JSON text is parsed, bytes become an array of numbers.
//!
//! Parsing a JSON line into a `serde_json::Value` allocates a string for every
//! field name and text value, and a data set of a million records read that
//! way spends its time in the allocator. A [`JsonFields`] keeps an object's
//! fields in the order the text has them, names and text borrowed from the
//! text it was parsed from (with `serde_json::from_str`): a string is copied
//! only where an escape had to be decoded. [`crate::TableBuilder::push_fields`]
//! lays such fields out by column.
//!
//! The values come out as [`crate::value_from_json`] makes them.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::ValueRef;
use crate::types::{Row, Value};

/// One JSON value as a cell: integers that fit in 64 bits stay integers, other
/// numbers are floats, arrays and objects are nested JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue<'a> {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    /// Borrowed from the JSON text unless it held an escape.
    Text(Cow<'a, str>),
    /// An array or object, written again as [`crate::value_from_json`] writes
    /// it (compact), so it reads the same whatever the spacing of the text it
    /// came from.
    Json(String),
}

impl<'a, 'v> From<&'a JsonValue<'v>> for ValueRef<'a> {
    fn from(value: &'a JsonValue<'v>) -> ValueRef<'a> {
        match value {
            JsonValue::Null => ValueRef::Null,
            JsonValue::Boolean(b) => ValueRef::Boolean(*b),
            JsonValue::Integer(i) => ValueRef::Integer(*i),
            JsonValue::Float(f) => ValueRef::Float(*f),
            JsonValue::Text(s) => ValueRef::Text(s),
            JsonValue::Json(s) => ValueRef::Json(s),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = JsonValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonValue::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(JsonValue::Boolean(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Self::Value, E> {
                Ok(JsonValue::Integer(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(u).map_or(JsonValue::Float(u as f64), JsonValue::Integer))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
                Ok(JsonValue::Float(f))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(JsonValue::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(JsonValue::Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(JsonValue::Text(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let nested = serde_json::Value::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(JsonValue::Json(nested.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let nested = serde_json::Value::deserialize(MapAccessDeserializer::new(map))?;
                Ok(JsonValue::Json(nested.to_string()))
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// A JSON object's fields in the order the text has them (a name given twice
/// appears twice), without building a map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonFields<'a>(pub Vec<(Cow<'a, str>, JsonValue<'a>)>);

impl<'a> JsonFields<'a> {
    /// The value of field `name`: the last one of that name, as a JSON map
    /// would keep it.
    pub fn get(&self, name: &str) -> Option<&JsonValue<'a>> {
        self.0.iter().rev().find(|(field, _)| field == name).map(|(_, value)| value)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonFields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = JsonFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Name(name), value)) = map.next_entry::<Name, JsonValue>()? {
                    entries.push((name, value));
                }
                Ok(JsonFields(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A field name, borrowed like [`JsonValue::Text`] (serde's own `Cow<str>`
/// always copies).
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// Converts a JSON value into a field value: arrays and objects stay nested JSON
/// text, integers that fit in 64 bits stay integers.
pub fn value_from_json(json: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match json {
        J::Null => Value::Null,
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Text(s),
        nested @ (J::Array(_) | J::Object(_)) => Value::Json(nested.to_string()),
    }
}

/// Converts a field value into JSON. Bytes become an array of numbers; nested
/// JSON text that does not parse is kept as a string rather than lost.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Text(s) => J::String(s.clone()),
        Value::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| J::String(text.clone())),
    }
}

/// A row as a JSON object of its fields, given its batch's column names.
pub fn row_to_json(columns: &[String], row: &Row) -> serde_json::Value {
    let fields = columns.iter().zip(&row.values).map(|(c, v)| (c.clone(), value_to_json(v))).collect();
    serde_json::Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_kind_through_json_where_json_can_tell() {
        for value in [
            Value::Null,
            Value::Boolean(true),
            Value::Integer(-7),
            Value::Float(1.5),
            Value::Text("héllo".into()),
            Value::Json("{\"a\":[1,2]}".into()),
        ] {
            assert_eq!(value_from_json(value_to_json(&value)), value);
        }
        // Bytes show as an array of numbers, which reads back as nested JSON.
        assert_eq!(value_to_json(&Value::Bytes(vec![0, 255])), serde_json::json!([0, 255]));
        // Nested JSON that does not parse is kept as a string, not lost.
        assert_eq!(value_to_json(&Value::Json("{oops".into())), serde_json::json!("{oops"));
        let row = Row { key: "k".into(), values: vec![Value::Integer(1), Value::Null] };
        assert_eq!(row_to_json(&["a".into(), "b".into()], &row), serde_json::json!({"a": 1, "b": null}));
    }

    #[test]
    fn json_fields_borrow_from_the_text_and_keep_its_order() {
        let text = r#"{"b": "plain", "a": 2, "b": "esc\"aped", "n": {"x": [1, 2]}}"#;
        let fields: JsonFields<'_> = serde_json::from_str(text).unwrap();
        let names: Vec<&str> = fields.0.iter().map(|(name, _)| name.as_ref()).collect();
        assert_eq!(names, ["b", "a", "b", "n"]);
        assert!(matches!(&fields.0[0].1, JsonValue::Text(Cow::Borrowed("plain"))));
        // The last of a name counts, as in a JSON map.
        assert_eq!(fields.get("b"), Some(&JsonValue::Text(Cow::Owned("esc\"aped".into()))));
        assert_eq!(fields.get("n"), Some(&JsonValue::Json(r#"{"x":[1,2]}"#.into())));
    }
}
