//! Kit's start-up wiring of service principals: every module's runtime carries a permissions
//! client acting as `service:<module>`, and a module's `schema.zed` is registered with the
//! permissions service at start-up (in the background; readiness does not wait).

use std::time::Duration;

use trellis_kit::testing::{TestCell, wait_until};
use trellis_kit::{Module, Service};
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::schema_service_client::SchemaServiceClient;

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// A module with nothing but a schema of its own.
fn widgets() -> Module {
    Module::new("widgets", &NO_MIGRATIONS, |_| Box::pin(async { Ok(Service::new()) }))
        .with_schema("definition test_widget {\n  relation parent: test_widget\n}\n")
}

#[tokio::test]
async fn a_modules_schema_is_registered_with_permissions_at_start_up() {
    let cell = TestCell::start(vec![
        trellis::module("identity").expect("identity"),
        trellis::module("permissions").expect("permissions"),
        widgets(),
    ])
    .await;
    let mut schemas = SchemaServiceClient::new(cell.channel("permissions").await);
    let token = cell.keys.service_token(&cell.config, "widgets", None);
    wait_until(Duration::from_secs(20), || {
        let mut schemas = schemas.clone();
        let token = token.clone();
        async move {
            let mut request = tonic::Request::new(pb::ReadSchemaRequest { module: "widgets".into() });
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
            schemas.read_schema(request).await.is_ok_and(|r| r.into_inner().schema.contains("definition test_widget"))
        }
    })
    .await;
    let mut request = tonic::Request::new(pb::ReadSchemaRequest { module: String::new() });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let merged = schemas.read_schema(request).await.expect("merged schema").into_inner().schema;
    assert!(merged.contains("test_widget"), "{merged}");
}
