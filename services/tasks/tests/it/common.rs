//! Shared helpers: a cell serving the tasks module, tokens, clients, error details.

use prost::Message;
use tonic::Request;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::tasks::v1::board_service_client::BoardServiceClient;
use trellis_proto::trellis::tasks::v1::task_service_client::TaskServiceClient;
use trellis_proto::trellis::tasks::v1::{Board, CreateBoardRequest, CreateTaskRequest, Task};
use uuid::Uuid;

/// A cell running the tasks module on a fresh database.
pub async fn cell() -> TestCell {
    TestCell::start(vec![trellis_tasks::module_with(trellis_tasks::AccessMode::OrgRoles)]).await
}

/// An access token of `user` in `org`, signed by a key the cell trusts.
pub fn token_for(cell: &TestCell, user: Uuid, org: Uuid) -> String {
    cell.token(user, org)
}

/// A request carrying `token` as its bearer credential.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap_or_else(|e| panic!("token is not a header value: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

/// A user of an organization, with a client that calls as them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Uuid,
    pub org: Uuid,
    pub token: String,
    pub client: TaskServiceClient<Channel>,
    pub boards: BoardServiceClient<Channel>,
}

impl Caller {
    /// A new user in a new organization.
    pub async fn new(cell: &TestCell) -> Caller {
        Caller::in_org(cell, Uuid::now_v7()).await
    }

    /// A new user in `org`.
    pub async fn in_org(cell: &TestCell, org: Uuid) -> Caller {
        let user = Uuid::now_v7();
        Caller {
            user,
            org,
            token: token_for(cell, user, org),
            client: TaskServiceClient::new(cell.channel("tasks").await),
            boards: BoardServiceClient::new(cell.channel("tasks").await),
        }
    }

    /// Wraps a message with this caller's token.
    pub fn req<T>(&self, message: T) -> Request<T> {
        authed(message, &self.token)
    }

    /// Creates a task on the default board.
    pub async fn create(&mut self, title: &str) -> Task {
        let request = self.req(CreateTaskRequest { title: title.to_string(), ..Default::default() });
        self.client
            .create_task(request)
            .await
            .unwrap_or_else(|s| panic!("create {title:?}: {s:?}"))
            .into_inner()
            .task
            .unwrap_or_else(|| panic!("create {title:?} returned no task"))
    }
}

impl Caller {
    /// Creates a board with the default columns.
    pub async fn board(&mut self, name: &str, key: &str) -> Board {
        let request =
            self.req(CreateBoardRequest { name: name.to_string(), key: key.to_string(), ..Default::default() });
        self.boards
            .create_board(request)
            .await
            .unwrap_or_else(|s| panic!("create board {key}: {s:?}"))
            .into_inner()
            .board
            .unwrap_or_else(|| panic!("create board {key} returned no board"))
    }

    /// Creates a task in a column of a board.
    pub async fn task_in(&mut self, board: &Board, column: usize, title: &str) -> Task {
        let request = self.req(CreateTaskRequest {
            title: title.to_string(),
            board_id: board.id.clone(),
            column_id: board.columns[column].id.clone(),
            ..Default::default()
        });
        self.client
            .create_task(request)
            .await
            .unwrap_or_else(|s| panic!("create {title:?}: {s:?}"))
            .into_inner()
            .task
            .unwrap_or_else(|| panic!("create {title:?} returned no task"))
    }
}

/// The routing keys staged in the outbox, oldest first.
pub async fn event_types(cell: &TestCell) -> Vec<String> {
    outbox(cell).await.into_iter().map(|e| e.r#type).collect()
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

/// An ErrorInfo metadata entry of a status.
pub fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    status.get_error_details().error_info().and_then(|i| i.metadata.get(key).cloned())
}

/// The fields named by a status's BadRequest violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The envelopes staged in the tasks outbox, oldest first (read as the owner, across tenants).
pub async fn outbox(cell: &TestCell) -> Vec<Envelope> {
    let pool = cell.owner_pool().await;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("select envelope from tasks.outbox order by created_at, id")
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("reading the outbox: {e}"));
    rows.iter().map(|b| Envelope::decode(b.as_slice()).unwrap_or_else(|e| panic!("outbox envelope: {e}"))).collect()
}

/// The configuration of a cell whose services and scheduled jobs read time from `clock`, with
/// the scheduler polling every 50 ms so that moving the clock takes effect at once.
pub async fn clocked_config(clock: &trellis_kit::jobs::TestClock) -> trellis_kit::config::Config {
    let mut config = trellis_kit::testing::test_config(&trellis_kit::testing::TestEnv::get()).await;
    config.clock = clock.clone().into();
    config.jobs_poll_interval = std::time::Duration::from_millis(50);
    config
}

/// A cell running the tasks module with `config` (a second call with the same configuration is
/// a second replica on the same database and exchange).
pub async fn cell_with(config: &trellis_kit::config::Config) -> TestCell {
    TestCell::start_with(config.clone(), vec![trellis_tasks::module_with(trellis_tasks::AccessMode::OrgRoles)]).await
}
