//! RabbitMQ going away delays events; it never loses or duplicates their effect.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use trellis_kit::testing::{FaultProxy, TestEnv};
use uuid::Uuid;

use prost::Message;

use super::{EVENT_TYPE, Harness, Recorder, Thing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_staged_while_rabbitmq_is_down_are_delivered_exactly_once_when_it_returns() {
    let proxy = FaultProxy::in_front_of(&TestEnv::get().amqp_url).await;
    let mut config = Harness::config().await;
    config.amqp_url = proxy.url();
    // Slow enough that a second outage lands while the backlog is being handled.
    let h = Harness::start(config, Recorder::slowed_by(Duration::from_millis(25))).await;
    let mut expected = vec![h.stage("before").await];
    h.wait_for_effects(1, Duration::from_secs(30)).await;

    proxy.cut();
    for i in 0..20 {
        // Staging does not touch the broker: the business transaction commits regardless.
        expected.push(h.stage(&format!("during-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.unsent().await, 20, "the relay keeps every row while the broker is unreachable");
    assert_eq!(h.effect_count().await, 1);

    proxy.restore();
    for i in 0..20 {
        expected.push(h.stage(&format!("after-{i}")).await);
    }
    // Cut again in the middle of the backlog: deliveries whose effect committed but whose ack was
    // lost come back, and the inbox must absorb them.
    h.wait_for_effects(10, Duration::from_secs(30)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    h.wait_for_effects(expected.len(), Duration::from_secs(60)).await;
    assert_eq!(h.unsent().await, 0);
    // Redeliveries after the second outage would arrive now, if they were going to count twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let effects: Vec<Uuid> = h.effects().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(effects.len(), expected.len(), "no event lost, none handled twice");
    assert_eq!(effects.iter().collect::<HashSet<_>>(), expected.iter().collect::<HashSet<_>>());
    assert_eq!(h.inbox().await, expected.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_has_no_second_effect() {
    let h = Harness::start(Harness::config().await, Recorder::default()).await;
    let first = h.stage("once").await;
    h.wait_for_effects(1, Duration::from_secs(30)).await;

    // The same envelope twice more, as a publisher retry or an operator's replay would send it.
    let body = h.envelope_bytes(first).await;
    h.broker.publish(h.bus().exchange(), EVENT_TYPE, &body).await;
    h.broker.publish(h.bus().exchange(), EVENT_TYPE, &body).await;
    // The consumer handles its queue in order: once the next event has an effect, the duplicates
    // ahead of it were seen.
    let next = h.stage("next").await;
    h.wait_for_effects(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let effects: Vec<Uuid> = h.effects().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(effects, vec![first, next]);
    assert_eq!(h.recorder.calls_of("once").len(), 1, "the handler never saw the duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_consumers_stop_promptly_even_while_rabbitmq_is_down() {
    let proxy = FaultProxy::in_front_of(&TestEnv::get().amqp_url).await;
    let mut config = Harness::config().await;
    config.amqp_url = proxy.url();
    config.shutdown_grace = Duration::from_secs(10);
    let mut h = Harness::start(config, Recorder::default()).await;
    proxy.cut();
    h.stage("stuck").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let running = h.cell.running.remove("evtest").expect("evtest is running");
    let started = Instant::now();
    h.cell.shutdown.cancel();
    // Well within the grace period: nothing waits for the broker to come back.
    tokio::time::timeout(Duration::from_secs(5), running.handle)
        .await
        .unwrap_or_else(|_| panic!("still running {:?} after shutdown", started.elapsed()))
        .expect("join")
        .expect("clean stop");
    assert_eq!(h.unsent().await, 1, "the unpublished event waits in the outbox for the next start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_holds_events_without_spending_their_deliveries() {
    let mut config = Harness::config().await;
    let proxy = FaultProxy::in_front_of(&config.database_url).await;
    config.database_url = proxy.url();
    // One failed delivery would already dead-letter: database failures must not count as one.
    config.events_max_deliveries = 2;
    let h = Harness::start(config, Recorder::default()).await;
    let mut expected = vec![h.stage("before").await];
    h.wait_for_effects(1, Duration::from_secs(30)).await;

    proxy.cut();
    // Events keep arriving from other modules while this one's database is unreachable.
    let ctx = h.ctx();
    for i in 0..5 {
        let envelope = trellis_kit::events::envelope(&ctx, h.org, EVENT_TYPE, &Thing { label: format!("held-{i}") });
        expected.push(envelope.id.parse().expect("uuid"));
        h.broker.publish(h.bus().exchange(), EVENT_TYPE, &envelope.encode_to_vec()).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();

    h.wait_for_effects(6, Duration::from_secs(60)).await;
    // The relay came through the outage too.
    expected.push(h.stage("after").await);
    h.wait_for_effects(7, Duration::from_secs(30)).await;
    let effects: Vec<Uuid> = h.effects().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(effects, expected, "every event handled once, in order");
    let dlq = trellis_kit::events::dead_letter_queue(&h.bus(), super::QUEUE);
    assert!(h.broker.drain(&dlq).await.is_empty(), "nothing was dead-lettered");
}
