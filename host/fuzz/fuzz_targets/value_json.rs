//! JSON text as a source or destination reads it: a record's fields laid out
//! as table cells, and values through the run archive's encoding. What the
//! builders lay out always passes the host's table check; every value comes
//! back from the archive exactly (floats to the bit) and hashes as it went in;
//! the JSON forms of values are stable once made.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synchost::sync::values::{decode_value, encode_value, value_hash};
use synchost_model::{JsonFields, TableBuilder, Value, ValueRef, value_from_json, value_to_json};

/// Values alike, floats compared by their bits (NaN is itself, 0.0 is not -0.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn round_trips_through_the_archive(value: ValueRef<'_>) {
    let line = encode_value(value).to_string();
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("the archive's encoding is JSON");
    let decoded = decode_value(&parsed).unwrap_or_else(|e| panic!("`{line}` does not decode: {e}"));
    let original = value.to_value();
    assert!(same(&decoded, &original), "{original:?} came back from the archive as {decoded:?}");
    assert_eq!(value_hash((&decoded).into()), value_hash(value), "{original:?} hashes differently after the archive");
}

fuzz_target!(|data: &[u8]| {
    // A record's fields, borrowed from the text, laid out by column.
    if let Ok(fields) = serde_json::from_slice::<JsonFields>(data) {
        let mut table = TableBuilder::new(Vec::new());
        table.push_fields("k", &fields.0);
        let table = table.finish();
        assert_eq!(table.check(), Ok(()), "a table the builder made passes the host's check");
        for column in &table.values {
            round_trips_through_the_archive(column.get(0));
        }
    }
    // Any JSON value as a field value, and back.
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        let value = value_from_json(json);
        round_trips_through_the_archive((&value).into());
        let again = value_from_json(value_to_json(&value));
        assert!(same(&again, &value), "{value:?} became {again:?} through its JSON form");
    }
});
