//! Event counters, registered once on the process's Prometheus registry.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::telemetry::Metrics;

/// Labels of the relay counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModuleLabels {
    /// The module whose outbox it is.
    pub module: String,
}

/// Labels of the consumer counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct QueueLabels {
    /// The consumer's queue, without the cell prefix.
    pub queue: String,
}

/// The event counters.
#[derive(Debug)]
pub(super) struct EventMetrics {
    /// Events the broker confirmed.
    pub published: Family<ModuleLabels, Counter>,
    /// Publish attempts that failed (nack, lost connection, timeout).
    pub publish_failures: Family<ModuleLabels, Counter>,
    /// Events handled (effect committed).
    pub consumed: Family<QueueLabels, Counter>,
    /// Redeliveries of events already handled, acked without effect.
    pub duplicates: Family<QueueLabels, Counter>,
    /// Handler failures (each is retried or dead-lettered).
    pub failed: Family<QueueLabels, Counter>,
    /// Messages sent to a dead-letter queue by the consumer.
    pub dead_lettered: Family<QueueLabels, Counter>,
}

impl EventMetrics {
    /// The process-wide counters.
    pub(super) fn get() -> &'static EventMetrics {
        static METRICS: OnceLock<EventMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let metrics = EventMetrics {
                published: Family::default(),
                publish_failures: Family::default(),
                consumed: Family::default(),
                duplicates: Family::default(),
                failed: Family::default(),
                dead_lettered: Family::default(),
            };
            let registry = Metrics::global();
            registry.register(
                "events_published",
                "Events published and confirmed by the broker",
                metrics.published.clone(),
            );
            registry.register(
                "events_publish_failures",
                "Outbox rows whose publication failed and will be retried",
                metrics.publish_failures.clone(),
            );
            registry.register("events_consumed", "Events handled by a consumer", metrics.consumed.clone());
            registry.register(
                "events_duplicates",
                "Redelivered events a consumer had already handled",
                metrics.duplicates.clone(),
            );
            registry.register("events_handler_failures", "Event handler failures", metrics.failed.clone());
            registry.register(
                "events_dead_lettered",
                "Events a consumer sent to its dead-letter queue",
                metrics.dead_lettered.clone(),
            );
            metrics
        })
    }

    pub(super) fn module(module: &str) -> ModuleLabels {
        ModuleLabels { module: module.to_string() }
    }

    pub(super) fn queue(queue: &str) -> QueueLabels {
        QueueLabels { queue: queue.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_counters_are_exposed_on_the_process_registry() {
        let metrics = EventMetrics::get();
        metrics.published.get_or_create(&EventMetrics::module("metricstest")).inc();
        metrics.dead_lettered.get_or_create(&EventMetrics::queue("metricstest.queue")).inc();
        let text = Metrics::global().encode();
        assert!(text.contains(r#"trellis_events_published_total{module="metricstest"} 1"#), "{text}");
        assert!(text.contains(r#"trellis_events_dead_lettered_total{queue="metricstest.queue"} 1"#), "{text}");
        for name in ["publish_failures", "consumed", "duplicates", "handler_failures"] {
            assert!(text.contains(&format!("# TYPE trellis_events_{name} counter")), "{name} missing");
        }
    }
}
