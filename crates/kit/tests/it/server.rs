//! The gRPC server every module runs (`kit::grpc::launch`): health, reflection, the request
//! context, metrics on the admin port, and graceful shutdown that lets in-flight calls finish.

use std::time::Duration;

use sqlx::migrate::Migrator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trellis_kit::testing::TestCell;
use trellis_kit::{Module, RequestContext, Service, Subject};
use trellis_proto::trellis::notifications::v1::notification_service_client::NotificationServiceClient;
use trellis_proto::trellis::notifications::v1::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use trellis_proto::trellis::notifications::v1::{ListNotificationsRequest, ListNotificationsResponse};
use uuid::Uuid;

static MIGRATOR: Migrator = sqlx::migrate!("tests/it/migrations");

const SERVICE: &str = "trellis.notifications.v1.NotificationService";

/// Echoes what the server layer attached to the request: the subject's user id and the
/// correlation id. A page size of 99 makes the call slow (for the shutdown test).
#[derive(Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl NotificationService for Echo {
    async fn list_notifications(
        &self,
        request: tonic::Request<ListNotificationsRequest>,
    ) -> Result<tonic::Response<ListNotificationsResponse>, tonic::Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        if request.get_ref().page_size == 99 {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        let user = match ctx.subject {
            Subject::User(id) => id.to_string(),
            other => format!("{other:?}"),
        };
        Ok(tonic::Response::new(ListNotificationsResponse {
            notifications: Vec::new(),
            next_page_token: format!(
                "{user}|{}|{}",
                ctx.org_id.map(|o| o.to_string()).unwrap_or_default(),
                ctx.correlation_id
            ),
            total_size: 0,
        }))
    }
}

async fn cell() -> TestCell {
    // The schema name must be a service-like identifier; the events tests' migrations are reused.
    let module = Module::new("evtest", &MIGRATOR, |_runtime| {
        Box::pin(async { Ok(Service::new().grpc(NotificationServiceServer::new(Echo))) })
    });
    TestCell::start(vec![module]).await
}

fn with_token(token: &str, correlation: Option<&str>) -> tonic::Request<ListNotificationsRequest> {
    let mut request = tonic::Request::new(ListNotificationsRequest::default());
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    if let Some(c) = correlation {
        request.metadata_mut().insert("x-correlation-id", c.parse().expect("metadata"));
    }
    request
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect admin port");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_service_as_serving() {
    let cell = cell().await;
    let mut health = HealthClient::new(cell.channel("evtest").await);
    for service in ["", SERVICE] {
        let status = health
            .check(HealthCheckRequest { service: service.to_string() })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.v1.Nothing".into() }).await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_a_valid_token_and_carry_its_context() {
    let cell = cell().await;
    let mut client = NotificationServiceClient::new(cell.channel("evtest").await);

    let anonymous = client.list_notifications(ListNotificationsRequest::default()).await;
    assert_eq!(anonymous.expect_err("no credential").code(), Code::Unauthenticated);
    let forged = client.list_notifications(with_token("not.a.token", None)).await;
    assert_eq!(forged.expect_err("bad credential").code(), Code::Unauthenticated);

    let (user, org) = (Uuid::now_v7(), Uuid::now_v7());
    let echoed = client
        .list_notifications(with_token(&cell.token(user, org), Some("corr-123")))
        .await
        .expect("authenticated call")
        .into_inner()
        .next_page_token;
    assert_eq!(echoed, format!("{user}|{org}|corr-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_health_readiness_and_rpc_metrics() {
    let cell = cell().await;
    let mut client = NotificationServiceClient::new(cell.channel("evtest").await);
    let _ = client.list_notifications(ListNotificationsRequest::default()).await;
    let admin = cell.running["evtest"].admin_addr;

    assert_eq!(http_get(admin, "/healthz").await, (200, r#"{"status":"ok"}"#.to_string()));
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("trellis_grpc_server_requests_total{")
                && l.contains(&format!("method=\"/{SERVICE}/ListNotifications\""))
                && l.contains("code=\"UNAUTHENTICATED\"")
        })
        .unwrap_or_else(|| panic!("no RED metric for the rejected call in:\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a counter value");
    assert!(count >= 1.0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_calls_finish_then_stops() {
    let mut cell = cell().await;
    let mut client = NotificationServiceClient::new(cell.channel("evtest").await);
    let token = cell.token(Uuid::now_v7(), Uuid::now_v7());
    let mut slow = with_token(&token, None);
    slow.get_mut().page_size = 99;
    let in_flight = tokio::spawn(async move { client.list_notifications(slow).await });

    tokio::time::sleep(Duration::from_millis(200)).await;
    cell.shutdown.cancel();
    let answered = in_flight.await.expect("join");
    assert!(answered.is_ok(), "the in-flight call completes during the drain: {answered:?}");

    let running = cell.running.remove("evtest").expect("running");
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.handle).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the module stops cleanly: {stopped:?}");
    assert!(tokio::net::TcpStream::connect(running.grpc_addr).await.is_err(), "the port is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_and_describes_the_contract() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cell = cell().await;
    let mut client = ServerReflectionClient::new(cell.channel("evtest").await);
    let requests =
        [MessageRequest::ListServices(String::new()), MessageRequest::FileContainingSymbol(SERVICE.to_string())]
            .map(|m| ServerReflectionRequest { host: String::new(), message_request: Some(m) });
    let mut responses =
        client.server_reflection_info(tokio_stream::iter(requests)).await.expect("reflection stream").into_inner();

    let listed = responses.message().await.expect("a response").expect("list services");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected response {listed:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == SERVICE), "{names:?}");

    let described = responses.message().await.expect("a response").expect("file of the service");
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("unexpected response {described:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
