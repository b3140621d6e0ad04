//! Windowed aggregates stay exact when `quiver ingest` is killed without warning: 200,000 events
//! through the real Kafka into the real Cassandra, the ingester SIGKILLed twice mid-stream and
//! restarted, then every entity's aggregates compared with a brute-force computation over the
//! events produced.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_avro::types::Value as Avro;
use common::{KillOnDrop, free_port, kill_after_rows, wait_until_done};
use quiver_avro::wire;
use quiver_core::aggregate::{aggregate_features, evaluate};
use quiver_core::definition::{AggregateFunction, Seconds};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, OnlineStore};
use quiver_core::value::Value;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_testkit::events;

const EVENTS: usize = 200_000;
const USERS: i64 = 1_000;
const PARTITIONS: i32 = 4;
/// Events happen over the two hours before the test starts.
const SPREAD_MILLIS: i64 = 2 * 3_600_000;
/// Aggregates are compared as of this long after the test starts: a fixed request time that
/// the test reads before, so every tile of its windows is still stored.
const REQUEST_AHEAD_MICROS: i64 = 15 * 60 * 1_000_000;

const VIEWS: &str = r#"
feature_views:
  - name: activity
    entity: user
    source:
      topic: TOPIC
      schema: SCHEMA
      key_fields: [user_id]
      event_time: ts
    features:
      - {name: last_country, type: string, from: country}
      - {name: actions_30m, type: int64, aggregate: {fn: count, window: 30m}}
      - {name: actions_1h, type: int64, aggregate: {fn: count, window: 1h, resolution: 1m}}
      - {name: actions_total, type: int64, aggregate: {fn: count}}
      - {name: rank_sum_2h, type: int64, aggregate: {fn: sum, of: rank_position, window: 2h}}
      - {name: best_rank_1h, type: int32, aggregate: {fn: min, of: rank_position, window: 1h}}
      - {name: worst_rank_1h, type: int32, aggregate: {fn: max, of: rank_position, window: 1h}}
      - {name: avg_rank_1h, type: float64, aggregate: {fn: avg, of: rank_position, window: 1h}}
      - {name: first_candidate_1h, type: int64, aggregate: {fn: first, of: candidate_id, window: 1h}}
      - {name: last_candidate_1h, type: int64, aggregate: {fn: last, of: candidate_id, window: 1h}}
      - {name: recent_candidates, type: list<int64>, aggregate: {fn: last_k, k: 5, of: candidate_id, window: 1h}}
      - {name: distinct_candidates_1d, type: int64, aggregate: {fn: approx_distinct, of: candidate_id, window: 1d}}
"#;

/// One produced event, in plain values.
#[derive(Debug, Clone)]
struct Produced {
    user: i64,
    event_time_micros: i64,
    candidate: i64,
    rank: Option<i32>,
}

/// `EVENTS` events of `USERS` users at random times over the last two hours, in random order.
fn stream(now_millis: i64) -> Vec<Produced> {
    let mut state: u64 = 0x5eed;
    let mut next = move |bound: u64| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    };
    (0..EVENTS)
        .map(|_| Produced {
            user: next(USERS as u64) as i64,
            event_time_micros: (now_millis - next(SPREAD_MILLIS as u64) as i64) * 1_000,
            candidate: next(400) as i64,
            rank: (next(10) < 8).then(|| next(100) as i32),
        })
        .collect()
}

fn encode(schema: &apache_avro::Schema, n: usize, event: &Produced) -> Vec<u8> {
    let mut avro = events::match_event(schema, n as i64);
    for (field, value) in [
        ("user_id", Avro::Long(event.user)),
        ("ts", Avro::TimestampMillis(event.event_time_micros / 1_000)),
        ("candidate_id", Avro::Long(event.candidate)),
        (
            "rank_position",
            match event.rank {
                Some(rank) => Avro::Union(1, Box::new(Avro::Int(rank))),
                None => Avro::Union(0, Box::new(Avro::Null)),
            },
        ),
    ] {
        avro = events::with_field(avro, field, value);
    }
    wire::encode(7, &apache_avro::to_avro_datum(schema, avro).unwrap())
}

/// The value of `function` over `events`, computed directly from the list.
fn brute_force(function: AggregateFunction, events: &[&Produced]) -> Option<Value> {
    let mut ranks: Vec<(i64, i32)> = events
        .iter()
        .filter_map(|event| event.rank.map(|rank| (event.event_time_micros, rank)))
        .collect();
    ranks.sort();
    let mut candidates: Vec<(i64, i64)> = events
        .iter()
        .map(|event| (event.event_time_micros, event.candidate))
        .collect();
    candidates.sort();
    Some(match function {
        AggregateFunction::Count => Value::Int64(events.len() as i64),
        AggregateFunction::Sum => Value::Int64(ranks.iter().map(|(_, r)| i64::from(*r)).sum()),
        AggregateFunction::Min => Value::Int32(ranks.iter().map(|(_, r)| *r).min()?),
        AggregateFunction::Max => Value::Int32(ranks.iter().map(|(_, r)| *r).max()?),
        AggregateFunction::Avg => {
            if ranks.is_empty() {
                return None;
            }
            let sum: f64 = ranks.iter().map(|(_, r)| f64::from(*r)).sum();
            Value::Float64(sum / ranks.len() as f64)
        }
        AggregateFunction::First => Value::Int64(candidates.first()?.1),
        AggregateFunction::Last => Value::Int64(candidates.last()?.1),
        AggregateFunction::LastK(k) => Value::Int64List(
            candidates
                .iter()
                .rev()
                .take(k as usize)
                .map(|(_, c)| *c)
                .collect(),
        ),
        AggregateFunction::ApproxDistinct => {
            let mut distinct: Vec<i64> = candidates.iter().map(|(_, c)| *c).collect();
            distinct.sort_unstable();
            distinct.dedup();
            Value::Int64(distinct.len() as i64)
        }
    })
}

/// The events a window of `window` at `resolution` covers at `request_micros`: from the start of
/// the tile holding `request - window` to the end of the tile holding the request time.
fn in_window(
    event_time_micros: i64,
    window: Option<Seconds>,
    resolution: Option<Seconds>,
    request_micros: i64,
) -> bool {
    let (Some(window), Some(resolution)) = (window, resolution) else {
        return true;
    };
    let tile = resolution.0 as i64 * 1_000_000;
    let from = (request_micros - window.0 as i64 * 1_000_000).div_euclid(tile) * tile;
    let until = request_micros.div_euclid(tile) * tile + tile;
    (from..until).contains(&event_time_micros)
}

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
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        repo.join("examples/features/entities.yaml"),
        folder.path().join("entities.yaml"),
    )
    .unwrap();
    let schema_path = repo.join("schemas/match_event.avsc");
    std::fs::write(
        folder.path().join("views.yaml"),
        VIEWS
            .replace("TOPIC", &topic)
            .replace("SCHEMA", &schema_path.display().to_string()),
    )
    .unwrap();
    common::apply(quiver(&keyspace), folder.path());

    let schema = events::match_event_schema();
    let produced = stream(started_millis);
    let records: Vec<(Option<String>, Vec<u8>)> = produced
        .iter()
        .enumerate()
        .map(|(n, event)| (Some(event.user.to_string()), encode(&schema, n, event)))
        .collect();
    quiver_testkit::produce(&topic, &records).await;

    let group = quiver_testkit::unique_name("aggregates_group");
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
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .expect("ingest starts"),
        ))
    };
    // Twice: start an ingester, let it get well into the stream, SIGKILL it.
    for (run, kill_at) in [(1, 40_000), (2, 30_000)] {
        let log = folder.path().join(format!("ingest-{run}.log"));
        let metrics_port = free_port();
        let mut ingester = ingest(&log, metrics_port);
        kill_after_rows(&mut ingester, &log, metrics_port, kill_at).await;
        assert!(
            !quiver_testkit::committed_to_end(&group, &topics).await,
            "run {run} was killed mid-stream"
        );
    }
    let log = folder.path().join("ingest-3.log");
    let mut last = ingest(&log, free_port());
    wait_until_done(&mut last, &log, &group, &topics, Duration::from_secs(600)).await;
    drop(last);

    // Every user's aggregates as of the request time, from the stored tiles.
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace.clone(),
    ))
    .await
    .unwrap();
    let registry = store.load_registry().await.unwrap().expect("applied");
    let view = registry.feature_views[0].clone();
    let entity = registry.entities[0].clone();
    let mut by_user: HashMap<i64, Vec<&Produced>> = HashMap::new();
    for event in &produced {
        by_user.entry(event.user).or_default().push(event);
    }
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (user, events) in &by_user {
        let key = EntityKey::new(vec![KeyPart::Int64(*user)]).unwrap();
        let tiles = store
            .read_tiles(&entity, &view, &key, None)
            .await
            .unwrap()
            .tiles;
        for (feature, aggregate) in aggregate_features(&view.view) {
            let covered: Vec<&Produced> = events
                .iter()
                .copied()
                .filter(|event| {
                    in_window(
                        event.event_time_micros,
                        aggregate.window,
                        aggregate.resolution,
                        request_micros,
                    )
                })
                .collect();
            let expected = brute_force(aggregate.function, &covered);
            let served =
                evaluate(feature, aggregate, &tiles, request_micros).map(|(value, _)| value);
            compared += 1;
            let exact = match (aggregate.function, &expected, &served) {
                (
                    AggregateFunction::ApproxDistinct,
                    Some(Value::Int64(truth)),
                    Some(Value::Int64(estimate)),
                ) => (truth - estimate).abs() as f64 <= *truth as f64 * 0.02,
                _ => expected == served,
            };
            if !exact {
                mismatches.push(format!(
                    "user {user} {}: expected {expected:?}, got {served:?}",
                    feature.name
                ));
            }
        }
    }
    let now_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        now_micros < request_micros,
        "the comparison ran past the request time, when tiles may have expired; the test was too slow"
    );
    assert_eq!(compared, USERS as usize * 11, "every user, every aggregate");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} aggregates differ, such as: {:#?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}
