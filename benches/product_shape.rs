//! The serving bench's product workloads: a user view of 34 stored features and 16 windowed
//! aggregates (30-day counts, 1-day sums, 7-day distinct counts), asked for 20 features (14
//! stored, 6 aggregates) or all 50, with uniform and Zipf key choice. Cases: cache hits, cold
//! calls on Cassandra with one call in flight beside direct driver reads of the same partitions,
//! and a mixed steady state whose cache entries expire, with its hit ratio. Each case reports
//! the store reads the server made per call, from its own metric.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use quiver_core::aggregate::{HyperLogLog, Partial, Tile, TileChanges};
use quiver_core::definition::{
    Aggregate, AggregateFunction, Definitions, Derivation, Feature, Registry, Seconds,
};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, FeatureWrite};
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_proto::v1 as pb;
use quiver_scylla::ScyllaStore;
use quiver_serve::{CacheConfig, FeatureServer, ServeConfig, ServeMetrics};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::{Calls, GrpcClient, Measured, load_with, read_directly, report, selected};

/// The view the product workloads read.
const VIEW: &str = "user_activity";
const STORED: usize = 34;
/// Aggregates by function, each `count` of them: 6 + 5 + 5 = 16.
const AGGREGATES: [(&str, usize); 3] = [("count_30d", 6), ("sum_1d", 5), ("distinct_7d", 5)];
/// Of each shape, how many stored features and aggregates of each function it asks for.
const SHAPES: [(usize, [usize; 3]); 2] = [(14, [2, 2, 2]), (STORED, [6, 5, 5])];
const ENTITIES: i64 = 10_000;
/// The Zipf exponent of skewed key choice: the hottest 1% of users get about half the reads.
const ZIPF_EXPONENT: f64 = 1.0;
/// How long an entry lives in the mixed steady state's cache.
pub(crate) const MIXED_TTL: Duration = Duration::from_secs(1);

/// The examples' activity view with 34 stored features and 16 aggregates.
pub(crate) fn definitions(mut definitions: Definitions) -> Definitions {
    let view = definitions
        .feature_views
        .iter_mut()
        .find(|view| view.name.as_str() == VIEW)
        .expect("the examples have user_activity");
    let stored = (0..STORED).map(|i| Feature {
        name: format!("s{i:02}").parse().unwrap(),
        value_type: ValueType::Scalar(ScalarType::String),
        derivation: Derivation::Field("country".into()),
        default: None,
        description: String::new(),
        filter: None,
    });
    let aggregates = AGGREGATES.iter().flat_map(|&(kind, count)| {
        (0..count).map(move |i| {
            let (function, of, value_type, days) = match kind {
                "count_30d" => (AggregateFunction::Count, None, ScalarType::Int64, 30),
                "sum_1d" => (
                    AggregateFunction::Sum,
                    Some("chat_seconds".into()),
                    ScalarType::Float64,
                    1,
                ),
                _ => (
                    AggregateFunction::ApproxDistinct,
                    Some("candidate_id".into()),
                    ScalarType::Int64,
                    7,
                ),
            };
            let window = Seconds(days * 86_400);
            Feature {
                name: format!("{kind}_{i}").parse().unwrap(),
                value_type: ValueType::Scalar(value_type),
                derivation: Derivation::Aggregate(Aggregate {
                    function,
                    of,
                    window: Some(window),
                    resolution: Some(quiver_core::aggregate::default_resolution(window)),
                }),
                default: None,
                description: String::new(),
                filter: None,
            }
        })
    });
    view.features = stored.chain(aggregates).collect();
    definitions
}

/// Writes every entity's stored values and one current tile of each aggregate.
pub(crate) async fn fill(store: &ScyllaStore, registry: &Registry, now_micros: i64) {
    let entity = &registry.entities[0];
    let view = registry.latest_view(&VIEW.parse().unwrap()).unwrap();
    let writes: Vec<FeatureWrite> = (0..ENTITIES)
        .map(|id| FeatureWrite {
            key: user(id),
            event_time_micros: now_micros,
            values: (0..STORED)
                .map(|i| {
                    let name = format!("s{i:02}").parse().unwrap();
                    (name, Value::String(format!("v{id}")))
                })
                .collect(),
        })
        .collect();
    for chunk in writes.chunks(2_000) {
        store
            .write_features(entity, view, chunk)
            .await
            .expect("writes");
    }
    futures::stream::iter(0..ENTITIES)
        .map(|id| async move {
            let tiles = tiles_of(view, id, now_micros);
            store
                .write_tiles(entity, view, &user(id), &TileChanges::of_tiles(tiles))
                .await
                .expect("writes tiles");
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

/// One tile per aggregate of entity `id`, in the tile holding `now_micros`.
fn tiles_of(view: &quiver_core::definition::VersionedView, id: i64, now_micros: i64) -> Vec<Tile> {
    view.view
        .features
        .iter()
        .filter_map(|feature| match &feature.derivation {
            Derivation::Aggregate(aggregate) => Some((feature, aggregate)),
            Derivation::Field(_) => None,
        })
        .map(|(feature, aggregate)| {
            let partial = match aggregate.function {
                AggregateFunction::Sum => Partial::FloatSum(id as f64 / 10.0),
                AggregateFunction::ApproxDistinct => {
                    let mut sketch = HyperLogLog::default();
                    for candidate in 0..(id % 7 + 1) {
                        sketch.insert(&Value::Int64(candidate));
                    }
                    Partial::Distinct(sketch)
                }
                _ => Partial::Count(id as u64 % 50 + 1),
            };
            Tile {
                feature: feature.name.clone(),
                start_micros: aggregate.tile_start(now_micros),
                source: "match-events/0".into(),
                through_offset: id,
                newest_event_micros: now_micros,
                partial,
            }
        })
        .collect()
}

fn user(id: i64) -> EntityKey {
    EntityKey::new(vec![KeyPart::Int64(id)]).unwrap()
}

/// The feature references of a shape: its stored features, then its aggregates.
fn shape_features(stored: usize, aggregates: [usize; 3]) -> Vec<String> {
    let stored = (0..stored).map(|i| format!("{VIEW}:s{i:02}"));
    let aggregates = AGGREGATES
        .iter()
        .zip(aggregates)
        .flat_map(|(&(kind, _), count)| (0..count).map(move |i| format!("{VIEW}:{kind}_{i}")));
    stored.chain(aggregates).collect()
}

/// How call number `call` picks its keys.
#[derive(Clone, Copy)]
enum KeyChoice {
    Uniform,
    /// Zipf over every entity: ranks drawn from the cumulative weights, mapped to ids spread
    /// over the key space.
    Zipf,
}

impl KeyChoice {
    fn name(self) -> &'static str {
        match self {
            KeyChoice::Uniform => "uniform",
            KeyChoice::Zipf => "Zipf",
        }
    }

    fn keys(self, cumulative: &[f64], batch: usize, call: u64) -> Vec<i64> {
        (0..batch as u64)
            .map(|i| {
                let draw = unit(call.wrapping_mul(1_000_003).wrapping_add(i));
                match self {
                    KeyChoice::Uniform => (draw * ENTITIES as f64) as i64 % ENTITIES,
                    KeyChoice::Zipf => {
                        let rank = cumulative.partition_point(|&weight| weight < draw) as i64;
                        rank.min(ENTITIES - 1) * 7_919 % ENTITIES
                    }
                }
            })
            .collect()
    }
}

/// A number in [0, 1) from `seed`: splitmix64, so that runs ask for the same keys.
fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

/// The Zipf distribution's cumulative weights over ranks 1..=ENTITIES, normalised to 1.
fn zipf_cumulative() -> Arc<[f64]> {
    let weights: Vec<f64> = (1..=ENTITIES)
        .map(|rank| 1.0 / (rank as f64).powf(ZIPF_EXPONENT))
        .collect();
    let total: f64 = weights.iter().sum();
    weights
        .iter()
        .scan(0.0, |sum, weight| {
            *sum += weight / total;
            Some(*sum)
        })
        .collect()
}

/// A feature server on `runtime` over `store`, and its metrics.
pub(crate) struct Server {
    client: GrpcClient,
    metrics: Arc<prometheus_client::registry::Registry>,
}

impl Server {
    /// Starts one with the cache entries living `cache_ttl` (`None`: no cache).
    pub(crate) async fn start(
        runtime: &tokio::runtime::Handle,
        store: Arc<ScyllaStore>,
        registry: Arc<Registry>,
        cache_ttl: Option<Duration>,
    ) -> Server {
        let config = ServeConfig {
            cache: cache_ttl.map(|ttl| CacheConfig {
                ttl,
                ..ServeConfig::default()
                    .cache
                    .expect("the default config caches")
            }),
            ..ServeConfig::default()
        };
        let mut metrics = prometheus_client::registry::Registry::default();
        let server = Arc::new(FeatureServer::new(
            config,
            tokio::sync::watch::channel(registry).1,
            store,
            ServeMetrics::register(&mut metrics),
        ));
        let (bound, address) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            bound.send(listener.local_addr().unwrap()).unwrap();
            server.run(listener, std::future::pending()).await
        });
        Server {
            client: GrpcClient::connect(address.await.unwrap()).await,
            metrics: Arc::new(metrics),
        }
    }

    /// The sum of the samples of metric `name` whose labels contain `labels`.
    fn counter(&self, name: &str, labels: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.metrics).expect("encodes");
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn store_reads(&self) -> f64 {
        self.counter("quiver_serve_store_reads_total", "")
    }
}

/// What the product cases share: the servers, the direct read, and the key choices.
pub(crate) struct Product {
    pub(crate) cached: Server,
    pub(crate) uncached: Server,
    pub(crate) mixed: Server,
    pub(crate) session: Arc<Session>,
    pub(crate) keyspace: String,
}

impl Product {
    /// Every product case, at batches 1, 100 and 500 of each shape.
    pub(crate) async fn run(&self) {
        let select = Arc::new(self.prepare_select().await);
        let zipf = zipf_cumulative();
        for (stored, aggregates) in SHAPES {
            let features: Arc<[String]> = shape_features(stored, aggregates).into();
            let shape = format!("{} features ({} aggregates)", features.len(), {
                aggregates.iter().sum::<usize>()
            });
            for batch in [1_usize, 100, 500] {
                for choice in [KeyChoice::Uniform, KeyChoice::Zipf] {
                    let ask: Ask = {
                        let (features, zipf) = (features.clone(), zipf.clone());
                        Arc::new(move |call| request(&features, choice.keys(&zipf, batch, call)))
                    };
                    let prefix = format!("{shape}, batch {batch}, {}", choice.name());
                    self.hits(&prefix, &ask).await;
                    self.mixed_steady_state(&prefix, &ask).await;
                    if let KeyChoice::Uniform = choice {
                        self.cold(&prefix, &ask, &select, &zipf, batch, choice)
                            .await;
                    }
                }
            }
        }
    }

    async fn hits(&self, prefix: &str, ask: &Ask) {
        let case = format!("{prefix}: cache hits");
        if !selected(&case) {
            return;
        }
        let server = &self.cached;
        futures::stream::iter(0..ENTITIES as u64)
            .map(|id| {
                let (client, request) = (server.client.clone(), request_ids(ask, vec![id as i64]));
                async move { client.get_online_features(&request).await }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let measured = self.counted(server, ask, crate::CONCURRENCY).await;
        report_reads(&case, measured);
    }

    /// One call in flight on the server without a cache, and the direct driver reads of the
    /// same partitions, concurrently from the client: the floor of a cold call.
    async fn cold(
        &self,
        prefix: &str,
        ask: &Ask,
        select: &Arc<PreparedStatement>,
        zipf: &Arc<[f64]>,
        batch: usize,
        choice: KeyChoice,
    ) {
        let case = format!("{prefix}: cold, 1 in flight");
        if selected(&case) {
            let measured = self.counted(&self.uncached, ask, 1).await;
            report_reads(&case, measured);
        }
        let case = format!("{prefix}: direct driver reads, 1 in flight");
        if selected(&case) {
            let (session, select, zipf) = (self.session.clone(), select.clone(), zipf.clone());
            let calls: Calls = Arc::new(move |call| {
                let (session, select) = (session.clone(), select.clone());
                let ids = choice.keys(&zipf, batch, call);
                Box::pin(async move { read_directly(&session, &select, ids).await })
            });
            report(&case, load_with(calls, 1).await);
        }
    }

    /// A cache whose entries live `MIXED_TTL`, so that calls mix hits and misses as a serving
    /// fleet's do; its hit ratio comes with it.
    async fn mixed_steady_state(&self, prefix: &str, ask: &Ask) {
        let case = format!("{prefix}: mixed steady state ({MIXED_TTL:?} entries)");
        if !selected(&case) {
            return;
        }
        let server = &self.mixed;
        let (hits, misses) = (
            server.counter("quiver_serve_cache_lookups_total", "result=\"hit\""),
            server.counter("quiver_serve_cache_lookups_total", "result=\"miss\""),
        );
        let measured = self.counted(server, ask, crate::CONCURRENCY).await;
        let hits = server.counter("quiver_serve_cache_lookups_total", "result=\"hit\"") - hits;
        let misses = server.counter("quiver_serve_cache_lookups_total", "result=\"miss\"") - misses;
        let ratio = hits / (hits + misses).max(1.0);
        report_reads(&format!("{case}, hit ratio {ratio:.2}"), measured);
    }

    /// A closed loop of `in_flight` calls on `server`, with the store reads per call.
    async fn counted(&self, server: &Server, ask: &Ask, in_flight: usize) -> (Measured, f64) {
        let (client, ask) = (server.client.clone(), ask.clone());
        let calls: Calls = Arc::new(move |call| {
            let (client, request) = (client.clone(), ask(call));
            Box::pin(async move {
                std::hint::black_box(client.get_online_features(&request).await);
            })
        });
        let before = server.store_reads();
        let measured = load_with(calls, in_flight).await;
        let reads = server.store_reads() - before;
        let made = measured.made.max(1) as f64;
        (measured, reads / made)
    }

    /// The direct read of one activity row: what `read_entity` selects.
    async fn prepare_select(&self) -> PreparedStatement {
        let stored: Vec<String> = (0..STORED)
            .map(|i| format!("s{i:02}, WRITETIME(s{i:02})"))
            .collect();
        let statement = format!(
            "SELECT {}, \"_tiles\", \"_deleted_through\" FROM {}.{VIEW}_v1 WHERE user_id = ?",
            stored.join(", "),
            self.keyspace
        );
        let mut prepared = self.session.prepare(statement).await.expect("prepares");
        prepared.set_use_cached_result_metadata(true);
        prepared
    }
}

/// Makes the request of call number `n`.
type Ask = Arc<dyn Fn(u64) -> pb::GetOnlineFeaturesRequest + Send + Sync>;

fn request_ids(ask: &Ask, ids: Vec<i64>) -> pb::GetOnlineFeaturesRequest {
    let mut request = ask(0);
    request.entities = key_column(ids);
    request
}

fn request(features: &[String], ids: Vec<i64>) -> pb::GetOnlineFeaturesRequest {
    use pb::get_online_features_request::Features;
    pb::GetOnlineFeaturesRequest {
        features: Some(Features::FeatureList(pb::FeatureList {
            features: features.to_vec(),
        })),
        entities: key_column(ids),
        value_format: pb::ValueFormat::Typed.into(),
    }
}

fn key_column(ids: Vec<i64>) -> HashMap<String, pb::KeyColumn> {
    HashMap::from([(
        "user_id".to_owned(),
        pb::KeyColumn {
            values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                values: ids,
            })),
        },
    )])
}

fn report_reads(case: &str, (measured, reads_per_call): (Measured, f64)) {
    report(
        &format!("{case} [{reads_per_call:.1} reads/call]"),
        measured,
    );
}
