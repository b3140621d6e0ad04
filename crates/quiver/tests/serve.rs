//! `quiver serve` and `quiver get` as a user runs them, on the real Cassandra and Kafka: values
//! come back with statuses, and a deletion announced on the invalidation topic reaches the
//! server's cache.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apache_avro::types::Value as Avro;
use quiver_avro::project::ENTITY_DELETED_AVSC;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, FeatureWrite};
use quiver_core::value::Value;
use quiver_scylla::{ScyllaConfig, ScyllaStore};

use common::free_port;
use common::served::{OnStore, Served};

#[tokio::test]
async fn get_prints_served_values_and_a_deletion_reaches_the_cache() {
    let invalidations = quiver_testkit::create_topic("cli_invalidations", 1).await;
    let server = Served::start(
        OnStore::Cassandra,
        &[
            "--invalidation-topic",
            &invalidations,
            "--cache-ttl-ms",
            "600000",
        ],
    )
    .await;
    let keyspace = server.keyspace().expect("on Cassandra").to_owned();
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace.clone(),
    ))
    .await
    .unwrap();
    let registry = quiver_core::store::OnlineStore::load_registry(&store)
        .await
        .unwrap()
        .unwrap();
    let profile = registry
        .latest_view(&"user_profile".parse().unwrap())
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let user = |id| EntityKey::new(vec![KeyPart::Int64(id)]).unwrap();
    store
        .write_features(
            &registry.entities[0],
            profile,
            &[FeatureWrite {
                key: user(42),
                event_time_micros: now - 3_000_000,
                values: vec![("country".parse().unwrap(), Value::String("SE".into()))],
            }],
        )
        .await
        .unwrap();

    let get = || {
        let output = server
            .quiver()
            .args(["get", "--server", &server.address()])
            .args([
                "--feature",
                "user_profile:country",
                "--feature",
                "user_profile:verified",
            ])
            .args(["--entity", "user_id=42", "--entity", "user_id=7"])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let (ok, stdout, stderr) = get();
        if ok {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "the server never answered: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let line = |entity: &str, feature: &str| {
        table
            .lines()
            .find(|line| line.starts_with(entity) && line.contains(feature))
            .unwrap_or_else(|| panic!("no line for {entity} {feature} in:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("user_id=42", "user_profile:country")[2..],
        ["ok", "3s", "\"SE\""]
    );
    assert_eq!(
        line("user_id=42", "user_profile:verified")[2..],
        ["not_found", "-", "-"]
    );
    assert_eq!(
        line("user_id=7", "user_profile:country")[2..],
        ["not_found", "-", "-"]
    );

    let health = server
        .quiver()
        .args(["health", "--server", &server.address()])
        .output()
        .unwrap();
    assert!(health.status.success(), "{health:?}");
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        format!("{}: serving", server.address())
    );

    let unknown = server
        .quiver()
        .args(["get", "--server", &server.address(), "--service", "nope"])
        .args(["--entity", "user_id=42"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(
        stderr.trim(),
        "error: Some requested entity was not found: feature service `nope` is not in the \
         registry",
        "the server's words, once"
    );

    // Delete user 42 as the ingester does: remove the row, then announce it.
    store
        .delete_entity(&registry.entities[0], profile, &user(42), now)
        .await
        .unwrap();
    let schema = apache_avro::Schema::parse_str(ENTITY_DELETED_AVSC).unwrap();
    let announcement = Avro::Record(vec![
        ("entity".into(), Avro::String("user".into())),
        (
            "keys".into(),
            Avro::Map([("user_id".to_owned(), Avro::Long(42))].into()),
        ),
        ("event_time".into(), Avro::TimestampMicros(now)),
    ])
    .resolve(&schema)
    .unwrap();
    let datum = apache_avro::to_avro_datum(&schema, announcement).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Announced again each round: the listener may still be joining its group.
        quiver_testkit::produce(&invalidations, &[(Some("42".into()), datum.clone())]).await;
        let (_, table, _) = get();
        let status = table
            .lines()
            .find(|line| line.starts_with("user_id=42") && line.contains("user_profile:country"))
            .map(|line| {
                line.split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .to_owned()
            });
        if status.as_deref() == Some("not_found") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache kept the deleted user:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(server);
}

#[test]
fn health_fails_naming_a_server_that_is_not_there() {
    let address = format!("http://127.0.0.1:{}", free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["health", "--server", &address, "--timeout-secs", "10"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to {address}")),
        "{stderr}"
    );
}
