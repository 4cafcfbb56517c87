//! `/openapi.json` (spec Rule 52): an OpenAPI 3.1 document generated at start from the same route
//! table as the transcoder, for the modules enabled in the cell.
//!
//! - One operation per HTTP binding; `operationId` is `<Service>_<Method>` (additional bindings
//!   get `_2`, `_3`, … so ids stay unique).
//! - Path variables become path parameters; on bindings without `body: "*"`, the remaining
//!   request fields become query parameters (nested messages with dots, as the transcoder reads
//!   them).
//! - Schemas come from the messages with the transcoder's JSON shape: snake_case properties,
//!   enums as their short lowercase names, 64-bit integers as strings, `Timestamp` as
//!   `date-time`, `Money` as `{currency_code, amount}`. Descriptions are the proto comments.
//! - Every operation documents the error envelope; 429 documents the rate-limit headers; public
//!   methods have no security requirement, the others `bearerJwt` or `apiKey` (with
//!   `x-required-scope`); server-streaming routes answer `text/event-stream`.
//!
//! The document is deterministic: `serde_json` maps are sorted, and paths are sorted.

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{BodyBinding, Route, RouteTable, Success};

/// The name of the shared error schema and responses.
const ENVELOPE: &str = "ErrorEnvelope";

fn comment(proto: &prost_types::FileDescriptorProto, path: &[i32]) -> Option<String> {
    let info = proto.source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
}

fn message_comment(message: &MessageDescriptor) -> Option<String> {
    comment(message.parent_file_descriptor_proto(), message.path())
}

fn field_comment(field: &FieldDescriptor) -> Option<String> {
    comment(field.parent_message().parent_file_descriptor_proto(), field.path())
}

fn method_comment(method: &MethodDescriptor) -> Option<String> {
    comment(method.parent_file().file_descriptor_proto(), method.path())
}

/// Short lowercase enum names, as the transcoder writes them (Rule 5).
fn enum_names(e: &prost_reflect::EnumDescriptor) -> Vec<String> {
    let mut prefix = String::new();
    for (i, c) in e.name().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            prefix.push('_');
        }
        prefix.push(c.to_ascii_uppercase());
    }
    prefix.push('_');
    e.values()
        .filter(|v| !v.name().ends_with("_UNSPECIFIED") && v.number() != 0)
        .map(|v| v.name().strip_prefix(&prefix).unwrap_or(v.name()).to_ascii_lowercase())
        .collect()
}

/// Builds schemas, collecting every message they reference.
struct Schemas {
    done: BTreeMap<String, Value>,
    pending: Vec<MessageDescriptor>,
}

impl Schemas {
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_string();
        if !self.done.contains_key(&name) && !self.pending.iter().any(|m| m.full_name() == name) {
            self.pending.push(message.clone());
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// The schema of a message-typed value: a well-known type inline, else a reference.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        match message.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => {
                json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$", "example": "1.5s"})
            }
            "google.protobuf.FieldMask" => json!({"type": "string", "example": "title,due_date"}),
            "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
            "google.protobuf.Empty" => json!({"type": "object"}),
            "google.protobuf.StringValue" => json!({"type": ["string", "null"]}),
            "google.protobuf.BytesValue" => json!({"type": ["string", "null"], "contentEncoding": "base64"}),
            "google.protobuf.BoolValue" => json!({"type": ["boolean", "null"]}),
            "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": ["integer", "null"]}),
            "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
                json!({"type": ["string", "null"], "format": "int64"})
            }
            "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({"type": ["number", "null"]}),
            _ => self.reference(message),
        }
    }

    fn scalar(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => json!({"type": "string", "enum": enum_names(e)}),
            Kind::Message(m) => self.message(m),
        }
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            json!({"type": "object", "additionalProperties": self.scalar(&value)})
        } else if field.is_list() {
            json!({"type": "array", "items": self.scalar(&field.kind())})
        } else {
            self.scalar(&field.kind())
        };
        // OpenAPI 3.1 allows siblings of `$ref`, so references keep their description too.
        if let (Some(text), Some(object)) = (field_comment(field), schema.as_object_mut()) {
            object.insert("description".into(), Value::String(text));
        }
        schema
    }

    fn drain(&mut self) {
        while let Some(message) = self.pending.pop() {
            let name = message.full_name().to_string();
            if self.done.contains_key(&name) {
                continue;
            }
            self.done.insert(name.clone(), json!({}));
            let mut properties = Map::new();
            for field in message.fields() {
                properties.insert(field.name().to_string(), self.field(&field));
            }
            let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
            if let Some(text) = message_comment(&message) {
                schema["description"] = Value::String(text);
            }
            self.done.insert(name, schema);
        }
    }
}

/// `/api/v1/tasks/{task_id}` from a template (`{name=projects/*}` → `{name}`).
fn clean_path(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_var = false;
    let mut skipping = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_var = true;
                out.push(c);
            }
            '}' => {
                in_var = false;
                skipping = false;
                out.push(c);
            }
            '=' if in_var => skipping = true,
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// Query parameters: the fields of `message` not bound elsewhere, flattened with dots.
fn query_parameters(
    schemas: &mut Schemas,
    message: &MessageDescriptor,
    prefix: &str,
    bound: &BTreeSet<String>,
    depth: usize,
    out: &mut Vec<Value>,
) {
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        if bound.contains(&name) {
            continue;
        }
        match field.kind() {
            Kind::Message(m)
                if !field.is_list()
                    && !field.is_map()
                    && !m.full_name().starts_with("google.protobuf.")
                    && depth < 3 =>
            {
                query_parameters(schemas, &m, &format!("{name}."), bound, depth + 1, out);
            }
            _ if field.is_map() => {}
            Kind::Message(m) if field.is_list() && !m.full_name().starts_with("google.protobuf.") => {}
            _ => {
                let mut parameter = json!({
                    "name": name,
                    "in": "query",
                    "required": false,
                    "schema": schemas.field(&field),
                });
                if field.is_list() {
                    parameter["explode"] = Value::Bool(true);
                }
                out.push(parameter);
            }
        }
    }
}

fn operation(schemas: &mut Schemas, route: &Route, operation_id: String) -> Value {
    let method = &route.method;
    let descriptor = &method.descriptor;
    let input = descriptor.input();
    let output = descriptor.output();

    let mut parameters = Vec::new();
    let mut bound = BTreeSet::new();
    for var in route.template.variables() {
        bound.insert(var.field_path.clone());
        let schema = crate::routes::resolve_field_path(&input, &var.field_path)
            .map(|f| schemas.field(&f))
            .unwrap_or_else(|| json!({"type": "string"}));
        parameters.push(json!({"name": var.field_path, "in": "path", "required": true, "schema": schema}));
    }
    let mut request_body = None;
    match &route.body {
        BodyBinding::Whole => {
            let mut schema = schemas.message(&input);
            if !bound.is_empty() {
                schema = json!({"allOf": [schema], "description": format!("Path fields ({}) may be omitted.", bound.iter().cloned().collect::<Vec<_>>().join(", "))});
            }
            request_body = Some(json!({"required": true, "content": {"application/json": {"schema": schema}}}));
        }
        BodyBinding::Field(field) => {
            bound.insert(field.name().to_string());
            request_body =
                Some(json!({"required": true, "content": {"application/json": {"schema": schemas.field(field)}}}));
            query_parameters(schemas, &input, "", &bound, 0, &mut parameters);
        }
        BodyBinding::None => query_parameters(schemas, &input, "", &bound, 0, &mut parameters),
    }

    let success_schema = match &route.response_body {
        Some(field) => schemas.field(field),
        None => schemas.message(&output),
    };
    let mut responses = Map::new();
    let error = |code: &str| json!({"$ref": format!("#/components/responses/{code}")});
    if descriptor.is_server_streaming() {
        responses.insert(
            "200".into(),
            json!({
                "description": "A stream of server-sent events; each `data:` is one message as JSON.",
                "content": {"text/event-stream": {"schema": {"type": "string"}, "x-event-schema": success_schema}},
            }),
        );
        responses.insert("406".into(), error("NotAcceptable"));
    } else {
        match &route.success {
            Success::NoContent => {
                responses.insert("204".into(), json!({"description": "Done; no body."}));
            }
            Success::Redirect => {
                responses.insert(
                    "302".into(),
                    json!({"description": "A redirect.", "headers": {"Location": {"schema": {"type": "string"}}}}),
                );
            }
            Success::Created(_) => {
                responses.insert(
                    "201".into(),
                    json!({
                        "description": "Created.",
                        "headers": {"Location": {"description": "The URL of the new resource.", "schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": success_schema}},
                    }),
                );
            }
            Success::Ok => {
                responses.insert(
                    "200".into(),
                    json!({"description": "OK.", "content": {"application/json": {"schema": success_schema}}}),
                );
            }
        }
    }
    for (status, name) in [
        ("400", "BadRequest"),
        ("404", "NotFound"),
        ("429", "TooManyRequests"),
        ("500", "InternalError"),
        ("501", "NotImplemented"),
        ("503", "Unavailable"),
        ("504", "DeadlineExceeded"),
    ] {
        responses.insert(status.into(), error(name));
    }
    if !method.public {
        responses.insert("401".into(), error("Unauthenticated"));
    }
    responses.insert("403".into(), error("Forbidden"));
    responses.insert("409".into(), error("Conflict"));
    if route.body != BodyBinding::None {
        responses.insert("413".into(), error("PayloadTooLarge"));
        responses.insert("415".into(), error("UnsupportedMediaType"));
    }

    let service = descriptor.parent_service();
    let mut op = json!({
        "operationId": operation_id,
        "tags": [service.name()],
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(text) = method_comment(descriptor) {
        op["summary"] = Value::String(text.lines().next().unwrap_or_default().to_string());
        op["description"] = Value::String(text);
    }
    if let Some(body) = request_body {
        op["requestBody"] = body;
    }
    if method.public {
        op["security"] = json!([]);
    } else {
        let mut security = vec![json!({"bearerJwt": []})];
        if !method.api_key_denied {
            security.push(json!({"apiKey": []}));
        }
        op["security"] = Value::Array(security);
        if let Some(scope) = &method.scope {
            op["x-required-scope"] = Value::String(scope.clone());
        }
        if method.api_key_denied {
            op["x-api-key"] = Value::String("deny".into());
        }
    }
    op
}

fn error_response(description: &str, extra_headers: Option<Value>) -> Value {
    let mut response = json!({
        "description": description,
        "headers": {"X-Correlation-Id": {"$ref": "#/components/headers/X-Correlation-Id"}},
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ENVELOPE}")}}},
    });
    if let Some(Value::Object(extra)) = extra_headers
        && let Some(headers) = response["headers"].as_object_mut()
    {
        headers.extend(extra);
    }
    response
}

fn components(schemas: BTreeMap<String, Value>) -> Value {
    let mut schemas: Map<String, Value> = schemas.into_iter().collect();
    schemas.insert(
        ENVELOPE.into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message", "details", "metadata", "correlation_id", "timestamp"],
                "properties": {
                    "code": {"type": "string", "description": "Stable reason, e.g. VALIDATION_ERROR.", "example": "VALIDATION_ERROR"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {"field": {"type": "string", "description": "snake_case JSON path, e.g. line_items[2].quantity"}, "message": {"type": "string"}},
                    }},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "correlation_id": {"type": "string"},
                    "timestamp": {"type": "string", "format": "date-time"},
                },
            }},
        }),
    );
    let rate_headers = json!({
        "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
        "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
        "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
        "Retry-After": {"$ref": "#/components/headers/Retry-After"},
    });
    let retry = json!({"Retry-After": {"$ref": "#/components/headers/Retry-After"}});
    json!({
        "schemas": schemas,
        "responses": {
            "BadRequest": error_response("Invalid request (VALIDATION_ERROR, MALFORMED_JSON, OUT_OF_RANGE).", None),
            "Unauthenticated": error_response("Missing or invalid credential (UNAUTHENTICATED, TOKEN_EXPIRED, INVALID_TOKEN, INVALID_API_KEY).", Some(json!({"WWW-Authenticate": {"schema": {"type": "string"}}}))),
            "Forbidden": error_response("Not allowed (FORBIDDEN, SCOPE_MISSING, USER_TOKEN_REQUIRED, CSRF_FAILED).", None),
            "NotFound": error_response("Not found (NOT_FOUND, ROUTE_NOT_FOUND, MODULE_DISABLED).", None),
            "NotAcceptable": error_response("The Accept header excludes what this route produces.", None),
            "Conflict": error_response("A state conflict (FAILED_PRECONDITION, CONFLICT, ALREADY_EXISTS).", None),
            "PayloadTooLarge": error_response("The body exceeds the limit.", None),
            "UnsupportedMediaType": error_response("The body is not application/json.", None),
            "TooManyRequests": error_response("Rate limit exceeded (RATE_LIMIT_EXCEEDED).", Some(rate_headers)),
            "InternalError": error_response("An internal error occurred.", None),
            "NotImplemented": error_response("The backend does not implement this method (NOT_IMPLEMENTED).", None),
            "Unavailable": error_response("A service is unavailable; retry later.", Some(retry)),
            "DeadlineExceeded": error_response("The request did not complete within its deadline.", None),
        },
        "headers": {
            "X-Correlation-Id": {"description": "The request's correlation id.", "schema": {"type": "string"}},
            "X-RateLimit-Limit": {"description": "Requests allowed in the window of the tightest limiter.", "schema": {"type": "integer"}},
            "X-RateLimit-Remaining": {"description": "Requests left in that window.", "schema": {"type": "integer"}},
            "X-RateLimit-Reset": {"description": "Unix seconds at which that limiter is full again.", "schema": {"type": "integer"}},
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
        },
        "securitySchemes": {
            "bearerJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token issued by identity."},
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key, `tk_live_…`; it needs the operation's `x-required-scope`."},
        },
    })
}

fn own_routes(paths: &mut BTreeMap<String, Map<String, Value>>) {
    let simple = |id: &str, summary: &str, schema: Value| {
        json!({
            "operationId": id,
            "tags": ["Gateway"],
            "summary": summary,
            "security": [],
            "responses": {"200": {"description": "OK.", "content": {"application/json": {"schema": schema}}}},
        })
    };
    paths.entry("/healthz".into()).or_default().insert(
        "get".into(),
        simple("Gateway_Health", "Liveness", json!({"type": "object", "properties": {"status": {"type": "string"}}})),
    );
    let mut ready = simple(
        "Gateway_Ready",
        "Readiness: ready, degraded (Redis down) or not_ready (503)",
        json!({"type": "object", "properties": {"status": {"type": "string", "enum": ["ready", "degraded"]}, "checks": {"type": "object"}}}),
    );
    ready["responses"]["503"] = json!({"description": "Not ready."});
    paths.entry("/readyz".into()).or_default().insert("get".into(), ready);
    let mut openapi = simple("Gateway_OpenApi", "This document", json!({"type": "object"}));
    openapi["responses"]["304"] = json!({"description": "Not modified (If-None-Match)."});
    openapi["responses"]["429"] = json!({"$ref": "#/components/responses/TooManyRequests"});
    paths.entry("/openapi.json".into()).or_default().insert("get".into(), openapi);
}

/// The document for the routes of modules for which `enabled` holds.
pub fn document(routes: &RouteTable, enabled: impl Fn(&str) -> bool, server_url: &str) -> Value {
    let mut schemas = Schemas { done: BTreeMap::new(), pending: Vec::new() };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut bindings: BTreeMap<String, usize> = BTreeMap::new();
    let mut all: Vec<&std::sync::Arc<Route>> = routes.routes().filter(|r| enabled(&r.method.module)).collect();
    all.sort_by_key(|r| (r.method.path.clone(), r.template.as_str().to_string(), r.http_method.to_string()));
    for route in all {
        let service = route.method.descriptor.parent_service();
        let base = format!("{}_{}", service.name(), route.method.descriptor.name());
        let n = bindings.entry(base.clone()).or_insert(0);
        *n += 1;
        let id = if *n == 1 { base } else { format!("{base}_{n}") };
        let op = operation(&mut schemas, route, id);
        let verb = match route.http_method {
            Method::GET => "get",
            Method::POST => "post",
            Method::PUT => "put",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            Method::HEAD => "head",
            Method::OPTIONS => "options",
            _ => "x-custom",
        };
        let path = clean_path(route.template.as_str());
        paths.entry(path).or_default().insert(verb.to_string(), op);
    }
    own_routes(&mut paths);
    schemas.drain();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Trellis API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST/JSON transcoded from the gRPC contract. Errors use one envelope; see components.schemas.ErrorEnvelope.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": components(schemas.done),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_openapi_paths() {
        assert_eq!(clean_path("/api/v1/tasks/{task_id}"), "/api/v1/tasks/{task_id}");
        assert_eq!(clean_path("/api/v1/catalog/{section=**}"), "/api/v1/catalog/{section}");
        assert_eq!(clean_path("/v1/{name=projects/*/docs/*}:get"), "/v1/{name}:get");
    }

    #[test]
    fn operation_ids_are_unique_and_enums_short() {
        let table = RouteTable::build(crate::test_pool::pool()).expect("routes");
        let doc = document(&table, |_| true, "http://localhost:8080");
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                let id = op["operationId"].as_str().expect("id").to_string();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
        assert!(ids.contains("WidgetService_GetCatalog") && ids.contains("WidgetService_GetCatalog_2"));
        let status = &doc["components"]["schemas"]["trellis.widgets.v1.Widget"]["properties"]["status"];
        assert_eq!(status["enum"], json!(["active", "in_review", "retired"]));
        let weight = &doc["components"]["schemas"]["trellis.widgets.v1.Widget"]["properties"]["weight"];
        assert_eq!(weight["type"], "string", "int64 is a string");
    }

    #[test]
    fn disabled_modules_are_absent() {
        let table = RouteTable::build(crate::test_pool::pool()).expect("routes");
        let doc = document(&table, |m| m != "widgets", "http://localhost:8080");
        assert!(doc["paths"].get("/api/v1/widgets").is_none());
        assert!(doc["paths"].get("/.well-known/jwks.json").is_some());
    }
}
