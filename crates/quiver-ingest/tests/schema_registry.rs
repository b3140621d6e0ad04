//! Schemas from a Confluent-compatible Schema Registry: writer schemas by id, and a view whose
//! reader schema is the latest version of a subject.
//!
//! No such registry can be fetched here (Confluent's is not on Maven Central, Apicurio ships no
//! runnable artifact there, Karapace is not on PyPI), so the registry is a small HTTP server in
//! this test that answers the two documented endpoints the ingester calls, the way Confluent's
//! does, 404 bodies included. Kafka and Cassandra are the real ones.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{applied, config, read_country};
use quiver_avro::wire;
use quiver_core::definition::SchemaRef;
use quiver_core::value::Value;
use quiver_ingest::{SchemaRegistry, SchemaRegistryError, WireFormat};
use quiver_testkit::events;

/// Registered schemas: by id, and by subject (each subject's latest id).
#[derive(Clone, Default)]
struct Registered {
    by_id: HashMap<u32, serde_json::Value>,
    latest: HashMap<String, u32>,
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/vnd.schemaregistry.v1+json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(code: u32, message: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error_code": code, "message": message}),
    )
}

/// Serves `registered` on a local port and returns its URL.
async fn serve(registered: Registered) -> String {
    let registered = Arc::new(registered);
    let app = axum::Router::new()
        .route(
            "/schemas/ids/{id}",
            get(
                |State(registered): State<Arc<Registered>>, Path(id): Path<u32>| async move {
                    match registered.by_id.get(&id) {
                        Some(body) => json(StatusCode::OK, body),
                        None => not_found(40403, "Schema not found"),
                    }
                },
            ),
        )
        .route(
            "/subjects/{subject}/versions/latest",
            get(
                |State(registered): State<Arc<Registered>>, Path(subject): Path<String>| async move {
                    match registered.latest.get(&subject) {
                        Some(id) => {
                            let mut body = registered.by_id[id].clone();
                            body["subject"] = subject.into();
                            body["id"] = (*id).into();
                            body["version"] = 1.into();
                            json(StatusCode::OK, &body)
                        }
                        None => not_found(40401, "Subject not found"),
                    }
                },
            ),
        )
        .with_state(registered);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn avro(text: &str) -> serde_json::Value {
    serde_json::json!({"schema": text})
}

fn match_event_avsc() -> String {
    std::fs::read_to_string(events::schema_path("match_event.avsc")).unwrap()
}

#[tokio::test]
async fn the_client_reads_schemas_by_id_and_subject_and_names_what_is_wrong() {
    let registered = Registered {
        by_id: HashMap::from([
            (1, avro(&match_event_avsc())),
            (
                2,
                serde_json::json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}),
            ),
            (3, avro("{\"type\": \"recrod\"}")),
        ]),
        latest: HashMap::from([("match-events-value".to_owned(), 1)]),
    };
    let registry = SchemaRegistry::new(&serve(registered).await).unwrap();

    let schema = registry
        .schema_by_id(1)
        .await
        .unwrap()
        .expect("id 1 is registered");
    assert_eq!(schema, events::match_event_schema());
    assert!(
        registry.schema_by_id(42).await.unwrap().is_none(),
        "an unknown id"
    );
    assert_eq!(
        registry.latest_schema("match-events-value").await.unwrap(),
        events::match_event_schema()
    );

    let protobuf = registry.schema_by_id(2).await.unwrap_err().to_string();
    assert!(
        protobuf.contains("schema id 2: is a PROTOBUF schema, not Avro"),
        "{protobuf}"
    );
    let invalid = registry.schema_by_id(3).await.unwrap_err().to_string();
    assert!(
        invalid.contains("schema id 3: not a valid Avro schema"),
        "{invalid}"
    );
    let missing = registry
        .latest_schema("nope-value")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("subject `nope-value` is not registered"),
        "{missing}"
    );

    let https = SchemaRegistry::new("https://registry.example:8081").unwrap_err();
    assert!(
        matches!(https, SchemaRegistryError::BadUrl { .. }),
        "{https}"
    );
    // A port nothing listens on: the registry is unavailable, which the ingester retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = SchemaRegistry::new(&format!("http://{closed}")).unwrap();
    assert!(matches!(
        unreachable.schema_by_id(1).await,
        Err(SchemaRegistryError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn a_view_on_a_subject_ingests_with_writer_schemas_from_the_registry() {
    const SUBJECT: &str = "match-events-value";
    let topic = quiver_testkit::create_topic("registry_matches", 1).await;
    let dead_letter_topic = quiver_testkit::create_topic("registry_dlq", 1).await;
    let (store, registry) = applied(&topic, |definitions| {
        definitions.feature_views[0].source.schema = SchemaRef::Subject(SUBJECT.into());
    })
    .await;
    // The producer registered its schema as id 21; nothing is configured locally.
    let url = serve(Registered {
        by_id: HashMap::from([(21, avro(&match_event_avsc()))]),
        latest: HashMap::from([(SUBJECT.to_owned(), 21)]),
    })
    .await;

    let schema = events::match_event_schema();
    let mut records: Vec<(Option<String>, Vec<u8>)> = (0..10)
        .map(|n| {
            let datum =
                apache_avro::to_avro_datum(&schema, events::match_event(&schema, n)).unwrap();
            (None, wire::encode(21, &datum))
        })
        .collect();
    records.push((None, wire::encode(22, b"\x02")));
    quiver_testkit::produce(&topic, &records).await;

    let group = quiver_testkit::unique_name("registry_group");
    let mut config = config(&group, HashMap::new(), &dead_letter_topic);
    config.wire_format = WireFormat::Confluent {
        writer_schemas: HashMap::new(),
        schema_registry: Some(SchemaRegistry::new(&url).unwrap()),
    };
    let (summary, _) = common::ingest_all(&config, &registry, &store, &[(topic.clone(), 1)]).await;
    assert_eq!(summary.rows_written, 10);
    assert_eq!(
        summary.dead_lettered,
        [("unknown_schema_id", 1)].into_iter().collect()
    );
    assert_eq!(
        read_country(&store, &registry, 4).await,
        Some((
            Value::String("SE".into()),
            (1_790_000_000_000 + 9_000) * 1_000
        ))
    );
}

#[tokio::test]
async fn a_subject_schema_that_does_not_fit_the_view_is_refused_at_start() {
    let topic = quiver_testkit::create_topic("registry_misfit", 1).await;
    let (store, registry) = applied(&topic, |definitions| {
        definitions.feature_views[0].source.schema = SchemaRef::Subject("profiles-value".into());
    })
    .await;
    // The subject holds the profile schema, which lacks the match event's fields.
    let profile =
        std::fs::read_to_string(events::schema_path("user_profile_updated.avsc")).unwrap();
    let url = serve(Registered {
        by_id: HashMap::from([(5, avro(&profile))]),
        latest: HashMap::from([("profiles-value".to_owned(), 5)]),
    })
    .await;
    let mut config = config(
        &quiver_testkit::unique_name("misfit"),
        HashMap::new(),
        "unused_dlq",
    );
    config.wire_format = WireFormat::Confluent {
        writer_schemas: HashMap::new(),
        schema_registry: Some(SchemaRegistry::new(&url).unwrap()),
    };
    let metrics = quiver_ingest::IngestMetrics::register(&mut Default::default());
    let error = quiver_ingest::run(&config, common::fixed(&registry), &store, &metrics, async {
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("feature view `user_activity` does not fit the latest schema of subject `profiles-value`")
            && error.contains("the event time: field `ts` not found"),
        "{error}"
    );
}
