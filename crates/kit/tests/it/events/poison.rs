//! A message that can never succeed ends in the dead-letter queue; it does not hold up the rest.

use std::time::Duration;

use prost::Message;
use trellis_kit::events;
use trellis_proto::trellis::events::v1::Envelope;

use super::{EVENT_TYPE, Harness, QUEUE, Recorder, Thing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_the_delivery_limit_while_others_flow() {
    let mut config = Harness::config().await;
    // Retries after 200, 400 and 800 ms: time enough for the others to pass it.
    config.events_max_deliveries = 4;
    let h = Harness::start(config, Recorder::failing_for(&["poison"])).await;
    let dlq = events::dead_letter_queue(&h.bus(), QUEUE);

    // One transaction, so the five are right behind the poison event in the queue.
    let ctx = h.ctx();
    let mut tx = h.db.tenant_tx(&ctx).await.expect("tx");
    let poison = events::stage(&mut tx, &ctx, EVENT_TYPE, &Thing { label: "poison".into() }).await.expect("stage");
    let mut others = Vec::new();
    for i in 0..5 {
        let thing = Thing { label: format!("ok-{i}") };
        others.push(events::stage(&mut tx, &ctx, EVENT_TYPE, &thing).await.expect("stage"));
    }
    tx.commit().await.expect("commit");

    // The poison event is retried with backoff and then dead-lettered.
    let dead = h.broker.wait_for_messages(&dlq, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    let envelope = Envelope::decode(dead[0].data.as_slice()).expect("the dead letter is the envelope");
    assert_eq!(envelope.id, poison.to_string());
    assert_eq!(envelope.payload.expect("payload").to_msg::<Thing>().expect("a Thing").label, "poison");

    // Exactly the configured number of attempts, none of which kept its effect.
    let attempts = h.recorder.calls_of("poison");
    assert_eq!(attempts.len(), 4, "delivered EVENTS_MAX_DELIVERIES times");
    h.wait_for_effects(5, Duration::from_secs(10)).await;
    let effects = h.effects().await;
    assert!(effects.iter().all(|(id, _)| *id != poison), "a failed attempt's effect is rolled back");
    assert_eq!(effects.iter().map(|(id, _)| *id).collect::<Vec<_>>(), others);
    assert_eq!(h.inbox().await, 5, "the poison event is not recorded as handled");

    // The events behind it were handled while it waited out its backoff, not after it.
    let last_attempt = *attempts.last().expect("attempts");
    for i in 0..5 {
        let handled = h.recorder.calls_of(&format!("ok-{i}"));
        assert_eq!(handled.len(), 1);
        assert!(handled[0] < last_attempt, "ok-{i} waited for the poison event");
    }

    // And the consumer keeps going afterwards.
    let late = h.stage("late").await;
    h.wait_for_effects(6, Duration::from_secs(30)).await;
    assert_eq!(h.effects().await.last().map(|(id, _)| *id), Some(late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_an_event_goes_straight_to_the_dead_letter_queue() {
    let h = Harness::start(Harness::config().await, Recorder::default()).await;
    let dlq = events::dead_letter_queue(&h.bus(), QUEUE);

    h.broker.publish(h.bus().exchange(), EVENT_TYPE, b"\xff\xffnot a protobuf envelope").await;
    let after = h.stage("after").await;
    h.wait_for_effects(1, Duration::from_secs(30)).await;

    let dead = h.broker.wait_for_messages(&dlq, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].data.as_slice(), b"\xff\xffnot a protobuf envelope");
    assert!(h.recorder.calls().iter().all(|(label, _)| label == "after"), "the handler never saw it");
    assert_eq!(h.effects().await.into_iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![after]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_without_loss_and_replayed_once_the_cause_is_fixed() {
    let mut config = Harness::config().await;
    config.events_max_deliveries = 2;
    let h = Harness::start(config, Recorder::failing_for(&["poison"])).await;
    let bus = h.bus();

    let poison = h.stage("poison").await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while events::dead_letter_count(&bus, QUEUE).await.expect("count") < 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the poison event is dead-lettered");

    // Listing shows what an operator needs and consumes nothing.
    let listed = events::list_dead_letters(&bus, QUEUE, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id.as_deref(), Some(poison.to_string().as_str()));
    assert_eq!(listed[0].event_type.as_deref(), Some(EVENT_TYPE));
    // The consumer rejects on the last allowed delivery; the broker's own limit is the backstop.
    assert!(matches!(listed[0].reason.as_deref(), Some("rejected" | "delivery_limit")), "{listed:?}");
    assert_eq!(events::list_dead_letters(&bus, QUEUE, 10).await.expect("list again").len(), 1);
    assert_eq!(h.effect_count().await, 0);

    // The bug is fixed; replay hands the event back to this consumer alone, once.
    h.recorder.heal("poison");
    assert_eq!(events::replay_dead_letters(&bus, QUEUE, 10).await.expect("replay"), 1);
    h.wait_for_effects(1, Duration::from_secs(30)).await;
    assert_eq!(h.effects().await.into_iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![poison]);
    assert_eq!(events::dead_letter_count(&bus, QUEUE).await.expect("count"), 0);
    assert_eq!(events::replay_dead_letters(&bus, QUEUE, 10).await.expect("nothing left"), 0);
}
