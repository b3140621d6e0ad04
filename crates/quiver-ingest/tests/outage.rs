//! A database outage in the middle of ingestion: Cassandra is stopped for 30 seconds and started
//! again. The ingester retries, commits nothing it has not written, and catches up by itself.
//!
//! This test stops the shared test database, so it is alone in its test binary: cargo runs test
//! binaries one after another, and no other test runs while the database is down.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{WAIT, applied, config, differences, framed, ground_truth};
use quiver_ingest::{IngestMetrics, run};
use quiver_testkit::events;

/// The database stopped by `scripts/services.sh stop cassandra`; started again when the test
/// ends it, or when the test fails first, so later tests find it running.
struct Outage {
    ended: bool,
}

fn services(action: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let status = Command::new("bash")
        .arg(script)
        .args([action, "cassandra"])
        .status()
        .expect("the services script runs");
    assert!(status.success(), "services.sh {action} cassandra failed");
}

impl Outage {
    fn begin() -> Self {
        services("stop");
        Outage { ended: false }
    }

    fn end(mut self) {
        self.ended = true;
        services("start");
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.ended {
            services("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_survives_the_database_going_away_for_thirty_seconds() {
    const PARTITIONS: i32 = 2;
    let topic = quiver_testkit::create_topic("outage", PARTITIONS).await;
    let dead_letter_topic = quiver_testkit::create_topic("outage_dlq", 1).await;
    let (store, registry) = applied(&topic, |_| {}).await;
    let schema = events::match_event_schema();
    let stream = events::shuffled_stream(&schema, 20_000, 300, 11);
    let records = framed(&schema, &stream);
    let (before, during) = records.split_at(records.len() / 2);
    let topics = [(topic.clone(), PARTITIONS)];

    let group = quiver_testkit::unique_name("outage_group");
    let config = config(
        &group,
        [(common::SCHEMA_ID, schema.clone())].into(),
        &dead_letter_topic,
    );
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = IngestMetrics::register(&mut metrics_registry);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ingest = run(&config, common::fixed(&registry), &store, &metrics, async {
        let _ = stopped.await;
    });
    let outage = async {
        quiver_testkit::produce(&topic, before).await;
        quiver_testkit::wait_until_committed(&group, &topics, WAIT).await;

        let outage = tokio::task::spawn_blocking(Outage::begin).await.unwrap();
        quiver_testkit::produce(&topic, during).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !quiver_testkit::committed_to_end(&group, &topics).await,
            "records read while the database was down were committed"
        );
        tokio::task::spawn_blocking(move || outage.end())
            .await
            .unwrap();

        quiver_testkit::wait_until_committed(&group, &topics, Duration::from_secs(120)).await;
        stop.send(()).expect("the ingester is running");
    };
    let (summary, ()) = tokio::join!(ingest, outage);
    let summary = summary.expect("the ingester rode out the outage");
    assert_eq!(summary.dead_lettered, Default::default());

    let retries = common::view_counter(&metrics_registry, "quiver_ingest_write_retries_total");
    assert!(retries > 0, "the writes were retried");

    let wrong = differences(&store, &registry, &ground_truth(&stream)).await;
    assert!(
        wrong.is_empty(),
        "{} users differ from the ground truth, such as {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}
