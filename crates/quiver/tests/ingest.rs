//! `quiver ingest` as an SRE runs it: against the real Kafka and Cassandra, stopped by SIGTERM.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{KillOnDrop, free_port, http_get, kill_after_rows, wait_until_done};
use std::time::{Duration, Instant};

use quiver_avro::wire;
use quiver_testkit::events;

/// A keyspace with the examples applied, user_activity reading `topic` and keeping values
/// forever, and a way to run `quiver` against it.
struct Deployment {
    keyspace: String,
    topic: String,
    folder: std::path::PathBuf,
    repo: std::path::PathBuf,
}

impl Deployment {
    async fn new(prefix: &str, partitions: i32) -> Self {
        let session = quiver_testkit::cql_session().await;
        let keyspace = quiver_testkit::create_keyspace(&session, prefix).await;
        let topic = quiver_testkit::create_topic(prefix, partitions).await;
        let folder = std::env::temp_dir().join(format!("quiver-cli-ingest-{keyspace}"));
        std::fs::create_dir_all(&folder).unwrap();
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        std::fs::copy(
            repo.join("examples/features/entities.yaml"),
            folder.join("entities.yaml"),
        )
        .unwrap();
        let views = std::fs::read_to_string(repo.join("examples/features/user_features.yaml"))
            .unwrap()
            .replace("../../schemas", &repo.join("schemas").display().to_string())
            .replace("topic: match-events", &format!("topic: {topic}"))
            .replace("    ttl: 7d\n", "");
        std::fs::write(folder.join("user_features.yaml"), views).unwrap();
        let deployment = Deployment {
            keyspace,
            topic,
            folder,
            repo,
        };
        common::apply(deployment.quiver(), &deployment.folder);
        deployment
    }

    fn quiver(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
        command
            .env("QUIVER_STORE", "scylla")
            .env("QUIVER_CQL_NODES", quiver_testkit::cql_nodes().join(","))
            .env("QUIVER_KEYSPACE", &self.keyspace)
            .env("QUIVER_CONSISTENCY", "one");
        command
    }

    /// Starts `quiver ingest` in `group`, serving metrics on `metrics_port` and logging to
    /// `log`, a file, so a chatty run never blocks on a full pipe.
    fn ingest(&self, group: &str, metrics_port: u16, log: &std::path::Path) -> KillOnDrop {
        let schema_path = self.repo.join("schemas/match_event.avsc");
        let dead_letters = format!("{}_dlq", self.topic);
        KillOnDrop(Some(
            self.quiver()
                .args([
                    "ingest",
                    "--schema-id",
                    &format!("7={}", schema_path.display()),
                ])
                .args(["--dead-letter-topic", &dead_letters, "--group-id", group])
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
                .env("QUIVER_KAFKA_BROKERS", quiver_testkit::kafka_brokers())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .expect("ingest starts"),
        ))
    }

    async fn rows(&self, session: &scylla::client::session::Session) -> usize {
        session
            .query_unpaged(
                format!("SELECT user_id FROM {}.user_activity_v1", self.keyspace),
                (),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .rows_num()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Confluent-framed match events with schema id 7.
fn framed(schema: &apache_avro::Schema, event: apache_avro::types::Value) -> Vec<u8> {
    wire::encode(7, &apache_avro::to_avro_datum(schema, event).unwrap())
}

#[tokio::test]
async fn ingest_stores_events_and_stops_cleanly_on_sigterm() {
    let deployment = Deployment::new("cli_ingest", 1).await;
    let session = quiver_testkit::cql_session().await;
    let schema = events::match_event_schema();
    let records: Vec<(Option<String>, Vec<u8>)> = (0..10)
        .map(|n| (None, framed(&schema, events::match_event(&schema, n))))
        .collect();
    quiver_testkit::produce(&deployment.topic, &records).await;

    let group = quiver_testkit::unique_name("cli_group");
    let metrics_port = free_port();
    let log = deployment.folder.join("ingest.log");
    let mut ingest = deployment.ingest(&group, metrics_port, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = deployment.rows(&session).await;
        // All five users are stored and all ten records committed.
        if rows == 5
            && quiver_testkit::committed_to_end(&group, &[(deployment.topic.clone(), 1)]).await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {rows} of 5 users ingested in time"
        );
        ingest.assert_running(&log);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("quiver_ingest_rows_written_total{view=\"user_activity\"} 10"),
        "{metrics}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &ingest.child().id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = ingest.take().wait().expect("ingest exits");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ingested 10 records: 10 rows written"),
        "{stderr}"
    );
}

#[tokio::test]
async fn after_sigkill_mid_stream_a_restart_loses_nothing() {
    const PARTITIONS: i32 = 4;
    const USERS: i64 = 500;
    let deployment = Deployment::new("cli_crash", PARTITIONS).await;
    let session = quiver_testkit::cql_session().await;
    let schema = events::match_event_schema();
    let stream = events::shuffled_stream(&schema, 30_000, USERS, 7);
    let records: Vec<(Option<String>, Vec<u8>)> = stream
        .iter()
        .map(|event| {
            (
                Some(event.user.to_string()),
                framed(&schema, event.event.clone()),
            )
        })
        .collect();
    quiver_testkit::produce(&deployment.topic, &records).await;

    let group = quiver_testkit::unique_name("crash_group");
    let topics = [(deployment.topic.clone(), PARTITIONS)];
    let log = deployment.folder.join("ingest.log");
    let metrics_port = free_port();
    let mut first = deployment.ingest(&group, metrics_port, &log);
    // Kill it without warning once it is well into the stream.
    let written_at_kill = kill_after_rows(&mut first, &log, metrics_port, 3_000).await;
    assert!(
        !quiver_testkit::committed_to_end(&group, &topics).await,
        "the first run was killed mid-stream, after {written_at_kill} rows"
    );

    let restart_log = deployment.folder.join("restart.log");
    let mut second = deployment.ingest(&group, free_port(), &restart_log);
    wait_until_done(
        &mut second,
        &restart_log,
        &group,
        &topics,
        Duration::from_secs(120),
    )
    .await;
    drop(second);

    // Every user's stored country is that of their newest event, computed here directly.
    let mut newest: HashMap<i64, (&str, i64)> = HashMap::new();
    for event in &stream {
        let entry = newest
            .entry(event.user)
            .or_insert((event.country, event.event_time_millis));
        if event.event_time_millis > entry.1 {
            *entry = (event.country, event.event_time_millis);
        }
    }
    assert_eq!(deployment.rows(&session).await, newest.len());
    let rows = session
        .query_unpaged(
            format!(
                "SELECT user_id, last_country, WRITETIME(last_country) FROM {}.user_activity_v1",
                deployment.keyspace
            ),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut wrong = 0;
    for row in rows.rows::<(i64, String, i64)>().unwrap() {
        let (user, country, written) = row.unwrap();
        let (expected, millis) = newest[&user];
        if (country.as_str(), written) != (expected, millis * 1_000) {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "users whose value is not their newest event's");
}

/// Lines of `log` at WARN level or above.
fn warnings_and_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

#[tokio::test]
async fn a_deleted_topic_is_reported_once_and_then_quietly_retried() {
    let deployment = Deployment::new("cli_gone", 1).await;
    let schema = events::match_event_schema();
    let records: Vec<(Option<String>, Vec<u8>)> = (0..3)
        .map(|n| (None, framed(&schema, events::match_event(&schema, n))))
        .collect();
    quiver_testkit::produce(&deployment.topic, &records).await;
    let group = quiver_testkit::unique_name("cli_gone_group");
    let log = deployment.folder.join("ingest.log");
    let mut ingest = deployment.ingest(&group, free_port(), &log);
    let topics = [(deployment.topic.clone(), 1)];
    wait_until_done(&mut ingest, &log, &group, &topics, Duration::from_secs(60)).await;
    let before = std::fs::read_to_string(&log).unwrap();
    assert!(
        before.contains("partitions assigned")
            && before.contains(&format!("{}/0", deployment.topic)),
        "the assignment is logged: {before}"
    );

    quiver_testkit::delete_topic(&deployment.topic).await;
    // Restarted, the ingester subscribes to a topic that is gone; librdkafka retries about
    // once a second, so ten seconds would log ten of each before.
    let killed = Command::new("kill")
        .args(["-TERM", &ingest.child().id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    ingest.take().wait().expect("ingest exits");
    let log = deployment.folder.join("ingest-restarted.log");
    let mut ingest = deployment.ingest(&group, free_port(), &log);
    tokio::time::sleep(Duration::from_secs(10)).await;
    ingest.assert_running(&log);
    let logged = std::fs::read_to_string(&log).unwrap();
    // The examples' other view reads a topic that never existed: reported the same way. Each
    // missing topic is named once by librdkafka, and the consumer warns once of the error.
    let reported = warnings_and_errors(&logged);
    assert!(
        reported.iter().any(|line| line.contains(&deployment.topic)),
        "the deleted topic is named: {logged}"
    );
    assert!(
        reported
            .iter()
            .all(|line| line.contains("UnknownTopicOrPartition")),
        "nothing else is reported: {reported:#?}"
    );
    assert!(
        reported.len() <= 4,
        "{} reports in ten seconds: {reported:#?}",
        reported.len()
    );
}
