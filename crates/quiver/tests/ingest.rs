//! `quiver ingest` as an SRE runs it: against the real Kafka and Cassandra, stopped by SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiver_avro::wire;
use quiver_testkit::events;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn ingest_stores_events_and_stops_cleanly_on_sigterm() {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "cli_ingest").await;
    let topic = quiver_testkit::create_topic("cli_ingest", 1).await;
    let dead_letters = quiver_testkit::create_topic("cli_ingest_dlq", 1).await;

    // The examples, with user_activity reading this test's topic and keeping values forever.
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

    let nodes = quiver_testkit::cql_nodes().join(",");
    let quiver = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
        command
            .env("QUIVER_CQL_NODES", &nodes)
            .env("QUIVER_KEYSPACE", &keyspace)
            .env("QUIVER_CONSISTENCY", "one");
        command
    };
    let applied = quiver()
        .args(["apply", "--dir", &folder.display().to_string()])
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let schema = events::match_event_schema();
    let producer: FutureProducer = quiver_testkit::kafka_config().create().unwrap();
    for n in 0..10 {
        let payload = wire::encode(
            7,
            &apache_avro::to_avro_datum(&schema, events::match_event(&schema, n)).unwrap(),
        );
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let schema_path = repo.join("schemas/match_event.avsc");
    let group = quiver_testkit::unique_name("cli_group");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ingest = KillOnDrop(Some(
        quiver()
            .args([
                "ingest",
                "--schema-id",
                &format!("7={}", schema_path.display()),
            ])
            .args(["--dead-letter-topic", &dead_letters, "--group-id", &group])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("QUIVER_KAFKA_BROKERS", quiver_testkit::kafka_brokers())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ingest starts"),
    ));

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = session
            .query_unpaged(
                format!("SELECT user_id FROM {keyspace}.user_activity_v1"),
                (),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .rows_num();
        // All five users are stored and all ten records committed.
        if rows == 5 && quiver_testkit::committed_to_end(&group, &[(topic.clone(), 1)]).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {rows} of 5 users ingested in time"
        );
        if ingest.child().try_wait().unwrap().is_some() {
            let output = ingest.take().wait_with_output().unwrap();
            panic!(
                "ingest exited early: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
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
    let output = ingest.take().wait_with_output().expect("ingest exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ingested 10 records: 10 rows written"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("the metrics port answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The ingest process, killed if the test fails before it stops it.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("still running")
    }

    fn take(&mut self) -> std::process::Child {
        self.0.take().expect("still running")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
