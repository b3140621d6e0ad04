//! Set-up shared by the benchmarks that run the ingester.

use std::collections::HashMap;
use std::time::Duration;

use quiver_core::definition::Registry;
use quiver_core::store::FeatureStore;
use quiver_ingest::{IngestConfig, IngestMetrics, OnInvalid, WireFormat};
use quiver_testkit::events;

/// The schema id the benchmarks frame match events with.
pub(crate) const SCHEMA_ID: u32 = 7;
/// Records per ingester batch, the ingester's default.
pub(crate) const BATCH_ROWS: usize = 2_000;

/// An ingester in `group` reading Confluent-framed match events, stopping at the first bad one.
pub(crate) fn ingest_config(group: &str) -> IngestConfig {
    IngestConfig {
        kafka: quiver_kafka::KafkaConnection::plaintext(quiver_testkit::kafka_brokers()),
        group_id: group.to_owned(),
        wire_format: WireFormat::Confluent {
            writer_schemas: HashMap::from([(SCHEMA_ID, events::match_event_schema())]),
            schema_registry: None,
        },
        on_invalid: OnInvalid::Stop,
        upsert_topic: None,
        deletion_topic: None,
        invalidation_topic: None,
        batch_size: BATCH_ROWS,
        batch_linger: Duration::from_millis(20),
        offline_log: None,
    }
}

/// Runs `quiver_ingest::run` in a new group until it has committed all of `topic`, also
/// writing `offline_log` when given.
pub(crate) async fn ingest_until_committed<S: FeatureStore>(
    registry: &Registry,
    store: &S,
    topic: &str,
    partitions: i32,
    offline_log: Option<std::sync::Arc<quiver_offline::OfflineLog>>,
) {
    let group = quiver_testkit::unique_name("bench_group");
    let config = IngestConfig {
        offline_log,
        ..ingest_config(&group)
    };
    let metrics = IngestMetrics::register(&mut prometheus_client::registry::Registry::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let registry = tokio::sync::watch::channel(std::sync::Arc::new(registry.clone())).1;
    let ingest = quiver_ingest::run(&config, registry, store, &metrics, async {
        let _ = stopped.await;
    });
    let check = async {
        quiver_testkit::wait_until_committed(
            &group,
            &[(topic.to_owned(), partitions)],
            Duration::from_secs(900),
        )
        .await;
        stop.send(()).expect("the ingester runs");
    };
    let (summary, ()) = tokio::join!(ingest, check);
    summary.expect("ingests");
}
