//! The event machinery end to end: a module `evtest` whose handler writes one `effects` row per
//! event, served by `TestCell` exactly as `trellis serve` serves a module (its relay and consumer
//! spawned by `grpc::launch`), with events staged through `events::stage` in tenant transactions.

mod delivery;
mod outage;
mod poison;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use trellis_kit::config::Config;
use trellis_kit::db::{Db, Tx};
use trellis_kit::events::{self, Consumer, Event, EventBus, Handler};
use trellis_kit::testing::{TestCell, TestEnv, wait_until};
use trellis_kit::{Error, Module, RequestContext, Result, Service};
use uuid::Uuid;

static MIGRATOR: Migrator = sqlx::migrate!("tests/it/migrations");

/// The module under test and its consumer's queue (without the cell prefix).
const MODULE: &str = "evtest";
const QUEUE: &str = "evtest.effects";
const EVENT_TYPE: &str = "evtest.thing.happened";

/// The payload of every test event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Thing {
    /// Names the event in assertions; the handler fails for labels it was told are poison.
    #[prost(string, tag = "1")]
    pub label: String,
}

impl prost::Name for Thing {
    const NAME: &'static str = "Thing";
    const PACKAGE: &'static str = "trellis.evtest.v1";
}

/// The test handler: writes an effect row, then fails if the label is poison (so a failure must
/// roll the effect back), and remembers every call.
#[derive(Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
    poison: Arc<Mutex<HashSet<String>>>,
    delay: Duration,
}

impl Recorder {
    fn failing_for(labels: &[&str]) -> Self {
        Self { poison: Arc::new(Mutex::new(labels.iter().map(|l| l.to_string()).collect())), ..Self::default() }
    }

    /// The cause of a failure is fixed: `label` succeeds from now on.
    fn heal(&self, label: &str) {
        self.poison.lock().unwrap_or_else(|p| p.into_inner()).remove(label);
    }

    fn slowed_by(delay: Duration) -> Self {
        Self { delay, ..Self::default() }
    }

    /// Every handler call so far: (label, when).
    fn calls(&self) -> Vec<(String, Instant)> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn calls_of(&self, label: &str) -> Vec<Instant> {
        self.calls().into_iter().filter(|(l, _)| l == label).map(|(_, at)| at).collect()
    }
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let thing: Thing = event.payload()?;
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).push((thing.label.clone(), Instant::now()));
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            // No org filter: row-level security scopes the insert to the event's org.
            sqlx::query("insert into effects (org_id, event_id, event_type, label) values ($1, $2, $3, $4)")
                .bind(event.org_id)
                .bind(event.id)
                .bind(&event.envelope.r#type)
                .bind(&thing.label)
                .execute(&mut **tx)
                .await?;
            if self.poison.lock().unwrap_or_else(|p| p.into_inner()).contains(&thing.label) {
                return Err(Error::failed_precondition("POISON", format!("{} always fails", thing.label)));
            }
            Ok(())
        })
    }
}

/// A running `evtest` module with handles on its database and on the broker.
pub struct Harness {
    pub cell: TestCell,
    /// The module's pool (its own role, RLS applies), for staging events.
    pub db: Db,
    /// The owner's pool, for assertions on raw rows.
    pub owner: PgPool,
    pub recorder: Recorder,
    pub org: Uuid,
    pub broker: Broker,
}

impl Harness {
    /// The test configuration (fresh database, own exchange and queue prefix).
    pub async fn config() -> Config {
        trellis_kit::testing::test_config(&TestEnv::get()).await
    }

    /// Migrates and starts `evtest` with `recorder` as its handler, and waits until its consumer
    /// is bound (events published earlier would be routed to no queue).
    pub async fn start(config: Config, recorder: Recorder) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let handler = recorder.clone();
        let module = Module::new(MODULE, &MIGRATOR, move |_runtime| {
            Box::pin(async move { Ok(Service::new().consumer(Consumer::new(QUEUE, &["evtest.thing.*"], handler))) })
        });
        let cell = TestCell::start_with(config, vec![module]).await;
        let db = Db::connect(MODULE, &cell.config.db()).await.expect("connect as evtest_svc");
        let owner = cell.owner_pool().await;
        let broker = Broker::connect(&TestEnv::get().amqp_url).await;
        let harness = Harness { cell, db, owner, recorder, org: Uuid::now_v7(), broker };
        let queue = harness.queue();
        let broker = &harness.broker;
        wait_until(Duration::from_secs(30), || async { broker.consumers(&queue).await >= 1 }).await;
        harness
    }

    pub fn bus(&self) -> EventBus {
        EventBus::new(self.cell.config.clone())
    }

    /// The consumer's queue with the cell prefix.
    pub fn queue(&self) -> String {
        events::queue_name(&self.bus(), QUEUE)
    }

    /// A user of the test org.
    pub fn ctx(&self) -> RequestContext {
        RequestContext::user(Uuid::now_v7(), self.org)
    }

    /// Stages one event in a transaction of its own and commits it.
    pub async fn stage(&self, label: &str) -> Uuid {
        let ctx = self.ctx();
        let mut tx = self.db.tenant_tx(&ctx).await.expect("tenant tx");
        let id = events::stage(&mut tx, &ctx, EVENT_TYPE, &Thing { label: label.to_string() }).await.expect("stage");
        tx.commit().await.expect("commit");
        id
    }

    /// The effects in the order the handler committed them: (event id, label).
    pub async fn effects(&self) -> Vec<(Uuid, String)> {
        sqlx::query_as("select event_id, label from evtest.effects order by seq")
            .fetch_all(&self.owner)
            .await
            .expect("read effects")
    }

    pub async fn effect_count(&self) -> usize {
        self.effects().await.len()
    }

    /// Waits until the handler has committed `n` effects.
    pub async fn wait_for_effects(&self, n: usize, timeout: Duration) {
        wait_until(timeout, || async { self.effect_count().await >= n }).await;
    }

    /// Outbox rows not yet confirmed by the broker.
    pub async fn unsent(&self) -> i64 {
        sqlx::query_scalar("select count(*) from evtest.outbox where sent_at is null")
            .fetch_one(&self.owner)
            .await
            .expect("count unsent")
    }

    /// Events recorded in the consumer's inbox.
    pub async fn inbox(&self) -> i64 {
        sqlx::query_scalar("select count(*) from evtest.inbox where consumer = $1")
            .bind(QUEUE)
            .fetch_one(&self.owner)
            .await
            .expect("count inbox")
    }

    /// The staged envelope of an event, as the relay publishes it.
    pub async fn envelope_bytes(&self, id: Uuid) -> Vec<u8> {
        sqlx::query_scalar("select envelope from evtest.outbox where id = $1")
            .bind(id)
            .fetch_one(&self.owner)
            .await
            .expect("read envelope")
    }
}

/// A direct connection to RabbitMQ (never through a fault proxy), to look at queues and publish
/// messages the relay would not.
pub struct Broker {
    connection: Connection,
    channel: Channel,
}

impl Broker {
    pub async fn connect(url: &str) -> Broker {
        let properties = ConnectionProperties::default();
        let connection = Connection::connect(url, properties).await.expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel.confirm_select(Default::default()).await.expect("confirm mode");
        Broker { connection, channel }
    }

    /// Consumers on `queue`, 0 when it does not exist yet.
    pub async fn consumers(&self, queue: &str) -> u32 {
        // A passive declare of a missing queue closes its channel: use a channel per question.
        let Ok(channel) = self.connection.create_channel().await else { return 0 };
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let count = match channel.queue_declare(queue.into(), options, FieldTable::default()).await {
            Ok(q) => q.consumer_count(),
            Err(_) => 0,
        };
        let _ = channel.close(200, "done".into()).await;
        count
    }

    /// Declares a queue of our own bound to every event of `exchange`, to see raw messages.
    pub async fn tap(&self, exchange: &str) -> String {
        let queue = format!("tap.{}", Uuid::now_v7().simple());
        let options = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
        self.channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        self.channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.expect("declare tap");
        self.channel
            .queue_bind(queue.as_str().into(), exchange.into(), "#".into(), Default::default(), FieldTable::default())
            .await
            .expect("bind tap");
        queue
    }

    /// Takes every message currently in `queue`.
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(message) =
            self.channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic.get")
        {
            message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
            out.push(message.delivery);
        }
        out
    }

    /// Waits until `queue` holds messages and takes them; panics after `timeout`.
    pub async fn wait_for_messages(&self, queue: &str, timeout: Duration) -> Vec<lapin::message::Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.drain(queue).await;
            if !messages.is_empty() {
                return messages;
            }
            assert!(Instant::now() < deadline, "no message in {queue} after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes `body` to `exchange` as the relay would, and waits for the broker's confirm.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }
}
