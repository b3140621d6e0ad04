//! Windowed aggregates stay exact when `quiver ingest` is killed without warning and when the
//! stream is produced again: 100,000 events, 5 % of them resent at later offsets, through the
//! real Kafka into the real Cassandra, the ingester SIGKILLed twice mid-stream and restarted,
//! every user's aggregates (filtered counts over 10m to 7d, a field count, a lifetime count and
//! every other function) compared with a brute-force computation over the distinct events; then
//! the whole stream produced a second time and compared again. The ingester also writes the
//! offline log, which must hold every record exactly once, by its source offsets, and from
//! which `quiver consistency` must recompute every value the store serves.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{KillOnDrop, free_port, kill_after_rows, wait_until_done};
use quiver_avro::wire;
use quiver_core::store::OnlineStore;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_testkit::events;
use quiver_testkit::stream::{StreamEvent, StreamShape, compare_with_truth};

const SHAPE: StreamShape = StreamShape {
    events: 100_000,
    users: 1_000,
    // Events happen over the two hours before the test starts.
    spread_millis: 2 * 3_600_000,
    resent_percent: 5,
    tied_users: 200,
};
const PARTITIONS: i32 = 4;
/// Aggregates are compared as of this long after the test starts: a fixed request time that
/// the test reads before, so every tile of its windows is still stored. Events happen in the
/// two hours before it, some of them ahead of the clock (by less than the hour Quiver allows).
const REQUEST_AHEAD_MICROS: i64 = 30 * 60 * 1_000_000;

fn quiver(keyspace: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .env("QUIVER_STORE", "scylla")
        .env("QUIVER_CQL_NODES", quiver_testkit::cql_nodes().join(","))
        .env("QUIVER_KEYSPACE", keyspace)
        .env("QUIVER_CONSISTENCY", "one")
        .env("QUIVER_KAFKA_BROKERS", quiver_testkit::kafka_brokers());
    command
}

#[tokio::test]
async fn aggregates_are_exact_after_the_ingester_is_killed_twice() {
    let started_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let request_micros = started_millis * 1_000 + REQUEST_AHEAD_MICROS;
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "aggregates").await;
    let topic = quiver_testkit::create_topic("aggregates", PARTITIONS).await;
    let folder = tempfile::tempdir().unwrap();
    quiver_testkit::stream::write_definitions(folder.path(), &topic);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema_path = repo.join("schemas/match_event.avsc");
    common::apply(quiver(&keyspace), folder.path());

    let schema = events::match_event_schema();
    let stream = quiver_testkit::stream::generate(SHAPE, request_micros / 1_000);
    let records: Vec<(Option<String>, Vec<u8>)> = stream
        .produced
        .iter()
        .map(|event| encode(&schema, event))
        .collect();
    quiver_testkit::produce(&topic, &records).await;

    let group = quiver_testkit::unique_name("aggregates_group");
    let offline_log = folder.path().join("offline-log");
    let topics = [(topic.clone(), PARTITIONS)];
    let ingest = |log: &std::path::Path, metrics_port: u16| {
        KillOnDrop(Some(
            quiver(&keyspace)
                .args([
                    "ingest",
                    "--schema-id",
                    &format!("7={}", schema_path.display()),
                ])
                .args([
                    "--group-id",
                    &group,
                    "--dead-letter-topic",
                    &format!("{topic}_dlq"),
                ])
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
                .args(["--offline-log", offline_log.to_str().expect("UTF-8")])
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .expect("ingest starts"),
        ))
    };
    // Twice: start an ingester, let it get well into the stream, SIGKILL it.
    for (run, kill_at) in [(1, 30_000), (2, 25_000)] {
        let log = folder.path().join(format!("ingest-{run}.log"));
        let metrics_port = free_port();
        let mut ingester = ingest(&log, metrics_port);
        kill_after_rows(&mut ingester, &log, metrics_port, kill_at).await;
        assert!(
            !quiver_testkit::committed_to_end(&group, &topics).await,
            "run {run} was killed mid-stream"
        );
    }
    let finish = |run: &str| {
        let log = folder.path().join(format!("ingest-{run}.log"));
        let mut ingester = ingest(&log, free_port());
        let group = group.clone();
        let topics = topics.clone();
        async move {
            wait_until_done(
                &mut ingester,
                &log,
                &group,
                &topics,
                Duration::from_secs(600),
            )
            .await;
        }
    };
    finish("3").await;

    // Every user's aggregates as of the request time, from the stored tiles.
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace.clone(),
    ))
    .await
    .unwrap();
    let registry = store.load_registry().await.unwrap().expect("applied");
    let compare = || compare_with_truth(&store, &registry, &stream.distinct, request_micros);
    let after_kills = compare().await;
    assert_eq!(
        after_kills.compared,
        SHAPE.users as usize * 18,
        "every user, every aggregate and field feature"
    );
    after_kills.assert_exact("after two SIGKILLs");
    assert_logged_once(&offline_log, records.len()).await;
    assert_consistent(quiver(&keyspace), &registry, &offline_log);

    // A producer that sends the whole stream again changes nothing.
    quiver_testkit::produce(&topic, &records).await;
    finish("again").await;
    compare()
        .await
        .assert_exact("after the stream was produced a second time");
    assert_logged_once(&offline_log, 2 * records.len()).await;

    let now_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        now_micros < request_micros,
        "the comparison ran past the request time, when tiles may have expired; the test was too slow"
    );
}

/// `quiver consistency` finds every feature of every user of the stream's view, recomputed from
/// the offline log, equal to what the store serves.
fn assert_consistent(
    mut quiver: Command,
    registry: &quiver_core::definition::Registry,
    folder: &std::path::Path,
) {
    let view = &registry.feature_views[0].view;
    quiver.args(["consistency", "--sample", "1000", "--offline-log"]);
    quiver.arg(folder);
    for feature in &view.features {
        quiver.args(["--feature", &format!("{}:{}", view.name, feature.name)]);
    }
    let output = quiver.output().expect("quiver consistency runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the offline log gives what the store serves: {report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        report.matches("100.00%").count(),
        view.features.len(),
        "{report}"
    );
}

/// The offline log holds `records` events, each in one file only: the files of a partition
/// cover offset ranges that do not overlap, although the ingester was killed between writing
/// files and committing their offsets.
async fn assert_logged_once(folder: &std::path::Path, records: usize) {
    let log = quiver_offline::OfflineLog::open(folder.to_str().expect("UTF-8")).unwrap();
    let view = "activity".parse().unwrap();
    let mut files = log.files(&view, 1).await.unwrap();
    files.sort_by(|a, b| {
        (&a.range.source, a.range.first_offset).cmp(&(&b.range.source, b.range.first_offset))
    });
    for pair in files.windows(2) {
        let (before, after) = (&pair[0].range, &pair[1].range);
        assert!(
            before.source != after.source || before.last_offset < after.first_offset,
            "two log files hold the same offsets: {} and {}",
            pair[0].path,
            pair[1].path
        );
    }
    let events = log.events(&view, 1).await.unwrap();
    assert_eq!(events.len(), records, "every record is in the log once");
}

fn encode(schema: &apache_avro::Schema, event: &StreamEvent) -> (Option<String>, Vec<u8>) {
    let avro = quiver_testkit::stream::to_avro(schema, event);
    let payload = wire::encode(7, &apache_avro::to_avro_datum(schema, avro).unwrap());
    (Some(event.user.to_string()), payload)
}
