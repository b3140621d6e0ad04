//! Aggregations against the real Kafka and Cassandra of `scripts/services.sh up`.
//!
//! Run: `scripts/services.sh up && cargo bench -p quiver-benches --bench aggregates`
//! (`QUIVER_BENCH_EVENTS` sets the stream length, 100000 by default).
//!
//! Side by side in one run, on the same events (1,000 users, event times over the last 30 days):
//! - **ingest rate** of `quiver_ingest::run`, to the commit of the last record, for the example
//!   `user_activity` view's stored features alone, with ten aggregates (without and with event
//!   id deduplication), and with the ten behind filters; rounds alternate, each into a fresh
//!   keyspace, and the median round is reported;
//! - **read latency** through `ScyllaStore`, what a cache miss costs the server: one plain
//!   feature (`read_features`) against a 30-day window (`read_tiles` of the feature and
//!   `evaluate` at now), for a 30-day count and a 30-day distinct count, one read at a time and
//!   16 in flight.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apache_avro::types::Value as Avro;
use futures::StreamExt;
use quiver_avro::wire;
use quiver_core::aggregate::{aggregate_features, default_resolution, evaluate};
use quiver_core::apply::apply;
use quiver_core::definition::{
    Aggregate, AggregateFunction, Definitions, Derivation, Feature, Registry, Seconds,
};
use quiver_core::filter::{CompareOp, Filter};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::FeatureStore;
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_testkit::stream::Random;
use quiver_testkit::{contract, events};

mod common;
use common::{SCHEMA_ID, ingest_until_committed};

const PARTITIONS: i32 = 4;
const USERS: i64 = 1_000;
const ROUNDS: usize = 3;
const READS: usize = 3_000;
const IN_FLIGHT: usize = 16;
const DAY_MILLIS: i64 = 86_400_000;

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("QUIVER_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let topic = quiver_testkit::create_topic("bench_aggregates", PARTITIONS).await;
    let schema = events::match_event_schema();
    let now_millis = now_micros() / 1_000;
    let mut random = Random(0xa99);
    let records: Vec<(Option<String>, Vec<u8>)> = (0..count)
        .map(|n| {
            let user = random.below(USERS as u64) as i64;
            let mut event = events::match_event(&schema, n as i64);
            for (field, value) in [
                ("user_id", Avro::Long(user)),
                (
                    "ts",
                    Avro::TimestampMillis(now_millis - random.below(30 * DAY_MILLIS as u64) as i64),
                ),
                ("candidate_id", Avro::Long(random.below(400) as i64)),
                (
                    "rank_position",
                    Avro::Union(1, Box::new(Avro::Int(random.below(100) as i32))),
                ),
            ] {
                event = events::with_field(event, field, value);
            }
            let datum = apache_avro::to_avro_datum(&schema, event).unwrap();
            (Some(user.to_string()), wire::encode(SCHEMA_ID, &datum))
        })
        .collect();
    quiver_testkit::produce(&topic, &records).await;
    println!(
        "{count} events ({USERS} users over 30 days, {PARTITIONS} partitions), {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let session = quiver_testkit::cql_session().await;
    let mut took: Vec<Vec<Duration>> = vec![Vec::new(); CASES.len()];
    let mut last_store = None;
    for round in 0..ROUNDS {
        for turn in 0..CASES.len() {
            let case = CASES[(round + turn) % CASES.len()];
            let keyspace = quiver_testkit::create_keyspace(&session, "bench_aggregates").await;
            let store = ScyllaStore::connect(&ScyllaConfig::one_node(
                quiver_testkit::cql_nodes(),
                keyspace,
            ))
            .await
            .expect("connects");
            let registry = apply(&store, &definitions(&topic, case), false)
                .await
                .expect("applies")
                .registry;
            let started = Instant::now();
            ingest_until_committed(&registry, &store, &topic, PARTITIONS, None).await;
            took[(round + turn) % CASES.len()].push(started.elapsed());
            if case == (Case::Aggregates { dedup: true }) {
                last_store = Some((store, registry));
            }
        }
    }
    let medians: Vec<Duration> = took
        .into_iter()
        .map(|mut rounds| {
            rounds.sort();
            rounds[rounds.len() / 2]
        })
        .collect();
    println!(
        "\n| ingest, end to end (median of {ROUNDS} rounds) | seconds | events/s | rate vs without |"
    );
    println!("|---|---:|---:|---:|");
    for (case, took) in CASES.iter().zip(&medians) {
        println!(
            "| {} | {:.2} | {:.0} | {:.2} |",
            case.describe(),
            took.as_secs_f64(),
            count as f64 / took.as_secs_f64(),
            medians[0].as_secs_f64() / took.as_secs_f64()
        );
    }

    let (store, registry) = last_store.expect("a round with aggregates ran");
    read_latencies(&store, &registry).await;
}

/// What the ingested view holds, beside the example's stored features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// No aggregate, no event id.
    Plain,
    /// [`ten_aggregates`], counting every event; with or without the example's event id and
    /// its 7-day dedup horizon.
    Aggregates { dedup: bool },
    /// [`ten_aggregates`], each behind a filter, with the event id.
    Filtered,
}

const CASES: [Case; 4] = [
    Case::Plain,
    Case::Aggregates { dedup: false },
    Case::Aggregates { dedup: true },
    Case::Filtered,
];

impl Case {
    fn describe(self) -> &'static str {
        match self {
            Case::Plain => "without aggregates",
            Case::Aggregates { dedup: false } => "10 aggregates, no event ids",
            Case::Aggregates { dedup: true } => "10 aggregates, deduplicated by event id",
            Case::Filtered => "10 filtered aggregates, deduplicated",
        }
    }
}

/// The example `user_activity` view reading `topic`, with no TTL, its stored features and the
/// aggregates of `case`.
fn definitions(topic: &str, case: Case) -> Definitions {
    let mut definitions = contract::user_activity_on(topic);
    let view = &mut definitions.feature_views[0];
    view.features
        .retain(|feature| matches!(feature.derivation, Derivation::Field(_)));
    if matches!(case, Case::Plain | Case::Aggregates { dedup: false }) {
        view.source.event_id = None;
        view.dedup = None;
    }
    match case {
        Case::Plain => {}
        Case::Aggregates { .. } => view.features.extend(ten_aggregates(false)),
        Case::Filtered => view.features.extend(ten_aggregates(true)),
    }
    definitions
}

/// Counts over 1h, 30d and lifetime, a 24h sum, a 7d min, max and average, a 1d last and
/// last-10, and a 30d distinct count; `filtered`, each alternately behind `action = LIKE` and
/// `action in (CHAT, MATCH) and chat_seconds >= 10`.
fn ten_aggregates(filtered: bool) -> Vec<Feature> {
    use AggregateFunction::{ApproxDistinct, Avg, Count, Last, LastK, Max, Min, Sum};
    use ScalarType::{Float64, Int32, Int64};
    let day = 86_400;
    let aggregates = [
        ("actions_1h", Count, None, Some(3_600), Int64),
        ("actions_30d", Count, None, Some(30 * day), Int64),
        ("actions_total", Count, None, None, Int64),
        (
            "chat_seconds_24h",
            Sum,
            Some("chat_seconds"),
            Some(day),
            Float64,
        ),
        (
            "best_rank_7d",
            Min,
            Some("rank_position"),
            Some(7 * day),
            Int32,
        ),
        (
            "worst_rank_7d",
            Max,
            Some("rank_position"),
            Some(7 * day),
            Int32,
        ),
        (
            "avg_rank_7d",
            Avg,
            Some("rank_position"),
            Some(7 * day),
            Float64,
        ),
        (
            "last_candidate_1d",
            Last,
            Some("candidate_id"),
            Some(day),
            Int64,
        ),
        (
            "recent_candidates",
            LastK(10),
            Some("candidate_id"),
            Some(day),
            Int64,
        ),
        (
            "distinct_candidates_30d",
            ApproxDistinct,
            Some("candidate_id"),
            Some(30 * day),
            Int64,
        ),
    ];
    let liked = Filter::Compare {
        field: "action".into(),
        op: CompareOp::Eq,
        literal: Value::String("LIKE".into()),
    };
    let long_talks = Filter::All(vec![
        Filter::In {
            field: "action".into(),
            literals: vec![Value::String("CHAT".into()), Value::String("MATCH".into())],
        },
        Filter::Compare {
            field: "chat_seconds".into(),
            op: CompareOp::Ge,
            literal: Value::Float64(10.0),
        },
    ]);
    aggregates
        .into_iter()
        .enumerate()
        .map(|(index, (name, function, of, window, scalar))| {
            let window = window.map(Seconds);
            Feature {
                name: name.parse().unwrap(),
                value_type: match function {
                    LastK(_) => ValueType::List(scalar),
                    _ => ValueType::Scalar(scalar),
                },
                derivation: Derivation::Aggregate(Aggregate {
                    function,
                    of: of.map(str::to_owned),
                    window,
                    resolution: window.map(default_resolution),
                }),
                default: None,
                description: String::new(),
                filter: filtered.then(|| {
                    if index % 2 == 0 {
                        liked.clone()
                    } else {
                        long_talks.clone()
                    }
                }),
            }
        })
        .collect()
}

async fn read_latencies(store: &ScyllaStore, registry: &Registry) {
    let entity = &registry.entities[0];
    let view = &registry.feature_views[0];
    let aggregates = aggregate_features(&view.view);
    let window = |name: &str| {
        *aggregates
            .iter()
            .find(|(feature, _)| feature.name.as_str() == name)
            .expect("the bench view has it")
    };
    let plain: Vec<Name> = vec!["last_country".parse().unwrap()];
    let mut random = Random(7);
    let users: Vec<EntityKey> = (0..READS)
        .map(|_| EntityKey::new(vec![KeyPart::Int64(random.below(USERS as u64) as i64)]).unwrap())
        .collect();
    let tiles_per_read = {
        let (feature, _) = window("actions_30d");
        let tiles = store
            .read_tiles(entity, view, &users[0], Some(&feature.name))
            .await
            .unwrap();
        tiles.tiles.len()
    };

    let read_plain = |key: &EntityKey| {
        let key = key.clone();
        let plain = &plain;
        async move {
            let started = Instant::now();
            let values = store
                .read_features(entity, view, plain, &key)
                .await
                .unwrap();
            std::hint::black_box(values);
            started.elapsed()
        }
    };
    let read_window = |name: &'static str| {
        let (feature, aggregate): (&Feature, &Aggregate) = window(name);
        move |key: &EntityKey| {
            let key = key.clone();
            async move {
                let started = Instant::now();
                let tiles = store
                    .read_tiles(entity, view, &key, Some(&feature.name))
                    .await
                    .unwrap();
                let value = evaluate(feature, aggregate, &tiles.tiles, now_micros());
                std::hint::black_box(value);
                started.elapsed()
            }
        }
    };
    // Warm the read path and the caches of the database alike for every case.
    for key in &users[..500] {
        read_plain(key).await;
        read_window("actions_30d")(key).await;
        read_window("distinct_candidates_30d")(key).await;
    }
    println!(
        "\nreads of one entity through ScyllaStore, {READS} random users; a 30-day window here \
         spans about {tiles_per_read} daily tiles"
    );
    println!("| read | in flight | reads/s | p50 ms | p99 ms | p99 vs plain |");
    println!("|---|---:|---:|---:|---:|---:|");
    for in_flight in [1, IN_FLIGHT] {
        let mut rows: Vec<(&str, f64, Duration, Duration)> = Vec::new();
        let plain_case = measure(&users, in_flight, read_plain).await;
        rows.push((
            "plain feature (`last_country`)",
            plain_case.0,
            plain_case.1,
            plain_case.2,
        ));
        let count = measure(&users, in_flight, read_window("actions_30d")).await;
        rows.push(("30-day count (`actions_30d`)", count.0, count.1, count.2));
        let distinct = measure(&users, in_flight, read_window("distinct_candidates_30d")).await;
        rows.push((
            "30-day distinct count (`distinct_candidates_30d`)",
            distinct.0,
            distinct.1,
            distinct.2,
        ));
        for (name, rate, p50, p99) in rows {
            println!(
                "| {name} | {in_flight} | {rate:.0} | {:.3} | {:.3} | {:.2} |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                p99.as_secs_f64() / plain_case.2.as_secs_f64()
            );
        }
    }
}

/// Reads every key with `in_flight` reads at once; returns reads per second, p50 and p99.
async fn measure<F, Fut>(keys: &[EntityKey], in_flight: usize, read: F) -> (f64, Duration, Duration)
where
    F: Fn(&EntityKey) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(keys)
        .map(&read)
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let rate = keys.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    (rate, at(0.5), at(0.99))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}
