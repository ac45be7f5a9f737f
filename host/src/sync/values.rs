//! Field values on the host side: hashing them for diffs, showing them as
//! JSON, and encoding them losslessly for the run archive.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use synchost_model::{Column, Kind, Value, ValueRef, value_to_json};

/// A 64-bit hash of a value that is stable across processes and versions
/// (xxh3), so hashes can be compared with ones recorded earlier.
///
/// Two values hash alike when a sync should treat them as the same: floats by
/// bits (so NaN equals itself and a row holding one is not updated forever),
/// bytes and nested JSON by the JSON they show as (destinations that keep JSON
/// give bytes back as an array, and key order or spacing in JSON text is
/// not a change).
pub fn value_hash(value: ValueRef<'_>) -> u64 {
    // The variant goes in as the seed: one-shot hashing, no streaming state.
    match value {
        ValueRef::Null => xxh3_64_with_seed(&[], 0),
        ValueRef::Boolean(b) => xxh3_64_with_seed(&[b as u8], 1),
        ValueRef::Integer(i) => xxh3_64_with_seed(&i.to_le_bytes(), 2),
        ValueRef::Float(f) => xxh3_64_with_seed(&f.to_bits().to_le_bytes(), 3),
        ValueRef::Text(s) => xxh3_64_with_seed(s.as_bytes(), TEXT_SEED),
        ValueRef::Bytes(_) | ValueRef::Json(_) => {
            xxh3_64_with_seed(value_to_json(&value.to_value()).to_string().as_bytes(), 5)
        }
    }
}

/// The seed text values hash with.
const TEXT_SEED: u64 = 4;

/// The [`value_hash`] of row `row`'s value in `column`: straight from the
/// bytes for text, the common case.
pub fn cell_hash(column: &Column, row: usize) -> u64 {
    match column.kinds[row] {
        Kind::Text => xxh3_64_with_seed(column.bytes(row), TEXT_SEED),
        _ => value_hash(column.get(row)),
    }
}

/// The archive's lossless encoding of a value: plain JSON where that is
/// unambiguous (null, booleans, integers, text), a one-key object otherwise
/// (`{"f": 1.5}`, `{"f": "NaN"}`, `{"b": "00ff"}`, `{"j": "[1,2]"}`).
pub fn encode_value(value: ValueRef<'_>) -> serde_json::Value {
    serde_json::to_value(Encoded(value)).expect("an encoded value is JSON")
}

/// A value that serialises as [`encode_value`] encodes it, written straight
/// into the output: the run archive writes every value a run reads, and a
/// `serde_json::Value` per value would allocate for each.
pub struct Encoded<'a>(pub ValueRef<'a>);

impl serde::Serialize for Encoded<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        fn tagged<S: serde::Serializer>(
            out: S,
            tag: &str,
            value: &(impl serde::Serialize + ?Sized),
        ) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = out.serialize_map(Some(1))?;
            map.serialize_entry(tag, value)?;
            map.end()
        }
        match self.0 {
            ValueRef::Null => out.serialize_unit(),
            ValueRef::Boolean(b) => out.serialize_bool(b),
            ValueRef::Integer(i) => out.serialize_i64(i),
            // JSON has no NaN or infinities: those are written as text.
            ValueRef::Float(f) if f.is_finite() => tagged(out, "f", &f),
            ValueRef::Float(f) => tagged(out, "f", &f.to_string()),
            ValueRef::Text(s) => out.serialize_str(s),
            ValueRef::Bytes(b) => tagged(out, "b", &hex::encode(b)),
            ValueRef::Json(text) => tagged(out, "j", text),
        }
    }
}

/// The inverse of [`encode_value`].
pub fn decode_value(json: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    Ok(match json {
        J::Null => Value::Null,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => Value::Integer(n.as_i64().ok_or_else(|| format!("`{n}` is not a 64-bit integer"))?),
        J::String(s) => Value::Text(s.clone()),
        J::Object(map) if map.len() == 1 => match map.iter().next().expect("one entry") {
            (tag, J::Number(n)) if tag == "f" => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            (tag, J::String(s)) if tag == "f" => Value::Float(s.parse().map_err(|_| format!("`{s}` is not a float"))?),
            (tag, J::String(s)) if tag == "b" => Value::Bytes(hex::decode(s).map_err(|e| e.to_string())?),
            (tag, J::String(s)) if tag == "j" => Value::Json(s.clone()),
            _ => return Err(format!("`{json}` is not an encoded value")),
        },
        _ => return Err(format!("`{json}` is not an encoded value")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_treat_equal_things_alike_and_different_things_apart() {
        let same = |a: Value, b: Value| value_hash((&a).into()) == value_hash((&b).into());
        assert!(same(Value::Float(f64::NAN), Value::Float(f64::NAN)));
        assert!(same(Value::Bytes(vec![1, 2]), Value::Json("[1,2]".into())));
        assert!(same(Value::Json("{\"a\": 1, \"b\": 2}".into()), Value::Json("{\"b\":2,\"a\":1}".into())));
        assert!(!same(Value::Text("1".into()), Value::Integer(1)));
        assert!(!same(Value::Null, Value::Text(String::new())));
        assert!(!same(Value::Text("[1,2]".into()), Value::Json("[1,2]".into())));
        assert!(!same(Value::Float(0.0), Value::Float(-0.0)));
    }

    #[test]
    fn cells_hash_as_their_values_do() {
        use synchost_model::{Row, Table};
        let values = [
            Value::Null,
            Value::Boolean(false),
            Value::Integer(-3),
            Value::Float(2.5),
            Value::Text("héllo".into()),
            Value::Bytes(vec![1, 2]),
            Value::Json("{\"b\":2, \"a\":1}".into()),
        ];
        let rows: Vec<Row> = values.iter().map(|v| Row { key: "k".into(), values: vec![v.clone()] }).collect();
        let table = Table::from_rows(vec!["c".into()], &rows);
        for (row, value) in values.iter().enumerate() {
            assert_eq!(cell_hash(&table.values[0], row), value_hash(value.into()), "{value:?}");
        }
    }

    #[test]
    fn the_archive_encoding_round_trips_every_kind_of_value() {
        let values = [
            Value::Null,
            Value::Boolean(true),
            Value::Integer(i64::MIN),
            Value::Float(1.5),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Text("{\"j\": \"x\"}".into()),
            Value::Bytes(vec![0, 255]),
            Value::Json("[1, 2]".into()),
        ];
        for value in values {
            let decoded = decode_value(&encode_value((&value).into())).unwrap();
            assert_eq!(value_hash((&decoded).into()), value_hash((&value).into()), "{value:?} became {decoded:?}");
            assert_eq!(std::mem::discriminant(&decoded), std::mem::discriminant(&value));
        }
    }

    #[test]
    fn the_archive_encoding_is_the_one_earlier_archives_were_written_in() {
        let cases = [
            (Value::Null, "null"),
            (Value::Boolean(false), "false"),
            (Value::Integer(-7), "-7"),
            (Value::Float(1.5), r#"{"f":1.5}"#),
            (Value::Float(2.0), r#"{"f":2.0}"#),
            (Value::Float(f64::NAN), r#"{"f":"NaN"}"#),
            (Value::Float(f64::INFINITY), r#"{"f":"inf"}"#),
            (Value::Text("a\"b".into()), r#""a\"b""#),
            (Value::Bytes(vec![0, 255]), r#"{"b":"00ff"}"#),
            (Value::Json("[1, 2]".into()), r#"{"j":"[1, 2]"}"#),
        ];
        for (value, written) in cases {
            assert_eq!(serde_json::to_string(&Encoded((&value).into())).unwrap(), written, "{value:?}");
        }
    }
}
