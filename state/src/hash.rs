//! Canonical content hashing of JSON values (sha256 over a key-sorted encoding),
//! used to tell whether what would be written equals what was last written.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of a canonical JSON encoding of `value`.
///
/// Object keys are sorted recursively and no whitespace is emitted, so the result is
/// independent of key insertion order and of serde_json's `preserve_order` feature,
/// and is stable across runs and builds (it may be persisted and compared later).
pub fn content_hash(value: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Appends the canonical encoding of `value` to `out`.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            out.push_str(&value.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":3}],"x":null}}"#).expect("valid json");
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"p":3,"q":2}]},"b":1}"#).expect("valid json");
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn different_values_hash_differently() {
        let cases = [
            (json!({"a": 1}), json!({"a": 2})),
            (json!({"a": 1}), json!({"a": "1"})),
            (json!({"a": 1}), json!({"b": 1})),
            (json!([1, 2]), json!([2, 1])),
            (json!({"a": null}), json!({})),
            (json!("a,b"), json!(["a", "b"])),
            (json!({"a": {"b": 1}}), json!({"a.b": 1})),
            (json!(1), json!(1.0)),
        ];
        for (left, right) in cases {
            assert_ne!(content_hash(&left), content_hash(&right), "{left} vs {right}");
        }
    }

    #[test]
    fn hash_is_stable_sha256_hex() {
        // sha256("{\"a\":1,\"b\":[true,\"x\"]}"), fixed so a change of encoding is noticed.
        let h = content_hash(&json!({"b": [true, "x"], "a": 1}));
        assert_eq!(h, "63e8063d9dc6f0fd5a24b4706818a165fd57c3531b74466cf5dea62bff09b0b6");
    }
}
