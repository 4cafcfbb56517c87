//! The transcoder's untrusted-input entry point, shared by the cargo-fuzz target
//! (`gateway/fuzz`) and the proptest that replays its corpus in the normal suite.
//!
//! One input is a REST request reduced to what the transcoder reads: method, path, query string
//! and body. Whatever the bytes, the transcoder must answer with a message or an [`ApiError`]
//! of the 4xx family, and never panic.

use http::Method;
use prost_reflect::DynamicMessage;

use crate::errors::ApiError;
use crate::routes::{Lookup, RouteTable};
use crate::transcode::{self, Inbound};

/// A fuzz input split into its parts: `method \n path \n query \n body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// The JSON body (possibly empty).
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits raw fuzz bytes: the first three lines are method, path and query, the rest is the body.
    pub fn split(data: &'a [u8]) -> Option<Input<'a>> {
        let mut parts = data.splitn(4, |b| *b == b'\n');
        let method = std::str::from_utf8(parts.next()?).ok()?;
        let path = std::str::from_utf8(parts.next()?).ok()?;
        let query = std::str::from_utf8(parts.next()?).ok()?;
        let body = parts.next().unwrap_or_default();
        Some(Input { method, path, query, body })
    }
}

/// Route lookup, JSON parsing and request building, as the REST surface does them.
pub fn transcode(table: &RouteTable, input: &Input<'_>) -> Result<Option<DynamicMessage>, ApiError> {
    let Ok(method) = Method::from_bytes(input.method.as_bytes()) else { return Ok(None) };
    let (route, vars) = match table.find(&method, input.path) {
        Lookup::Found(route, vars) => (route.clone(), vars),
        Lookup::BadVariable(field, why) => return Err(ApiError::validation(field, why)),
        Lookup::MethodNotAllowed(_) | Lookup::NotFound => return Ok(None),
    };
    let body = if input.body.is_empty() { None } else { Some(transcode::parse_json(input.body)?) };
    let query = (!input.query.is_empty()).then_some(input.query);
    let message = transcode::request_message(&route, Inbound { body, path_vars: &vars, query })?;
    let json = transcode::message_to_json(&message);
    // The output side must hold too: whatever was built renders.
    let _ = serde_json::to_vec(&json);
    Ok(Some(message))
}

/// Runs one input and checks the invariant: a message, nothing, or a client error.
pub fn check(table: &RouteTable, data: &[u8]) {
    let Some(input) = Input::split(data) else { return };
    if let Err(error) = transcode(table, &input) {
        assert!(error.status.is_client_error(), "{input:?} gave {} {}", error.status, error.code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn table() -> &'static RouteTable {
        static TABLE: OnceLock<RouteTable> = OnceLock::new();
        TABLE.get_or_init(|| RouteTable::build(crate::test_pool::pool()).expect("routes"))
    }

    #[test]
    fn the_fuzz_corpus_transcodes_or_fails_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/transcode");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
            let data = std::fs::read(entry.expect("entry").path()).expect("a corpus file");
            check(table(), &data);
            seen += 1;
        }
        assert!(seen >= 5, "the corpus has its seeds");
        // The seeds exercise both outcomes.
        let create = Input::split(b"POST\n/api/v1/widgets\n\n{\"name\":\"A\",\"status\":\"active\"}").expect("input");
        assert!(transcode(table(), &create).expect("valid").is_some());
        let bad = Input::split(b"POST\n/api/v1/widgets\n\n{\"name\":").expect("input");
        assert_eq!(transcode(table(), &bad).expect_err("malformed").code, "MALFORMED_JSON");
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let names = prop::sample::select(vec![
            "name",
            "status",
            "weight",
            "tags",
            "dimensions",
            "width",
            "due_at",
            "price",
            "amount",
            "currency_code",
            "labels",
            "parts",
            "quantity",
            "ttl",
            "attributes",
            "priority",
            "note",
            "widget",
            "update_mask",
            "id",
            "bogus",
            "ownerUserId",
            "owner_team_id",
            "blob",
        ]);
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)),
            "[a-zA-Z0-9_ .:,\\-]{0,12}".prop_map(serde_json::Value::from),
            prop::sample::select(vec![
                "active",
                "IN_REVIEW",
                "WIDGET_STATUS_RETIRED",
                "1.5s",
                "2025-03-30T12:00:00Z",
                "2025-01-01",
                "AAEC"
            ])
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(names.clone(), inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE", "PUT"]);
        let path = prop::sample::select(vec![
            "/api/v1/widgets",
            "/api/v1/widgets/w1",
            "/api/v1/widgets/w%2F1",
            "/api/v1/widgets/%FF",
            "/api/v1/widgets/w1:archive",
            "/api/v1/widgets/kinds",
            "/api/v1/catalog/a/b",
            "/api/v1/widgets/events",
            "/api/v1/tasks",
        ]);
        let key = prop::sample::select(vec![
            "page_size",
            "filter.status",
            "filter.name_prefix",
            "statuses",
            "ids",
            "since",
            "update_mask",
            "include_retired",
            "_cb",
            "bogus",
            "widget.name",
            "count",
            "last_event_id",
            "",
        ]);
        let value = "[a-zA-Z0-9_%,.:+\\-]{0,10}";
        let query = prop::collection::vec((key, value), 0..5)
            .prop_map(|pairs| pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        let body = prop_oneof![
            Just(Vec::new()),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            prop::collection::vec(any::<u8>(), 0..64),
        ];
        (method, path, query, body).prop_map(|(m, p, q, b)| {
            let mut data = format!("{m}\n{p}\n{q}\n").into_bytes();
            data.extend(b);
            data
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_requests_transcode_or_fail_with_a_client_error(data in request()) {
            check(table(), &data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
            check(table(), &data);
        }
    }
}
