//! The retry queue's rules: when a transiently failed operation is tried
//! again (exponential backoff with jitter, bounded), and how a queued
//! operation is kept in the state store and rebuilt from it.
//!
//! Queued operations are kept as the same JSON that dead letters show
//! (`{"upsert": {"key", "fields"}}` or `{"delete": key}`), so an operator reads
//! one form everywhere and `dlq retry` can move a letter into the queue as is.
//! Rebuilding maps JSON back to values as the SDK does: bytes come back as
//! nested JSON (an array of numbers), the one conversion that loses a type.

use std::time::Duration;

use crate::plugin::types::{Action, Row, Value};
use crate::sync::values::row_to_json;

/// The wait before attempt `attempts + 1`, after `attempts` failures (at least
/// one): `base * 2^(attempts-1)`, capped at `max`, then "equal jitter" — a
/// random point in its upper half — so that keys that failed together do not
/// all come back at the same moment, and no wait is shorter than half.
pub(super) fn backoff(attempts: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exponent).min(max);
    let half = full / 2;
    let spread = half.as_nanos() as u64;
    let jitter = if spread == 0 { 0 } else { random % (spread + 1) };
    half + Duration::from_nanos(jitter)
}

/// A random number for jitter: splitmix64 of the key and the clock. Not for
/// anything that needs real randomness; it only spreads retries out.
pub(super) fn jitter_seed(key: &str, attempts: u32) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut x = super::lanes::fnv1a(key) ^ (nanos as u64) ^ ((attempts as u64) << 48);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// An action as the JSON that dead letters and the retry queue keep.
pub(super) fn operation_json(columns: &[String], action: &Action) -> serde_json::Value {
    match action {
        Action::Delete(key) => serde_json::json!({ "delete": key }),
        Action::Create(row) | Action::Upsert(row) => {
            serde_json::json!({ "upsert": { "key": row.key, "fields": row_to_json(columns, row) } })
        }
        Action::Update(update) => serde_json::json!({
            "update": { "key": update.row.key, "fields": row_to_json(columns, &update.row), "changed": update.changed }
        }),
    }
}

/// Rebuilds an action (and the columns of its row) from its JSON.
pub(super) fn operation_from_json(json: &serde_json::Value) -> Result<(Vec<String>, Action), String> {
    if let Some(key) = json.get("delete") {
        let key = key.as_str().ok_or_else(|| format!("`delete` is not a key in {json}"))?;
        return Ok((Vec::new(), Action::Delete(key.to_string())));
    }
    let upsert = json.get("upsert").ok_or_else(|| format!("neither an upsert nor a delete: {json}"))?;
    let key = upsert.get("key").and_then(|k| k.as_str()).ok_or_else(|| format!("an upsert without a key: {json}"))?;
    let fields =
        upsert.get("fields").and_then(|f| f.as_object()).ok_or_else(|| format!("an upsert without fields: {json}"))?;
    let columns: Vec<String> = fields.keys().cloned().collect();
    let values = fields.values().map(value_from_json).collect();
    Ok((columns, Action::Upsert(Row { key: key.to_string(), values })))
}

fn value_from_json(json: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match json {
        J::Null => Value::Null,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Text(s.clone()),
        nested @ (J::Array(_) | J::Object(_)) => Value::Json(nested.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_stays_in_its_upper_half_and_is_capped() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for (attempts, full_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (8, 10_000), (40, 10_000)] {
            let full = Duration::from_millis(full_ms);
            let shortest = backoff(attempts, base, max, 0);
            let longest = backoff(attempts, base, max, u64::MAX - 1);
            assert_eq!(shortest, full / 2, "attempt {attempts}");
            assert!(longest <= full && longest > full / 2, "attempt {attempts}: {longest:?}");
            let some = backoff(attempts, base, max, jitter_seed("k", attempts));
            assert!(some >= full / 2 && some <= full);
        }
    }

    #[test]
    fn jitter_spreads_keys_apart() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let waits: std::collections::BTreeSet<Duration> =
            (0..50).map(|i| backoff(3, base, max, jitter_seed(&format!("key{i}"), 3))).collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
    }

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

        let (_, delete) = operation_from_json(&operation_json(&[], &Action::Delete("k2".into()))).unwrap();
        assert!(matches!(delete, Action::Delete(k) if k == "k2"));
        assert!(operation_from_json(&serde_json::json!({"upsert": {"fields": {}}})).is_err());
        assert!(operation_from_json(&serde_json::json!(42)).is_err());
    }
}
