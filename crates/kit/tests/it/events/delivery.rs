//! Staged events reach consumers once, in order, and only when their transaction commits.

use std::time::Duration;

use lapin::types::AMQPValue;
use prost::Message;
use trellis_kit::events::{self, TRACEPARENT_HEADER};
use trellis_proto::trellis::events::v1::Envelope;
use uuid::Uuid;

use super::{EVENT_TYPE, Harness, Recorder, Thing};
use trellis_kit::testing::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_events_are_delivered_once_in_order_and_only_after_commit() {
    let h = Harness::start(Harness::config().await, Recorder::default()).await;

    // Ten events in one transaction, left open for longer than the relay's poll interval.
    let ctx = h.ctx();
    let mut tx = h.db.tenant_tx(&ctx).await.expect("tx");
    let mut expected = Vec::new();
    for i in 0..10 {
        let label = format!("e{i:02}");
        let id = events::stage(&mut tx, &ctx, EVENT_TYPE, &Thing { label: label.clone() }).await.expect("stage");
        expected.push((id, label));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.effect_count().await, 0, "nothing is published before commit");
    tx.commit().await.expect("commit");

    // A transaction that rolls back publishes nothing.
    let mut rolled_back = h.db.tenant_tx(&ctx).await.expect("tx");
    events::stage(&mut rolled_back, &ctx, EVENT_TYPE, &Thing { label: "rolled-back".into() }).await.expect("stage");
    rolled_back.rollback().await.expect("rollback");

    // Ten more, one transaction each.
    for i in 10..20 {
        let label = format!("e{i:02}");
        let id = h.stage(&label).await;
        expected.push((id, label));
    }

    h.wait_for_effects(20, Duration::from_secs(30)).await;
    // Give a duplicate or the rolled-back event time to show up, should either exist.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(h.effects().await, expected, "every event once, in the order staged");
    assert_eq!(h.inbox().await, 20);
    wait_until(Duration::from_secs(10), || async { h.unsent().await == 0 }).await;
    let outbox: i64 =
        sqlx::query_scalar("select count(*) from evtest.outbox").fetch_one(&h.owner).await.expect("count outbox");
    assert_eq!(outbox, 20, "the rolled-back event left no outbox row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_are_persistent_protobuf_envelopes_routed_by_event_type() {
    let h = Harness::start(Harness::config().await, Recorder::default()).await;
    let tap = h.broker.tap(h.bus().exchange()).await;

    let ctx = h.ctx();
    let mut envelope = events::envelope(&ctx, h.org, EVENT_TYPE, &Thing { label: "traced".into() });
    envelope.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    let mut tx = h.db.tenant_tx(&ctx).await.expect("tx");
    let id = events::stage_envelope(&mut tx, envelope.clone()).await.expect("stage");
    tx.commit().await.expect("commit");
    h.wait_for_effects(1, Duration::from_secs(30)).await;

    let messages = h.broker.drain(&tap).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.routing_key.as_str(), EVENT_TYPE);
    let props = &message.properties;
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some("application/x-protobuf"));
    assert_eq!(props.message_id().as_ref().map(|s| s.to_string()), Some(id.to_string()));
    assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some(EVENT_TYPE));
    assert_eq!(props.correlation_id().as_ref().map(|s| s.to_string()), Some(ctx.correlation_id.clone()));
    let traceparent = props.headers().as_ref().and_then(|h| h.inner().get(TRACEPARENT_HEADER).cloned());
    assert_eq!(traceparent, Some(AMQPValue::LongString(envelope.traceparent.as_str().into())));
    assert_eq!(Envelope::decode(message.data.as_slice()).expect("an Envelope"), envelope);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_the_relay_publish_each_event_once() {
    let h = Harness::start(Harness::config().await, Recorder::default()).await;
    let tap = h.broker.tap(h.bus().exchange()).await;
    // Two more relays on the same outbox, as two more replicas of the module would run.
    let extra: Vec<_> =
        (0..2).map(|_| tokio::spawn(events::run_relay(h.bus(), h.db.clone(), h.cell.shutdown.child_token()))).collect();

    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(h.stage(&format!("r{i}")).await);
    }
    h.wait_for_effects(60, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), || async { h.unsent().await == 0 }).await;

    let mut published: Vec<Uuid> = h
        .broker
        .drain(&tap)
        .await
        .iter()
        .map(|m| m.properties.message_id().as_ref().expect("message id").as_str().parse().expect("uuid"))
        .collect();
    published.sort();
    ids.sort();
    assert_eq!(published, ids, "each staged event published exactly once");
    h.cell.shutdown.cancel();
    for relay in extra {
        tokio::time::timeout(Duration::from_secs(5), relay).await.expect("relay stops promptly").expect("join").ok();
    }
}
