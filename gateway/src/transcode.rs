//! JSON ⇄ protobuf, generically from descriptors (spec Rules 2–8).
//!
//! In: the body (strictly parsed: no duplicate keys, depth ≤ 64), the path variables and the query
//! string are merged into one JSON tree shaped like the request message ([`request_message`]),
//! which is then converted field by field against the descriptor, so every error names the field
//! as a snake_case JSON path (`parts[2].quantity`). Enums are accepted as the short lowercase
//! name (`in_progress`) or the full name (`WIDGET_STATUS_IN_PROGRESS`); numbers and
//! `*_UNSPECIFIED` are refused with the allowed names. PATCH without `update_mask` derives it
//! from the keys of the body (Rule 8).
//!
//! Out ([`message_to_json`]): proto field names; every scalar, repeated and map field present
//! with its default; unset messages, unset `optional` fields and enums at `*_UNSPECIFIED` left
//! out; enums as short lowercase names; 64-bit integers as strings; `Timestamp` as RFC 3339 UTC
//! with milliseconds; `FieldMask` as `"a,b.c"`; bytes as base64.

use std::collections::{HashMap, HashSet};
use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use prost_reflect::{
    DynamicMessage, EnumDescriptor, EnumValueDescriptor, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, SerializeOptions, Value,
};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use crate::errors::ApiError;
use crate::routes::{BodyBinding, PathTemplate, Route};

/// Deepest JSON nesting accepted (Rule 4).
pub const MAX_DEPTH: usize = 64;
/// Most query parameters accepted.
pub const MAX_QUERY_PARAMS: usize = 100;

// ---------------------------------------------------------------------------------------------
// Strict JSON parsing
// ---------------------------------------------------------------------------------------------

struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v).map(Json::Number).ok_or_else(|| E::custom("invalid number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict { depth: self.depth + 1 })? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(Strict { depth: self.depth + 1 })?;
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

/// Parses a request body: well-formed UTF-8 JSON, no duplicate keys, nesting ≤ [`MAX_DEPTH`];
/// anything else is 400 MALFORMED_JSON.
pub fn parse_json(bytes: &[u8]) -> Result<Json, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|v| deserializer.end().map(|()| v))
        .map_err(|e| ApiError::malformed_json(format!("The request body is not valid JSON: {e}")))?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/// `TaskStatus` → `TASK_STATUS`.
fn upper_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The short name of an enum value: the enum-type prefix stripped, lowercased
/// (`TASK_STATUS_IN_PROGRESS` → `in_progress`).
pub fn enum_short_name(value: &EnumValueDescriptor) -> String {
    let prefix = format!("{}_", upper_snake(value.parent_enum().name()));
    value.name().strip_prefix(prefix.as_str()).unwrap_or(value.name()).to_ascii_lowercase()
}

fn is_unspecified(value: &EnumValueDescriptor) -> bool {
    value.number() == 0 && value.name().ends_with("UNSPECIFIED")
}

fn allowed_names(e: &EnumDescriptor) -> String {
    e.values().filter(|v| !is_unspecified(v)).map(|v| enum_short_name(&v)).collect::<Vec<_>>().join(", ")
}

/// Parses an enum from its short lowercase or full name; numbers and `*_UNSPECIFIED` are refused.
pub fn parse_enum(e: &EnumDescriptor, value: &Json) -> Result<i32, String> {
    let refuse = || format!("must be one of: {}", allowed_names(e));
    let Json::String(name) = value else { return Err(refuse()) };
    let found = e.get_value_by_name(name).or_else(|| e.values().find(|v| enum_short_name(v) == *name));
    match found {
        Some(v) if !is_unspecified(&v) => Ok(v.number()),
        _ => Err(refuse()),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON → message
// ---------------------------------------------------------------------------------------------

/// A value that does not fit its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// snake_case JSON path.
    pub field: String,
    /// Why.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::validation(e.field, e.message)
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

fn is_well_known(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Empty"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Messages that PATCH masks treat as one value (Rule 8).
fn is_mask_leaf(message: &MessageDescriptor) -> bool {
    is_well_known(message.full_name()) || message.full_name() == "trellis.common.v1.Money"
}

/// Finds a field by proto name, or by lowerCamelCase JSON name.
fn field_by_key(message: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    message.get_field_by_name(key).or_else(|| message.get_field_by_json_name(key))
}

const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn integer(value: &Json, min: i128, max: i128) -> Result<i128, &'static str> {
    let n = match value {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i128::from(i)
            } else if let Some(u) = n.as_u64() {
                i128::from(u)
            } else {
                let f = n.as_f64().ok_or("must be an integer")?;
                if f.fract() != 0.0 || !f.is_finite() || f.abs() > 1.8e19 {
                    return Err("must be an integer");
                }
                f as i128
            }
        }
        Json::String(s) => s.parse::<i128>().map_err(|_| "must be an integer")?,
        _ => return Err("must be an integer"),
    };
    if n < min || n > max {
        return Err("is out of range");
    }
    Ok(n)
}

fn float(value: &Json) -> Result<f64, &'static str> {
    match value {
        Json::Number(n) => n.as_f64().ok_or("must be a number"),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            s => s.parse().map_err(|_| "must be a number"),
        },
        _ => Err("must be a number"),
    }
}

fn build_single(kind: &Kind, value: &Json, path: &str) -> Result<Value, FieldError> {
    let err = |m: &str| FieldError::new(path, m);
    Ok(match kind {
        Kind::Double => Value::F64(float(value).map_err(err)?),
        Kind::Float => Value::F32(float(value).map_err(err)? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(integer(value, i32::MIN.into(), i32::MAX.into()).map_err(err)? as i32)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(integer(value, i64::MIN.into(), i64::MAX.into()).map_err(err)? as i64)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(integer(value, 0, u32::MAX.into()).map_err(err)? as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(integer(value, 0, u64::MAX.into()).map_err(err)? as u64),
        Kind::Bool => Value::Bool(value.as_bool().ok_or_else(|| err("must be true or false"))?),
        Kind::String => Value::String(value.as_str().ok_or_else(|| err("must be a string"))?.to_string()),
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(|| err("must be a base64 string"))?;
            let bytes = BASE64_STANDARD
                .decode(text)
                .or_else(|_| BASE64_URL.decode(text))
                .map_err(|_| err("must be a base64 string"))?;
            Value::Bytes(bytes.into())
        }
        Kind::Enum(e) => Value::EnumNumber(parse_enum(e, value).map_err(|m| FieldError::new(path, m))?),
        Kind::Message(m) => Value::Message(build_message(m, value, path)?),
    })
}

fn build_well_known(desc: &MessageDescriptor, value: &Json, path: &str) -> Result<DynamicMessage, FieldError> {
    let name = desc.full_name();
    if name == "google.protobuf.FieldMask" {
        let text =
            value.as_str().ok_or_else(|| FieldError::new(path, "must be a comma-separated list of field paths"))?;
        let mut mask = DynamicMessage::new(desc.clone());
        let paths: Vec<Value> =
            text.split(',').map(str::trim).filter(|p| !p.is_empty()).map(|p| Value::String(p.to_string())).collect();
        mask.set_field_by_name("paths", Value::List(paths));
        return Ok(mask);
    }
    DynamicMessage::deserialize(desc.clone(), value).map_err(|e| {
        let message = match name {
            "google.protobuf.Timestamp" => "must be an RFC 3339 timestamp such as 2025-03-30T12:00:00Z".to_string(),
            "google.protobuf.Duration" => "must be a duration such as \"1.5s\"".to_string(),
            _ => format!("is invalid: {e}"),
        };
        FieldError::new(path, message)
    })
}

/// Builds a message from a JSON value, naming the offending field on error.
pub fn build_message(desc: &MessageDescriptor, value: &Json, path: &str) -> Result<DynamicMessage, FieldError> {
    if is_well_known(desc.full_name()) {
        return build_well_known(desc, value, path);
    }
    let Json::Object(object) = value else {
        return Err(FieldError::new(if path.is_empty() { "body" } else { path }, "must be a JSON object"));
    };
    let mut message = DynamicMessage::new(desc.clone());
    let mut seen = HashSet::new();
    let mut oneofs: HashMap<String, String> = HashMap::new();
    for (key, value) in object {
        let field = field_by_key(desc, key).ok_or_else(|| FieldError::new(join(path, key), "unknown field"))?;
        let field_path = join(path, field.name());
        if !seen.insert(field.number()) {
            return Err(FieldError::new(field_path, "is given more than once"));
        }
        let null_is_value =
            matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Value") && !field.is_list();
        if value.is_null() && !null_is_value {
            continue;
        }
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic())
            && let Some(other) = oneofs.insert(oneof.name().to_string(), field.name().to_string())
        {
            return Err(FieldError::new(field_path, format!("cannot be set together with {other}")));
        }
        let built = if field.is_map() {
            let Json::Object(entries) = value else { return Err(FieldError::new(field_path, "must be a JSON object")) };
            let Kind::Message(entry) = field.kind() else { return Err(FieldError::new(field_path, "invalid map")) };
            let key_kind = entry.map_entry_key_field().kind();
            let value_kind = entry.map_entry_value_field().kind();
            let mut map = HashMap::with_capacity(entries.len());
            for (k, v) in entries {
                let entry_path = format!("{field_path}.{k}");
                let key = match key_kind {
                    Kind::String => MapKey::String(k.clone()),
                    Kind::Bool => match k.as_str() {
                        "true" => MapKey::Bool(true),
                        "false" => MapKey::Bool(false),
                        _ => return Err(FieldError::new(entry_path, "key must be true or false")),
                    },
                    ref kind => match build_single(kind, &Json::String(k.clone()), &entry_path)? {
                        Value::I32(i) => MapKey::I32(i),
                        Value::I64(i) => MapKey::I64(i),
                        Value::U32(i) => MapKey::U32(i),
                        Value::U64(i) => MapKey::U64(i),
                        _ => return Err(FieldError::new(entry_path, "invalid key")),
                    },
                };
                map.insert(key, build_single(&value_kind, v, &entry_path)?);
            }
            Value::Map(map)
        } else if field.is_list() {
            let Json::Array(items) = value else { return Err(FieldError::new(field_path, "must be a JSON array")) };
            let kind = field.kind();
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{field_path}[{i}]");
                if item.is_null() {
                    return Err(FieldError::new(item_path, "must not be null"));
                }
                list.push(build_single(&kind, item, &item_path)?);
            }
            Value::List(list)
        } else {
            build_single(&field.kind(), value, &field_path)?
        };
        message.try_set_field(&field, built).map_err(|e| FieldError::new(field_path, e.to_string()))?;
    }
    Ok(message)
}

/// What a REST request brings besides its route.
#[derive(Debug)]
pub struct Inbound<'a> {
    /// The parsed body, `None` when there was none.
    pub body: Option<Json>,
    /// Percent-decoded path variables (field path, value).
    pub path_vars: &'a [(String, String)],
    /// The raw query string.
    pub query: Option<&'a str>,
}

/// A query or path value as JSON, typed for its field where text alone would not do.
fn coerce(field: &FieldDescriptor, text: &str) -> Json {
    let boolean = |t: &str| match t {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        _ => Json::String(t.to_string()),
    };
    match field.kind() {
        Kind::Bool => boolean(text),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" if is_date(text) => Json::String(format!("{text}T00:00:00Z")),
            "google.protobuf.BoolValue" => boolean(text),
            "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue" => text
                .parse::<i64>()
                .map(Json::from)
                .ok()
                .or_else(|| text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Json::Number))
                .unwrap_or_else(|| Json::String(text.to_string())),
            _ => Json::String(text.to_string()),
        },
        _ => Json::String(text.to_string()),
    }
}

/// `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() && text.len() == 10
}

/// Sets `value` at `names` inside `root`, creating objects on the way.
fn insert_at(root: &mut Map<String, Json>, names: &[String], value: Json, append: bool) {
    let Some((last, parents)) = names.split_last() else { return };
    let mut current = root;
    for name in parents {
        let slot = current.entry(name.clone()).or_insert_with(|| Json::Object(Map::new()));
        if !slot.is_object() {
            *slot = Json::Object(Map::new());
        }
        let Json::Object(next) = slot else { return };
        current = next;
    }
    if append {
        match current.entry(last.clone()).or_insert_with(|| Json::Array(Vec::new())) {
            Json::Array(items) => items.push(value),
            other => *other = Json::Array(vec![value]),
        }
    } else {
        current.insert(last.clone(), value);
    }
}

/// Resolves a dotted path of proto or JSON names to fields (proto names returned).
fn resolve_names(root: &MessageDescriptor, path: &str) -> Option<(Vec<String>, FieldDescriptor)> {
    let mut desc = root.clone();
    let mut names = Vec::new();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = field_by_key(&desc, part)?;
        names.push(field.name().to_string());
        if parts.peek().is_none() {
            return Some((names, field));
        }
        match field.kind() {
            Kind::Message(m) if !field.is_list() && !field.is_map() && !is_well_known(m.full_name()) => desc = m,
            _ => return None,
        }
    }
    None
}

/// The update-mask paths of a PATCH body: every key, recursing into nested resource messages.
fn derive_mask_paths(desc: &MessageDescriptor, object: &Map<String, Json>, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in object {
        let Some(field) = field_by_key(desc, key) else { continue };
        let path = join(prefix, field.name());
        match (field.kind(), value) {
            (Kind::Message(m), Json::Object(nested))
                if !field.is_map() && !field.is_list() && !is_mask_leaf(&m) && !nested.is_empty() =>
            {
                derive_mask_paths(&m, nested, &path, out)
            }
            _ => out.push(path),
        }
    }
}

fn update_mask_field(route: &Route) -> Option<FieldDescriptor> {
    route.method.descriptor.input().get_field_by_name("update_mask").filter(|f| {
        matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask") && !f.is_list()
    })
}

/// Builds the request message of a REST call (Rules 2–5, 8).
pub fn request_message(route: &Route, inbound: Inbound<'_>) -> Result<DynamicMessage, ApiError> {
    let input = route.method.descriptor.input();
    let mut root = Map::new();

    // 1. The body.
    let body_field = match &route.body {
        BodyBinding::None => {
            if inbound.body.is_some() {
                return Err(ApiError::bad_request("This route takes no request body"));
            }
            None
        }
        BodyBinding::Whole => {
            match inbound.body {
                Some(Json::Object(object)) => root = object,
                Some(_) => return Err(ApiError::validation("body", "must be a JSON object")),
                None => {}
            }
            None
        }
        BodyBinding::Field(field) => {
            if let Some(body) = inbound.body {
                root.insert(field.name().to_string(), body);
            }
            Some(field.name().to_string())
        }
    };

    // 2. The update mask a PATCH body implies, before path and query add keys (Rule 8).
    let mask_field = if route.http_method == http::Method::PATCH { update_mask_field(route) } else { None };
    let mut resource = input.clone();
    let derived = mask_field.as_ref().map(|_| {
        let body = match &route.body {
            BodyBinding::Field(field) => {
                if let Kind::Message(m) = field.kind() {
                    resource = m;
                }
                root.get(field.name()).and_then(Json::as_object).cloned().unwrap_or_default()
            }
            _ => {
                let bound: HashSet<&str> = inbound.path_vars.iter().filter_map(|(p, _)| p.split('.').next()).collect();
                root.iter()
                    .filter(|(k, _)| !bound.contains(k.as_str()) && *k != "update_mask" && *k != "updateMask")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        };
        let mut paths = Vec::new();
        derive_mask_paths(&resource, &body, "", &mut paths);
        paths
    });

    // 3. Path variables.
    let mut bound_paths = HashSet::new();
    for (path, value) in inbound.path_vars {
        let (names, field) = resolve_names(&input, path)
            .ok_or_else(|| ApiError::validation(path.clone(), "is not a field of the request"))?;
        insert_at(&mut root, &names, coerce(&field, value), false);
        bound_paths.insert(names.join("."));
    }

    // 4. Query parameters: whatever the path and body leave unbound.
    if let Some(query) = inbound.query.filter(|q| !q.is_empty()) {
        let mut set_once = HashSet::new();
        for (count, (key, value)) in form_urlencoded::parse(query.as_bytes()).enumerate() {
            if count >= MAX_QUERY_PARAMS {
                return Err(ApiError::bad_request(format!("At most {MAX_QUERY_PARAMS} query parameters are accepted")));
            }
            if key.starts_with('_') {
                continue;
            }
            let unknown = || ApiError::validation(key.to_string(), "unknown query parameter");
            let is_mask = mask_field.is_some() && (key == "update_mask" || key == "updateMask");
            if route.body == BodyBinding::Whole && !is_mask {
                return Err(unknown());
            }
            let (names, field) = resolve_names(&input, &key).ok_or_else(unknown)?;
            let full = names.join(".");
            if body_field.as_deref() == names.first().map(String::as_str) {
                return Err(ApiError::validation(full, "is bound by the request body"));
            }
            if bound_paths.contains(&full) {
                return Err(ApiError::validation(full, "is bound by the URL path"));
            }
            let message_kind = matches!(field.kind(), Kind::Message(ref m) if !is_well_known(m.full_name()));
            if field.is_map() || message_kind {
                return Err(ApiError::validation(full, "cannot be set from a query parameter"));
            }
            if field.is_list() {
                let split = match field.kind() {
                    Kind::Enum(_) => true,
                    Kind::String => value.contains(',') && value.split(',').all(|v| uuid::Uuid::parse_str(v).is_ok()),
                    _ => false,
                };
                let parts: Vec<&str> = if split { value.split(',').collect() } else { vec![&value] };
                for part in parts {
                    insert_at(&mut root, &names, coerce(&field, part), true);
                }
            } else {
                if !set_once.insert(full.clone()) {
                    return Err(ApiError::validation(full, "is given more than once"));
                }
                insert_at(&mut root, &names, coerce(&field, &value), false);
            }
        }
    }

    // 5. The explicit mask wins over the derived one; it must name real fields.
    let mut mask_paths = None;
    if let (Some(_), Some(derived)) = (&mask_field, derived) {
        let explicit = root.remove("update_mask").or_else(|| root.remove("updateMask")).filter(|v| !v.is_null());
        mask_paths = Some(match explicit {
            Some(Json::String(text)) => {
                let paths: Vec<String> =
                    text.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
                for path in &paths {
                    if resolve_names(&resource, path).is_none() {
                        return Err(ApiError::validation("update_mask", format!("unknown field path {path:?}")));
                    }
                }
                if paths.is_empty() {
                    return Err(ApiError::validation("update_mask", "nothing to update"));
                }
                paths
            }
            Some(_) => {
                return Err(ApiError::validation("update_mask", "must be a comma-separated list of field paths"));
            }
            None if derived.is_empty() => {
                return Err(ApiError::validation(body_field.unwrap_or_else(|| "body".into()), "nothing to update"));
            }
            None => derived,
        });
    }

    let mut message = build_message(&input, &Json::Object(root), "")?;
    if let (Some(field), Some(paths)) = (mask_field, mask_paths)
        && let Kind::Message(mask_desc) = field.kind()
    {
        let mut mask = DynamicMessage::new(mask_desc);
        mask.set_field_by_name("paths", Value::List(paths.into_iter().map(Value::String).collect()));
        message.set_field(&field, Value::Message(mask));
    }
    Ok(message)
}

// ---------------------------------------------------------------------------------------------
// message → JSON
// ---------------------------------------------------------------------------------------------

fn timestamp_json(message: &DynamicMessage) -> Json {
    let seconds = message.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or_default();
    let nanos = message.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or_default();
    u32::try_from(nanos)
        .ok()
        .and_then(|n| chrono::DateTime::from_timestamp(seconds, n))
        .map(|t| Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Json::Null)
}

/// `"1.5s"`, `"30s"`, `"-0.25s"`: seconds with no trailing zeros.
fn duration_json(message: &DynamicMessage) -> Json {
    let seconds = message.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or_default();
    let nanos = message.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or_default();
    let negative = seconds < 0 || nanos < 0;
    let mut text = format!("{}{}", if negative { "-" } else { "" }, seconds.unsigned_abs());
    if nanos != 0 {
        let fraction = format!("{:09}", nanos.unsigned_abs());
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('s');
    Json::String(text)
}

fn value_json(kind: &Kind, value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(i) => Json::from(*i),
        Value::U32(u) => Json::from(*u),
        Value::I64(i) => Json::String(i.to_string()),
        Value::U64(u) => Json::String(u.to_string()),
        Value::F32(f) => float_json(f64::from(*f)),
        Value::F64(f) => float_json(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e.get_value(*n).map(|v| Json::String(enum_short_name(&v))).unwrap_or(Json::from(*n)),
            _ => Json::from(*n),
        },
        Value::Message(m) => message_to_json(m),
        Value::List(items) => Json::Array(items.iter().map(|v| value_json(kind, v)).collect()),
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) if entry.is_map_entry() => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut object = Map::new();
            for (key, v) in entries {
                let key = match key {
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(i) => i.to_string(),
                    MapKey::I64(i) => i.to_string(),
                    MapKey::U32(u) => u.to_string(),
                    MapKey::U64(u) => u.to_string(),
                    MapKey::String(s) => s.clone(),
                };
                object.insert(key, value_json(&value_kind, v));
            }
            Json::Object(object)
        }
    }
}

fn float_json(f: f64) -> Json {
    if f.is_nan() {
        Json::String("NaN".into())
    } else if f.is_infinite() {
        Json::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
    }
}

/// The JSON of one field's current value (for `response_body`).
pub fn field_json(message: &DynamicMessage, field: &FieldDescriptor) -> Json {
    value_json(&field.kind(), &message.get_field(field))
}

/// The JSON of a message (Rule 7).
pub fn message_to_json(message: &DynamicMessage) -> Json {
    let desc = message.descriptor();
    match desc.full_name() {
        "google.protobuf.Timestamp" => return timestamp_json(message),
        "google.protobuf.Duration" => return duration_json(message),
        "google.protobuf.FieldMask" => {
            let paths: Vec<String> = message
                .get_field_by_name("paths")
                .and_then(|v| v.as_list().map(|l| l.iter().filter_map(|p| p.as_str().map(str::to_string)).collect()))
                .unwrap_or_default();
            return Json::String(paths.join(","));
        }
        name if is_well_known(name) => {
            return message
                .serialize_with_options(
                    serde_json::value::Serializer,
                    &SerializeOptions::new().use_proto_field_name(true),
                )
                .unwrap_or(Json::Null);
        }
        _ => {}
    }
    let mut object = Map::new();
    for field in desc.fields() {
        let present = if field.is_list() || field.is_map() {
            true
        } else if field.supports_presence() {
            message.has_field(&field)
        } else if matches!(field.kind(), Kind::Enum(_)) {
            message.get_field(&field).as_enum_number() != Some(0)
        } else {
            true
        };
        if present {
            object.insert(field.name().to_string(), field_json(message, &field));
        }
    }
    Json::Object(object)
}

/// `Location` of a created resource: the `Get<Resource>` template filled with the response's
/// `id` (or that of its single message field) for the last variable, and the resource's or the
/// request path's values for the others.
pub fn location(template: &PathTemplate, response: &DynamicMessage, path_vars: &[(String, String)]) -> Option<String> {
    let id_of = |m: &DynamicMessage| {
        m.descriptor().get_field_by_name("id").and_then(|f| m.get_field(&f).as_str().map(str::to_string))
    };
    let resource = if id_of(response).is_some() {
        response.clone()
    } else {
        let desc = response.descriptor();
        let mut messages = desc
            .fields()
            .filter(|f| !f.is_list() && !f.is_map() && matches!(f.kind(), Kind::Message(_)) && response.has_field(f));
        let field = messages.next()?;
        if messages.next().is_some() {
            return None;
        }
        response.get_field(&field).as_message()?.clone()
    };
    let id = id_of(&resource).filter(|id| !id.is_empty())?;
    let last = template.variables().last()?.field_path.clone();
    template.expand(|field_path| {
        if field_path == last {
            return Some(id.clone());
        }
        let leaf = field_path.rsplit('.').next().unwrap_or(field_path);
        resource
            .descriptor()
            .get_field_by_name(leaf)
            .and_then(|f| resource.get_field(&f).as_str().map(str::to_string))
            .filter(|v| !v.is_empty())
            .or_else(|| path_vars.iter().find(|(p, _)| p == field_path).map(|(_, v)| v.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_pool as pool;

    fn desc(name: &str) -> MessageDescriptor {
        pool::pool().get_message_by_name(name).unwrap_or_else(|| panic!("{name} missing from the test pool"))
    }

    fn build(name: &str, json: Json) -> Result<DynamicMessage, FieldError> {
        build_message(&desc(name), &json, "")
    }

    const WIDGET: &str = "trellis.widgets.v1.Widget";

    #[test]
    fn enum_type_prefixes_become_snake_case() {
        assert_eq!(upper_snake("TaskStatus"), "TASK_STATUS");
        assert_eq!(upper_snake("HTTPMethod"), "HTTP_METHOD");
        assert_eq!(upper_snake("Oauth2Provider"), "OAUTH2_PROVIDER");
    }

    #[test]
    fn enums_are_accepted_short_or_full_and_written_short() {
        let short = build(WIDGET, serde_json::json!({"status": "in_review"})).expect("short name");
        let full = build(WIDGET, serde_json::json!({"status": "WIDGET_STATUS_IN_REVIEW"})).expect("full name");
        assert_eq!(short, full);
        assert_eq!(message_to_json(&short)["status"], "in_review");
    }

    #[test]
    fn enum_numbers_unknown_names_and_unspecified_are_refused_with_the_allowed_names() {
        for bad in [
            serde_json::json!(2),
            serde_json::json!("WIDGET_STATUS_UNSPECIFIED"),
            serde_json::json!("unspecified"),
            serde_json::json!("highest"),
        ] {
            let e = build(WIDGET, serde_json::json!({"status": bad})).expect_err("refused");
            assert_eq!(e.field, "status");
            assert_eq!(e.message, "must be one of: active, in_review, retired");
        }
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = build(WIDGET, serde_json::json!({"dimensions": {"depth": 3}})).expect_err("unknown");
        assert_eq!((e.field.as_str(), e.message.as_str()), ("dimensions.depth", "unknown field"));
        let e = build(WIDGET, serde_json::json!({"parts": [{"name": "a"}, {"quantity": "x"}]})).expect_err("bad");
        assert_eq!(e.field, "parts[1].quantity");
    }

    #[test]
    fn json_names_are_accepted_and_proto_names_written() {
        let m = build(WIDGET, serde_json::json!({"displayName": "Big", "created_at": "2025-03-30T14:00:00+02:00"}))
            .expect("camelCase accepted");
        let json = message_to_json(&m);
        assert_eq!(json["display_name"], "Big");
        assert_eq!(json["created_at"], "2025-03-30T12:00:00.000Z");
    }

    #[test]
    fn sixty_four_bit_integers_are_strings_out_and_either_in() {
        let from_number = build(WIDGET, serde_json::json!({"weight": 9007199254740993u64})).expect("number");
        let from_string = build(WIDGET, serde_json::json!({"weight": "9007199254740993"})).expect("string");
        assert_eq!(from_number, from_string);
        assert_eq!(message_to_json(&from_string)["weight"], "9007199254740993");
        let e = build(WIDGET, serde_json::json!({"count": -1})).expect_err("uint32 below zero");
        assert_eq!((e.field.as_str(), e.message.as_str()), ("count", "is out of range"));
        assert!(build(WIDGET, serde_json::json!({"count": 1.5})).is_err());
    }

    #[test]
    fn output_has_defaults_for_scalars_and_lists_but_omits_unset_messages_optionals_and_unspecified() {
        let json = message_to_json(&DynamicMessage::new(desc(WIDGET)));
        let object = json.as_object().expect("object");
        assert_eq!(json["name"], "");
        assert_eq!(json["weight"], "0");
        assert_eq!(json["count"], 0);
        assert_eq!(json["visible"], false);
        assert_eq!(json["tags"], serde_json::json!([]));
        assert_eq!(json["labels"], serde_json::json!({}));
        for absent in ["status", "created_at", "note", "dimensions", "price", "owner_user_id", "priority"] {
            assert!(!object.contains_key(absent), "{absent} should be omitted");
        }
    }

    #[test]
    fn set_optionals_oneofs_maps_bytes_and_wrappers_are_written() {
        let m = build(
            WIDGET,
            serde_json::json!({
                "note": "", "owner_team_id": "t1", "labels": {"a": "b"}, "blob": "aGk=",
                "priority": 3, "ttl": "1.5s", "history": ["active", "retired"],
                "price": {"currency_code": "EUR", "amount": "12.50"}
            }),
        )
        .expect("valid");
        let json = message_to_json(&m);
        assert_eq!(json["note"], "");
        assert_eq!(json["owner_team_id"], "t1");
        assert_eq!(json["labels"], serde_json::json!({"a": "b"}));
        assert_eq!(json["blob"], "aGk=");
        assert_eq!(json["priority"], 3);
        assert_eq!(json["ttl"], "1.5s");
        assert_eq!(json["history"], serde_json::json!(["active", "retired"]));
        assert_eq!(json["price"], serde_json::json!({"currency_code": "EUR", "amount": "12.50"}));
    }

    #[test]
    fn two_members_of_a_oneof_are_refused() {
        let e = build(WIDGET, serde_json::json!({"owner_user_id": "u", "owner_team_id": "t"})).expect_err("oneof");
        assert!(e.message.contains("cannot be set together"), "{e:?}");
    }

    #[test]
    fn null_leaves_a_field_unset() {
        let m = build(WIDGET, serde_json::json!({"name": null, "dimensions": null})).expect("nulls");
        assert_eq!(m, DynamicMessage::new(desc(WIDGET)));
    }

    #[test]
    fn strict_parsing_refuses_duplicates_depth_and_garbage() {
        assert_eq!(parse_json(br#"{"a":1,"a":2}"#).expect_err("dup").code, "MALFORMED_JSON");
        assert_eq!(parse_json(br#"{"title":"#).expect_err("truncated").code, "MALFORMED_JSON");
        assert_eq!(parse_json(br#"{} {}"#).expect_err("trailing").code, "MALFORMED_JSON");
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse_json(deep.as_bytes()).expect_err("deep").code, "MALFORMED_JSON");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_json(ok.as_bytes()).is_ok());
    }

    fn route(method: &str, path: &str) -> (std::sync::Arc<Route>, Vec<(String, String)>) {
        let table = crate::routes::RouteTable::build(pool::pool()).expect("routes");
        match table.find(&http::Method::from_bytes(method.as_bytes()).expect("method"), path) {
            crate::routes::Lookup::Found(route, vars) => (route.clone(), vars),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    fn request(method: &str, path: &str, query: Option<&str>, body: Option<Json>) -> Result<Json, ApiError> {
        let (route, vars) = route(method, path);
        request_message(&route, Inbound { body, path_vars: &vars, query }).map(|m| message_to_json(&m))
    }

    #[test]
    fn query_parameters_fill_nested_repeated_and_typed_fields() {
        let json = request(
            "GET",
            "/api/v1/widgets",
            Some("page_size=5&filter.status=active&ids=a&ids=b&statuses=active,retired&since=2025-01-02&include_retired=true&_=123"),
            None,
        )
        .expect("valid query");
        assert_eq!(json["page_size"], 5);
        assert_eq!(json["filter"]["status"], "active");
        assert_eq!(json["ids"], serde_json::json!(["a", "b"]));
        assert_eq!(json["statuses"], serde_json::json!(["active", "retired"]));
        assert_eq!(json["since"], "2025-01-02T00:00:00.000Z");
        assert_eq!(json["include_retired"], true);
    }

    #[test]
    fn unknown_or_repeated_query_parameters_are_refused() {
        let e = request("GET", "/api/v1/widgets", Some("colour=red"), None).expect_err("unknown");
        assert_eq!((e.code.as_str(), e.details[0].0.as_str()), ("VALIDATION_ERROR", "colour"));
        let e = request("GET", "/api/v1/widgets", Some("page_size=1&page_size=2"), None).expect_err("twice");
        assert_eq!(e.details[0].0, "page_size");
        let e = request("GET", "/api/v1/widgets/w1", Some("widget_id=w2"), None).expect_err("path-bound");
        assert_eq!(e.details[0], ("widget_id".to_string(), "is bound by the URL path".to_string()));
    }

    #[test]
    fn path_variables_fill_nested_fields_next_to_the_body() {
        let json = request("POST", "/api/v1/widgets/w%201:archive", None, Some(serde_json::json!({"reason": "old"})))
            .expect("valid");
        assert_eq!(json["widget_id"], "w 1");
        assert_eq!(json["reason"], "old");
    }

    #[test]
    fn patch_derives_the_update_mask_from_the_body_keys() {
        let json = request(
            "PATCH",
            "/api/v1/widgets/w1",
            None,
            Some(
                serde_json::json!({"name": "B", "due_at": null, "dimensions": {"width": 3}, "price": {"amount": "1"}}),
            ),
        )
        .expect("valid");
        let mut paths: Vec<&str> = json["update_mask"].as_str().expect("mask").split(',').collect();
        paths.sort_unstable();
        assert_eq!(paths, vec!["dimensions.width", "due_at", "name", "price"]);
        assert_eq!(json["widget"]["id"], "w1");
    }

    #[test]
    fn an_explicit_update_mask_wins_and_must_name_real_fields() {
        let json = request(
            "PATCH",
            "/api/v1/widgets/w1",
            Some("update_mask=name"),
            Some(serde_json::json!({"name": "B", "tags": []})),
        )
        .expect("explicit");
        assert_eq!(json["update_mask"], "name");
        let e =
            request("PATCH", "/api/v1/widgets/w1", Some("update_mask=nope"), Some(serde_json::json!({"name": "B"})))
                .expect_err("unknown path");
        assert_eq!(e.details[0].0, "update_mask");
        let e = request("PATCH", "/api/v1/widgets/w1", None, Some(serde_json::json!({}))).expect_err("empty");
        assert_eq!(e.details[0], ("widget".to_string(), "nothing to update".to_string()));
    }

    #[test]
    fn a_body_on_a_route_without_one_is_refused() {
        let e = request("GET", "/api/v1/widgets/w1", None, Some(serde_json::json!({}))).expect_err("body");
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn location_uses_the_get_route_and_the_created_id() {
        let (create, _) = route("POST", "/api/v1/widgets");
        let crate::routes::Success::Created(Some(template)) = &create.success else {
            panic!("CreateWidget should have a Location template: {:?}", create.success)
        };
        let mut widget = DynamicMessage::new(desc(WIDGET));
        widget.set_field_by_name("id", Value::String("w/1".into()));
        let mut response = DynamicMessage::new(desc("trellis.widgets.v1.CreateWidgetResponse"));
        response.set_field_by_name("widget", Value::Message(widget));
        assert_eq!(location(template, &response, &[]).as_deref(), Some("/api/v1/widgets/w%2F1"));
    }
}
