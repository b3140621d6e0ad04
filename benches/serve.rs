//! Online serving under load, against the real Cassandra of `scripts/services.sh up`.
//!
//! Run: `scripts/services.sh up && cargo bench -p quiver-benches --bench serve`
//!
//! A Rust load generator in this process keeps `CONCURRENCY` calls in flight over one HTTP/2
//! connection for `SECONDS` per case and reports throughput and latency percentiles. Side by side
//! in one run, for batches of 1, 10 and 100 entities x 20 features:
//! - **cache hits**: the server with its cache warm;
//! - **cache misses**: the same server with the cache off, so every call reads the database;
//! - **adapter reads**: `ScyllaStore::read_features` called in process, the miss path without
//!   the server;
//! - **direct driver reads**: the scylla driver reading and deserializing the same rows (same
//!   columns with their write times, replies without result metadata as the adapter asks), the
//!   floor for a miss;
//!
//! and, once, the **empty call floor**: a gRPC health check on the same server, a tonic unary
//! call that does no work.
//!
//! Then misses and direct reads again, at a steady rate well below what either sustains (2,000
//! entities a second), started on schedule as independent clients would: latency when the
//! machine is not saturated, where the closed loop above measures it at saturation.
//!
//! `QUIVER_BENCH_ONLY=<text>` runs only the cases whose name contains it (and the floor), for
//! profiling one path.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use quiver_core::apply::apply;
use quiver_core::definition::{Derivation, Feature};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, FeatureWrite};
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_proto::v1 as pb;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_serve::{CacheConfig, FeatureServer, ServeConfig, ServeMetrics};
use quiver_testkit::contract;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tonic::transport::Channel;

/// As in the `quiver` binary: glibc's allocator spent about a third of this benchmark's CPU on
/// its own bookkeeping and arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTITIES: i64 = 10_000;
const FEATURES: usize = 20;
const CONCURRENCY: usize = 16;
const SECONDS: u64 = 3;
/// Entities read per second in the open-loop cases (2,000 calls/s of one entity, 200 of ten,
/// 20 of a hundred): a third or less of what the miss path sustains at each batch size.
const OPEN_LOOP_ENTITIES_PER_SECOND: u32 = 2_000;
/// Load before each case's counted calls: connection windows, allocator and caches settle.
const WARMUP: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() {
    let session = Arc::new(quiver_testkit::cql_session().await);
    let keyspace = quiver_testkit::create_keyspace(&session, "bench_serve").await;
    let store = Arc::new(
        ScyllaStore::connect(&ScyllaConfig::one_node(
            quiver_testkit::cql_nodes(),
            keyspace.clone(),
        ))
        .await
        .expect("connects"),
    );
    // The profile view with 20 string features.
    let mut definitions = contract::example_definitions();
    definitions.feature_services.clear();
    let profile = definitions
        .feature_views
        .iter_mut()
        .find(|view| view.name.as_str() == "user_profile")
        .expect("the examples have user_profile");
    profile.features = (0..FEATURES)
        .map(|i| Feature {
            name: format!("f{i:02}").parse().unwrap(),
            value_type: ValueType::Scalar(ScalarType::String),
            derivation: Derivation::Field("country".into()),
            default: None,
            description: String::new(),
        })
        .collect();
    let registry = apply(&*store, &definitions, false)
        .await
        .expect("applies")
        .registry;
    let view = registry
        .latest_view(&"user_profile".parse().unwrap())
        .unwrap()
        .clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let writes: Vec<FeatureWrite> = (0..ENTITIES)
        .map(|id| FeatureWrite {
            key: EntityKey::new(vec![KeyPart::Int64(id)]).unwrap(),
            event_time_micros: now,
            values: view
                .view
                .features
                .iter()
                .map(|feature| (feature.name.clone(), Value::String(format!("v{id}"))))
                .collect(),
        })
        .collect();
    for chunk in writes.chunks(2_000) {
        store
            .write_features(&registry.entities[0], &view, chunk)
            .await
            .expect("writes");
    }
    let registry = Arc::new(registry);

    let start = |cache: bool| {
        let (store, registry) = (store.clone(), registry.clone());
        async move {
            let config = ServeConfig {
                // Long enough that no entry expires between warming and measuring: the hit
                // case is to measure hits only (the default TTL is 5 s).
                cache: cache.then(|| CacheConfig {
                    ttl: Duration::from_secs(600),
                    ..ServeConfig::default()
                        .cache
                        .expect("the default config caches")
                }),
                ..ServeConfig::default()
            };
            let server = Arc::new(FeatureServer::new(
                config,
                tokio::sync::watch::channel(registry).1,
                store,
                ServeMetrics::register(&mut Default::default()),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move { server.run(listener, std::future::pending()).await });
            Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect()
                .await
                .expect("the server answers")
        }
    };
    let cached = start(true).await;
    let uncached = start(false).await;
    let features: Arc<[String]> = (0..FEATURES)
        .map(|i| format!("user_profile:f{i:02}"))
        .collect();
    println!(
        "{ENTITIES} entities x {FEATURES} features; {CONCURRENCY} calls in flight, {SECONDS} s per \
         case; {} cores shared by the load generator, the server and Cassandra\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| case | calls/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");

    let health = tonic_health::pb::health_client::HealthClient::new(cached.clone());
    report(
        "empty call floor (health check)",
        load(move |_| {
            let mut health = health.clone();
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .expect("answers");
            }
        })
        .await,
    );

    let statement = format!(
        "SELECT {} FROM {keyspace}.user_profile_v1 WHERE user_id = ?",
        (0..FEATURES)
            .map(|i| format!("f{i:02}, WRITETIME(f{i:02})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut select = session.prepare(statement).await.expect("prepares");
    // As the adapter reads: replies without result metadata (ScyllaDB always does this).
    select.set_use_cached_result_metadata(true);
    let select = Arc::new(select);
    for batch in [1_usize, 10, 100] {
        let ask = {
            let features = features.clone();
            move |call: u64| request(&features, batch, call)
        };
        let case = format!("batch {batch}: cache hits");
        if selected(&case) {
            // Warm the cache with every key this batch size will ask for.
            let warm = FeatureServiceClient::new(cached.clone());
            futures::stream::iter(0..ENTITIES as u64 / batch as u64 + 1)
                .map(|call| {
                    let mut warm = warm.clone();
                    let request = ask(call);
                    async move { warm.get_online_features(request).await.expect("answers") }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            report(&case, load(get_calls(&cached, ask.clone())).await);
        }
        let case = format!("batch {batch}: cache misses (cache off)");
        if selected(&case) {
            report(&case, load(get_calls(&uncached, ask.clone())).await);
        }
        let case = format!("batch {batch}: adapter reads");
        if selected(&case) {
            let (store, registry) = (store.clone(), registry.clone());
            let measured = load(move |call| {
                let (store, registry) = (store.clone(), registry.clone());
                async move {
                    let view = registry
                        .latest_view(&"user_profile".parse().unwrap())
                        .expect("applied");
                    let features = quiver_core::read::stored_features(view);
                    let reads = keys(batch, call).into_iter().map(|id| {
                        let key = EntityKey::new(vec![KeyPart::Int64(id)]).unwrap();
                        let (store, registry, features) = (&store, &registry, &features);
                        async move {
                            store
                                .read_features(&registry.entities[0], view, features, &key)
                                .await
                                .expect("reads")
                        }
                    });
                    std::hint::black_box(join_all(reads).await);
                }
            })
            .await;
            report(&case, measured);
        }
        let case = format!("batch {batch}: direct driver reads");
        if selected(&case) {
            report(&case, load(direct_calls(&session, &select, batch)).await);
        }

        // The same two paths at a steady rate well below what either sustains: what a client
        // waits for one call when the server is not saturated, rather than queueing behind
        // the other calls in flight.
        let rate = OPEN_LOOP_ENTITIES_PER_SECOND / batch as u32;
        let case = format!("batch {batch} at {rate} calls/s: cache misses (cache off)");
        if selected(&case) {
            report(
                &case,
                load_at_rate(rate, get_calls(&uncached, ask.clone())).await,
            );
        }
        let case = format!("batch {batch} at {rate} calls/s: direct driver reads");
        if selected(&case) {
            report(
                &case,
                load_at_rate(rate, direct_calls(&session, &select, batch)).await,
            );
        }
    }
}

/// The entity ids of call number `call` with `batch` entities.
fn keys(batch: usize, call: u64) -> Vec<i64> {
    (0..batch as i64)
        .map(|i| (call as i64 * batch as i64 + i) % ENTITIES)
        .collect()
}

fn request(features: &[String], batch: usize, call: u64) -> pb::GetOnlineFeaturesRequest {
    use pb::get_online_features_request::Features;
    pb::GetOnlineFeaturesRequest {
        features: Some(Features::FeatureList(pb::FeatureList {
            features: features.to_vec(),
        })),
        entities: HashMap::from([(
            "user_id".to_owned(),
            pb::KeyColumn {
                values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                    values: keys(batch, call),
                })),
            },
        )]),
    }
}

/// One `GetOnlineFeatures` call on `channel` per call number, asking `ask(number)`.
fn get_calls(
    channel: &Channel,
    ask: impl Fn(u64) -> pb::GetOnlineFeaturesRequest + Send + Sync + 'static,
) -> impl Fn(u64) -> BoxFuture<'static, ()> + Send + Sync + 'static {
    let client = FeatureServiceClient::new(channel.clone());
    move |call| {
        let (mut client, request) = (client.clone(), ask(call));
        Box::pin(async move {
            client.get_online_features(request).await.expect("answers");
        })
    }
}

/// One direct driver read of `batch` entities per call number.
fn direct_calls(
    session: &Arc<Session>,
    select: &Arc<PreparedStatement>,
    batch: usize,
) -> impl Fn(u64) -> BoxFuture<'static, ()> + Send + Sync + 'static {
    let (session, select) = (session.clone(), select.clone());
    move |call| {
        let (session, select) = (session.clone(), select.clone());
        Box::pin(async move { read_directly(&session, &select, keys(batch, call)).await })
    }
}

async fn read_directly(session: &Session, select: &PreparedStatement, ids: Vec<i64>) {
    let reads = ids.into_iter().map(|id| async move {
        session
            .execute_unpaged(select, (id,))
            .await
            .expect("reads")
            .into_rows_result()
            .expect("rows")
            .rows::<scylla::value::Row>()
            .expect("typed rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("deserializes")
    });
    std::hint::black_box(join_all(reads).await);
}

/// Latencies of every call made in `SECONDS` with `CONCURRENCY` in flight, after `WARMUP` of
/// the same load whose calls are not counted, once the machine is quiet.
async fn load<F, Fut>(call: F) -> (Vec<Duration>, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    wait_until_quiet().await;
    let counted_from = Instant::now() + WARMUP;
    let until = counted_from + Duration::from_secs(SECONDS);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let call = Arc::new(call);
    // Each worker is a task of its own, so the runtime's threads share them as they share the
    // server's tasks.
    let workers = (0..CONCURRENCY).map(|_| {
        let (call, next) = (call.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let number = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
                call(number).await;
                if sent >= counted_from {
                    latencies.push(sent.elapsed());
                }
            }
            latencies
        })
    });
    let latencies = join_all(workers)
        .await
        .into_iter()
        .map(|worker| worker.expect("a load worker finishes"))
        .collect::<Vec<_>>()
        .concat();
    (latencies, counted_from.elapsed())
}

/// Latencies of calls started at a steady `rate` per second for `SECONDS`, after `WARMUP` at
/// the same rate whose calls are not counted: an open loop, as independent clients make calls.
/// Each call is its own task, started on schedule whether or not earlier ones have answered, so
/// a slow answer cannot delay the next call and hide its own cost (coordinated omission). Calls
/// are timed from when they are sent: the timer wheel's 1 ms ticks start them in small bursts.
async fn load_at_rate<F, Fut>(rate: u32, call: F) -> (Vec<Duration>, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    wait_until_quiet().await;
    let period = Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let warmup_calls = (WARMUP.as_secs_f64() * f64::from(rate)) as u64;
    let calls = warmup_calls + SECONDS * u64::from(rate);
    let mut in_flight = Vec::with_capacity(calls as usize);
    for number in 0..calls {
        let due = start + period * number as u32;
        tokio::time::sleep_until(due).await;
        let call = call(number);
        in_flight.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            call.await;
            (number >= warmup_calls).then(|| sent.elapsed())
        }));
    }
    let latencies = join_all(in_flight)
        .await
        .into_iter()
        .filter_map(|latency| latency.expect("a call finishes"))
        .collect();
    (latencies, start.elapsed() - WARMUP)
}

/// Waits, up to 30 s, until the machine's CPUs are at least 90% idle over a quarter second, so
/// that one case is not measured while Cassandra flushes or compacts what the last one did.
async fn wait_until_quiet() {
    /// Idle and total jiffies of all CPUs, from the first line of `/proc/stat`.
    fn cpu_times() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        Some((fields.get(3)? + fields.get(4)?, fields.iter().sum()))
    }
    let give_up = Instant::now() + Duration::from_secs(30);
    while Instant::now() < give_up {
        let Some((idle_before, total_before)) = cpu_times() else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some((idle, total)) = cpu_times() else {
            return;
        };
        if (idle - idle_before) * 10 >= (total - total_before) * 9 {
            return;
        }
    }
}

/// Whether case `name` is to run, by `QUIVER_BENCH_ONLY`.
fn selected(name: &str) -> bool {
    std::env::var("QUIVER_BENCH_ONLY").map_or(true, |only| name.contains(&only))
}

fn report(case: &str, (mut latencies, took): (Vec<Duration>, Duration)) {
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "| {case} | {:.0} | {:.2} | {:.2} |",
        latencies.len() as f64 / took.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
}
