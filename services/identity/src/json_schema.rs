//! The JSON Schema subset setting definitions may use (ADR 0017), and validation of values
//! against it with the JSON pointer of each offending part.
//!
//! Supported keywords: `type` (a name or a list of names), `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `pattern`, `minItems`,
//! `maxItems`, `items`, `properties`, `required`, `additionalProperties` (a boolean or a schema);
//! the annotations `title`, `description`, `default`, `examples`, `$schema` and `$comment` are
//! accepted and ignored. A schema with any other keyword is refused when it is registered, so a
//! definition never validates less than its author believes.

use serde_json::{Map, Value};

const TYPES: &[&str] = &["null", "boolean", "object", "array", "number", "integer", "string"];
const ANNOTATIONS: &[&str] = &["title", "description", "default", "examples", "$schema", "$comment"];
/// Most violations reported for one value.
const MAX_ERRORS: usize = 20;

/// A part of a value that the schema refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// JSON pointer (RFC 6901) into the value; empty for the value itself.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Checks that `schema` only uses the supported subset and is well formed.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    check_at(schema, "")
}

fn check_at(schema: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return Err(format!("{}: a schema must be an object", show(at)));
    };
    for (keyword, value) in map {
        let here = format!("{at}/{keyword}");
        let ok = match keyword.as_str() {
            "type" => match value {
                Value::String(t) => TYPES.contains(&t.as_str()),
                Value::Array(ts) => !ts.is_empty() && ts.iter().all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                _ => false,
            },
            "enum" => value.as_array().is_some_and(|v| !v.is_empty()),
            "const" => true,
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => value.is_number(),
            "minLength" | "maxLength" | "minItems" | "maxItems" => value.as_u64().is_some(),
            "pattern" => match value.as_str() {
                Some(p) => {
                    regex::Regex::new(p).map_err(|e| format!("{}: invalid pattern: {e}", show(&here)))?;
                    true
                }
                None => false,
            },
            "items" => {
                check_at(value, &here)?;
                true
            }
            "properties" => match value {
                Value::Object(props) => {
                    for (name, sub) in props {
                        check_at(sub, &format!("{here}/{}", escape(name)))?;
                    }
                    true
                }
                _ => false,
            },
            "required" => value.as_array().is_some_and(|r| r.iter().all(Value::is_string)),
            "additionalProperties" => match value {
                Value::Bool(_) => true,
                other => {
                    check_at(other, &here)?;
                    true
                }
            },
            k if ANNOTATIONS.contains(&k) => true,
            other => return Err(format!("{}: the keyword `{other}` is not supported", show(at))),
        };
        if !ok {
            return Err(format!("{}: malformed `{keyword}`", show(at)));
        }
    }
    Ok(())
}

fn show(at: &str) -> &str {
    if at.is_empty() { "/" } else { at }
}

/// Escapes a property name for a JSON pointer (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Validates `value` against a schema that passed [`check_schema`]; empty when it conforms.
pub fn validate(schema: &Value, value: &Value) -> Vec<SchemaError> {
    let mut errors = Vec::new();
    validate_at(schema, value, "", &mut errors);
    errors.truncate(MAX_ERRORS);
    errors
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
        "string" => value.is_string(),
        _ => false,
    }
}

fn validate_at(schema: &Value, value: &Value, at: &str, errors: &mut Vec<SchemaError>) {
    let Value::Object(schema) = schema else { return };
    let mut fail = |message: String| errors.push(SchemaError { pointer: at.to_string(), message });
    if let Some(t) = schema.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.iter().any(|n| type_matches(n, value)) {
            fail(format!("must be of type {}", names.join(" or ")));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        fail(format!("must be one of {}", list.join(", ")));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        fail(format!("must be {c}"));
    }
    if let Some(n) = value.as_f64() {
        let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
        if let Some(min) = bound("minimum").filter(|m| n < *m) {
            fail(format!("must be at least {min}"));
        }
        if let Some(max) = bound("maximum").filter(|m| n > *m) {
            fail(format!("must be at most {max}"));
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|m| n <= *m) {
            fail(format!("must be greater than {min}"));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|m| n >= *m) {
            fail(format!("must be less than {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64).filter(|m| len < *m) {
            fail(format!("must be at least {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64).filter(|m| len > *m) {
            fail(format!("must be at most {max} characters"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s))
        {
            fail(format!("must match {pattern}"));
        }
    }
    if let Some(items) = value.as_array() {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64).filter(|m| len < *m) {
            fail(format!("must have at least {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64).filter(|m| len > *m) {
            fail(format!("must have at most {max} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate_at(item_schema, item, &format!("{at}/{i}"), errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        validate_object(schema, object, at, errors);
    }
}

fn validate_object(schema: &Map<String, Value>, object: &Map<String, Value>, at: &str, errors: &mut Vec<SchemaError>) {
    let empty = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                let pointer = format!("{at}/{}", escape(name));
                errors.push(SchemaError { pointer, message: "is required".into() });
            }
        }
    }
    for (name, item) in object {
        let pointer = format!("{at}/{}", escape(name));
        match (properties.get(name), schema.get("additionalProperties")) {
            (Some(sub), _) => validate_at(sub, item, &pointer, errors),
            (None, Some(Value::Bool(false))) => {
                errors.push(SchemaError { pointer, message: "is not an allowed property".into() })
            }
            (None, Some(sub @ Value::Object(_))) => validate_at(sub, item, &pointer, errors),
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(schema: &Value, value: &Value) -> Vec<String> {
        validate(schema, value).into_iter().map(|e| e.pointer).collect()
    }

    #[test]
    fn a_color_must_match_its_pattern() {
        let schema = json!({"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"});
        check_schema(&schema).expect("supported");
        assert!(validate(&schema, &json!("#1a2B3c")).is_empty());
        assert_eq!(pointers(&schema, &json!("blue")), vec![""]);
        assert_eq!(pointers(&schema, &json!(3)), vec![""]);
    }

    #[test]
    fn nested_errors_name_their_json_pointer() {
        let schema = json!({
            "type": "object",
            "properties": {
                "colors": {"type": "array", "items": {"type": "string", "maxLength": 7}, "maxItems": 3},
                "a/b": {"type": "integer", "minimum": 1}
            },
            "required": ["colors"],
            "additionalProperties": false
        });
        check_schema(&schema).expect("supported");
        let value = json!({"colors": ["#000000", "far too long"], "a/b": 0, "extra": true});
        let mut found = pointers(&schema, &value);
        found.sort();
        assert_eq!(found, vec!["/a~1b", "/colors/1", "/extra"]);
        assert_eq!(pointers(&schema, &json!({})), vec!["/colors"]);
    }

    #[test]
    fn enums_integers_and_bounds() {
        let schema = json!({"enum": ["monday", "sunday"]});
        assert!(validate(&schema, &json!("sunday")).is_empty());
        assert_eq!(validate(&schema, &json!("friday")).len(), 1);
        let n = json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 10});
        assert!(validate(&n, &json!(10)).is_empty());
        assert_eq!(validate(&n, &json!(0)).len(), 1);
        assert_eq!(validate(&n, &json!(2.5)).len(), 1);
    }

    #[test]
    fn unsupported_or_malformed_schemas_are_refused() {
        assert!(check_schema(&json!({"oneOf": []})).is_err());
        assert!(check_schema(&json!({"type": "str"})).is_err());
        assert!(check_schema(&json!({"pattern": "("})).is_err());
        assert!(check_schema(&json!({"properties": {"x": {"$ref": "#"}}})).is_err());
        assert!(check_schema(&json!("string")).is_err());
        assert!(check_schema(&json!({"title": "ok", "type": ["string", "null"]})).is_ok());
    }
}
