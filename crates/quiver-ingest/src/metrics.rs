//! The ingester's Prometheus metrics, registered once per process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabels {
    pub(crate) topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ViewLabels {
    pub(crate) view: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EntityLabels {
    pub(crate) entity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeadLetterLabels {
    pub(crate) view: String,
    pub(crate) reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabels {
    pub(crate) topic: String,
    pub(crate) partition: i64,
}

/// Counters and gauges of one ingester process.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub(crate) records: Family<TopicLabels, Counter>,
    pub(crate) rows_written: Family<ViewLabels, Counter>,
    pub(crate) tiles_written: Family<ViewLabels, Counter>,
    pub(crate) duplicate_events: Family<ViewLabels, Counter>,
    pub(crate) events_beyond_dedup_horizon: Family<ViewLabels, Counter>,
    pub(crate) tied_events: Family<ViewLabels, Counter>,
    pub(crate) dead_letters: Family<DeadLetterLabels, Counter>,
    pub(crate) write_retries: Family<ViewLabels, Counter>,
    pub(crate) write_seconds: Family<ViewLabels, Histogram>,
    pub(crate) freshness_seconds: Family<ViewLabels, Histogram>,
    pub(crate) entities_deleted: Family<EntityLabels, Counter>,
    pub(crate) consumer_lag: Family<PartitionLabels, Gauge>,
}

impl IngestMetrics {
    /// Creates the metrics and registers them, all prefixed `quiver_ingest_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = IngestMetrics {
            records: Family::default(),
            rows_written: Family::default(),
            tiles_written: Family::default(),
            duplicate_events: Family::default(),
            events_beyond_dedup_horizon: Family::default(),
            tied_events: Family::default(),
            dead_letters: Family::default(),
            write_retries: Family::default(),
            write_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 14))
            }),
            // 5 ms to about 50 s.
            freshness_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 1.5, 24))
            }),
            entities_deleted: Family::default(),
            consumer_lag: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("quiver_ingest");
        registry.register(
            "records",
            "Kafka records consumed, by topic",
            metrics.records.clone(),
        );
        registry.register(
            "rows_written",
            "Feature rows written to the online store, by view",
            metrics.rows_written.clone(),
        );
        registry.register(
            "tiles_written",
            "Aggregate tiles rewritten in the online store, by view",
            metrics.tiles_written.clone(),
        );
        registry.register(
            "duplicate_events",
            "Events whose id a view's aggregates had already counted, skipped, by view",
            metrics.duplicate_events.clone(),
        );
        registry.register(
            "events_beyond_dedup_horizon",
            "Events older than their view's dedup horizon, counted without a duplicate check, by view",
            metrics.events_beyond_dedup_horizon.clone(),
        );
        registry.register(
            "tied_events",
            "Events at the millisecond of an earlier event of their entity, ordered against it by event id or offset, by view",
            metrics.tied_events.clone(),
        );
        registry.register(
            "dead_letters",
            "Records sent to the dead-letter topic, by view and reason",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "write_retries",
            "Feature writes retried because the store was unavailable, by view",
            metrics.write_retries.clone(),
        );
        registry.register(
            "write_seconds",
            "Time to write one call's feature rows of a view (an entity's events, or a batch's upserts) to the online store",
            metrics.write_seconds.clone(),
        );
        registry.register(
            "freshness_seconds",
            "From a row's event time to the moment the store acknowledged it, by view",
            metrics.freshness_seconds.clone(),
        );
        registry.register(
            "entities_deleted",
            "Entities removed from every view by a deletion command, by entity",
            metrics.entities_deleted.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records in a partition after the last committed offset",
            metrics.consumer_lag.clone(),
        );
        metrics
    }
}
