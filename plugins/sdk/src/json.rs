//! JSON objects read straight into table cells.
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
