//! `/openapi.json` (Rule 52): valid OpenAPI 3.1 by a third-party validator, cacheable, one
//! operation per HTTP binding of the enabled modules, and every route answers as documented.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::Harness;

async fn fetch(h: &Harness) -> (reqwest::header::HeaderMap, Value) {
    let r = h.http.get(h.url("/openapi.json")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    (headers, r.json().await.expect("json"))
}

/// Runs the PyPI `openapi-spec-validator` (pinned in `tests/openapi/requirements.txt`) on
/// `document`. When the package is missing it is installed with pip once; without network, set
/// `PIP_FIND_LINKS` to a directory holding the wheels (`pip download -r requirements.txt`).
fn validate_with_openapi_spec_validator(document: &Value) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi");
    let importable =
        || Command::new("python3").args(["-c", "import openapi_spec_validator"]).status().is_ok_and(|s| s.success());
    if !importable() {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(dir.join("requirements.txt"))
            .status()
            .expect("python3 -m pip");
        assert!(status.success() && importable(), "installing openapi-spec-validator failed");
    }
    let mut child = Command::new("python3")
        .arg(dir.join("validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(document).expect("json"))
        .expect("write the document");
    let out = child.wait_with_output().expect("validator output");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_cacheable() {
    let h = Harness::start().await;
    let (headers, doc) = fetch(&h).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(validate_with_openapi_spec_validator(&doc), "valid OpenAPIV3.1");
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let etag = headers["etag"].to_str().expect("ascii").to_string();
    let r = h.http.get(h.url("/openapi.json")).header("if-none-match", &etag).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], etag.as_str());
    // Deterministic: the same bytes from another gateway over the same contract.
    let other = Harness::start().await;
    assert_eq!(fetch(&other).await.0["etag"], etag.as_str());
}

#[tokio::test]
async fn it_documents_schemas_errors_security_and_scopes() {
    let h = Harness::start().await;
    let (_, doc) = fetch(&h).await;
    let create = &doc["paths"]["/api/v1/widgets"]["post"];
    assert_eq!(create["operationId"], "WidgetService_CreateWidget");
    assert_eq!(create["x-required-scope"], "widgets:write");
    assert_eq!(create["security"], json!([{"bearerJwt": []}, {"apiKey": []}]));
    assert!(create["responses"]["201"]["headers"]["Location"].is_object());
    assert_eq!(create["responses"]["429"]["$ref"], "#/components/responses/TooManyRequests");
    let too_many = &doc["components"]["responses"]["TooManyRequests"];
    for header in ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"] {
        assert!(too_many["headers"][header].is_object(), "{header}");
    }
    assert_eq!(too_many["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorEnvelope");
    assert_eq!(doc["paths"]["/api/v1/widget-prefs"]["get"]["security"], json!([{"bearerJwt": []}]));
    assert_eq!(doc["paths"]["/api/v1/echo"]["post"]["security"], json!([]), "public");
    let get = &doc["paths"]["/api/v1/widgets/{widget_id}"]["get"];
    assert_eq!(
        get["parameters"][0],
        json!({"name": "widget_id", "in": "path", "required": true, "schema": {"type": "string"}})
    );
    assert_eq!(get["summary"], "Returns a widget. `missing` → NOT_FOUND, `boom` → INTERNAL, `slow` sleeps 2 s.");
    let list = &doc["paths"]["/api/v1/widgets"]["get"]["parameters"];
    let names: Vec<&str> = list.as_array().expect("params").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"filter.status") && names.contains(&"statuses") && names.contains(&"since"), "{names:?}");
    let widget = &doc["components"]["schemas"]["trellis.widgets.v1.Widget"]["properties"];
    assert_eq!(widget["created_at"], json!({"type": "string", "format": "date-time"}));
    assert_eq!(widget["status"]["enum"], json!(["active", "in_review", "retired"]));
    assert_eq!(widget["price"]["$ref"], "#/components/schemas/trellis.common.v1.Money");
    let watch = &doc["paths"]["/api/v1/widgets:watch"]["get"]["responses"]["200"]["content"];
    assert!(watch["text/event-stream"].is_object(), "server streaming is documented as SSE");
    let jwks = doc["paths"]["/.well-known/jwks.json"]["get"]["summary"].as_str().unwrap_or_default();
    assert!(jwks.starts_with("Returns the public keys"), "contract comments become descriptions: {jwks:?}");
    let security = &doc["components"]["securitySchemes"];
    assert_eq!(security["bearerJwt"]["scheme"], "bearer");
    assert_eq!(security["apiKey"]["scheme"], "bearer");
}

#[tokio::test]
async fn disabled_modules_are_absent_from_the_document() {
    let h = Harness::start_with(|s| s.modules = vec!["identity".into()]).await;
    let (_, doc) = fetch(&h).await;
    assert!(doc["paths"].get("/api/v1/widgets").is_none());
    assert!(doc["paths"].get("/api/v1/tasks").is_none());
    assert!(doc["paths"].get("/.well-known/jwks.json").is_some());
}

#[tokio::test]
async fn anonymous_requests_for_the_document_are_rate_limited() {
    // Its own client IP (through a trusted proxy): the other tests share 127.0.0.1 in one Redis.
    let h = Harness::start_with(|s| {
        s.edge.rate_limit_anonymous = "2/15m".parse().expect("limit");
        s.edge.trusted_proxies = vec![trellis_gateway::http::Cidr::parse("127.0.0.1").expect("cidr")];
    })
    .await;
    let ip = format!("198.51.100.{}", rand::random::<u8>());
    let get = || h.http.get(h.url("/openapi.json")).header("x-forwarded-for", ip.as_str()).send();
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let r = get().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
        remaining.push(r.headers()["x-ratelimit-remaining"].to_str().expect("ascii").to_string());
    }
    assert_eq!(remaining, ["1", "0"]);
    let r = get().await.expect("request");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "RATE_LIMIT_EXCEEDED");
}

/// Resolves a `$ref` to the component it names.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
        Some(path) => path.split('/').fold(doc, |node, key| &node[key]),
        None => schema,
    }
}

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let h = Harness::start().await;
    let (_, doc) = fetch(&h).await;
    let token = h.token();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (verb, op) in item.as_object().expect("path item") {
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            let streams = responses.get("200").is_some_and(|r| r["content"].get("text/event-stream").is_some());
            let mut url = path.clone();
            for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
                let name = p["name"].as_str().expect("name");
                url = url.replace(&format!("{{{name}}}"), "w1");
            }
            let method = reqwest::Method::from_bytes(verb.to_uppercase().as_bytes()).expect("method");
            let mut request = h.http.request(method, h.url(&url)).bearer_auth(&token);
            if op.get("requestBody").is_some() {
                request = request.json(&json!({}));
            }
            if streams {
                request = request.header("accept", "application/json");
            }
            let r = request.send().await.expect("request");
            let status = r.status().as_u16().to_string();
            assert!(
                responses.contains_key(&status),
                "{verb} {path} answered {status}, which is not documented ({:?})",
                responses.keys().collect::<Vec<_>>()
            );
            let documented = &responses[&status];
            let is_json = documented["content"].get("application/json").is_some()
                || resolve(&doc, documented)["content"].get("application/json").is_some();
            if is_json {
                let content_type = r.headers()["content-type"].to_str().expect("ascii").to_string();
                assert!(content_type.starts_with("application/json"), "{verb} {path}: {content_type}");
                let body: Value = r.json().await.expect("json body");
                let schema = documented["content"]["application/json"]["schema"].clone();
                let schema = if schema.is_null() {
                    resolve(&doc, documented)["content"]["application/json"]["schema"].clone()
                } else {
                    schema
                };
                if let Some(properties) = resolve(&doc, &schema)["properties"].as_object() {
                    for key in body.as_object().expect("an object").keys() {
                        assert!(properties.contains_key(key), "{verb} {path} {status}: undocumented property {key}");
                    }
                }
            }
        }
    }
    let bindings = trellis_gateway::routes::RouteTable::build(crate::pool::pool()).expect("routes").len();
    assert_eq!(operations, bindings + 3, "one operation per HTTP binding, plus /healthz, /readyz, /openapi.json");
}
