//! JSON values across the wire: `google.protobuf.Value` (which the gateway writes and reads as
//! plain JSON) to and from `serde_json::Value`, losslessly for everything JSON can hold.
//!
//! Numbers travel as `f64` in `google.protobuf.Value`; [`from_proto`] gives back an integer when
//! the number is integral and within ±2^53, so `3` stays `3` rather than becoming `3.0`.

use prost_types::value::Kind;
use prost_types::{ListValue, NullValue, Struct};

/// Largest integer an `f64` holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// `serde_json::Value` → `google.protobuf.Value`.
pub fn to_proto(value: &serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(NullValue::NullValue as i32),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue { values: items.iter().map(to_proto).collect() }),
        serde_json::Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object → `google.protobuf.Struct`.
pub fn to_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct { fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect() }
}

/// `google.protobuf.Value` → `serde_json::Value`; an unset kind is `null`, and a non-finite
/// number (which JSON cannot hold) is `null` too.
pub fn from_proto(value: &prost_types::Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(list.values.iter().map(from_proto).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// `google.protobuf.Struct` → a JSON object.
pub fn from_struct(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), from_proto(v))).collect())
}

fn number(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_the_round_trip() {
        let value = json!({"a": [1, 2.5, -3, null, true, "x"], "b": {"c": {}}, "big": 9007199254740992i64});
        assert_eq!(from_proto(&to_proto(&value)), value);
    }

    #[test]
    fn an_unset_value_is_null() {
        assert_eq!(from_proto(&prost_types::Value { kind: None }), serde_json::Value::Null);
        assert_eq!(
            from_proto(&prost_types::Value { kind: Some(Kind::NumberValue(f64::NAN)) }),
            serde_json::Value::Null
        );
    }
}
