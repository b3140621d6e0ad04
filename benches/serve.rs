//! Online serving under load, against the real Cassandra of `scripts/services.sh up`.
//!
//! Run: `scripts/services.sh up && cargo bench -p quiver-benches --bench serve`
//!
//! The server runs on a runtime of its own, built as `quiver serve` builds it, with a store of
//! its own. The load generator, a lean gRPC client on HTTP/2 (one connection, one write per
//! call), and the direct reads run on a second, single-threaded runtime: a client process of
//! one thread beside the server. Side by side in one run, for batches of 1, 10, 100, 250 and 500
//! entities x 20 features:
//! - **cache hits**: the server with its cache warm, replying with a `Value` per cell, and
//!   again with typed columns (`VALUE_FORMAT_TYPED`);
//! - **cache hits floor**: a bare tonic `FeatureService` answering the same columns from a
//!   prefilled moka cache, the least any server answering a hit could do;
//! - **cache misses**: a second server with the cache off, so every call reads the database;
//! - **adapter reads**: `ScyllaStore::read_features` called in the client, the miss path
//!   without the server;
//! - **direct driver reads**: the scylla driver in the client reading and deserializing the
//!   same rows (same columns with their write times, replies without result metadata as the
//!   adapter asks), the floor for a miss;
//! - **empty call making the direct reads**: the least any tonic server adds to a miss, a
//!   gRPC health check (on a server of its own, on the server's runtime) whose handler makes
//!   the call's direct driver reads and answers nothing from them;
//!
//! and, once, the **empty call floor**: a gRPC health check on the same server, a tonic unary
//! call that does no work.
//!
//! Each path first in a closed loop (`CONCURRENCY` calls in flight for `SECONDS`: throughput,
//! and latency at saturation, with the CPU time this process spent per call), then in an open
//! loop at a steady rate well below what it sustains, paths taking turns call by call (misses
//! with direct reads and the empty call making them; hits with the empty call): latency when
//! the machine is not saturated, where the paths of a group meet the same moments of
//! Cassandra's.
//!
//! Then the product workloads of `product_shape`: 20 and 50 features of which a third are
//! windowed aggregates, uniform and Zipf keys, hits, cold calls one at a time beside direct
//! reads, and a mixed steady state, each with the store reads per call.
//!
//! `QUIVER_BENCH_ONLY=<text>|<text>...` runs only the cases whose name contains one of the texts
//! (and the floor), for profiling one path.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

mod product_shape;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use quiver_core::apply::apply;
use quiver_core::definition::{Derivation, Feature};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, FeatureWrite};
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_proto::v1 as pb;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_serve::{CacheConfig, FeatureServer, ServeConfig, ServeMetrics};
use quiver_testkit::contract;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// As in the `quiver` binary: glibc's allocator spent about a third of this benchmark's CPU on
/// its own bookkeeping and arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTITIES: i64 = 10_000;
const FEATURES: usize = 20;
const CONCURRENCY: usize = 16;
const SECONDS: u64 = 3;
/// Counted seconds of each open-loop case: longer, since calls come slower and a p99 needs
/// hundreds of them (10,000 calls of one entity, 100 of a hundred).
const OPEN_LOOP_SECONDS: u64 = 10;
/// Entities read per second on each path in the open-loop cases (1,000 calls/s of one entity,
/// 100 of ten, 10 of a hundred; the paths of a group take turns, so the machine serves two or
/// three times that): a sixth or less of what the miss path sustains at each batch size.
const OPEN_LOOP_ENTITIES_PER_SECOND: u32 = 1_000;
/// Load before each case's counted calls: connection windows, allocator and caches settle.
const WARMUP: Duration = Duration::from_millis(500);

/// The client's runtime: one thread, beside the server's runtime (see the module doc).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let session = Arc::new(quiver_testkit::cql_session().await);
    let keyspace = quiver_testkit::create_keyspace(&session, "bench_serve").await;
    let store_config = ScyllaConfig::one_node(quiver_testkit::cql_nodes(), keyspace.clone());
    let store = Arc::new(ScyllaStore::connect(&store_config).await.expect("connects"));
    // The profile view with 20 string features.
    let mut definitions = product_shape::definitions(contract::example_definitions());
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
            filter: None,
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
    product_shape::fill(&store, &registry, now).await;
    let registry = Arc::new(registry);

    // The server runs on a runtime of its own, built as `quiver serve` builds it, with a store
    // of its own whose connections that runtime drives; the load generator and the direct
    // reads run on this one.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let server_store = Arc::new(
        server_runtime
            .spawn(async move { ScyllaStore::connect(&store_config).await.expect("connects") })
            .await
            .expect("connects"),
    );
    let start = |cache: bool| {
        let (store, registry) = (server_store.clone(), registry.clone());
        let server_runtime = server_runtime.handle().clone();
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
            let (bound, address) = tokio::sync::oneshot::channel();
            server_runtime.spawn(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                server.run(listener, std::future::pending()).await
            });
            GrpcClient::connect(address.await.unwrap()).await
        }
    };
    let cached = start(true).await;
    let uncached = start(false).await;
    let bound = serve_reading_health_check(server_runtime.handle(), keyspace.clone()).await;
    let floor = serve_cache_floor(server_runtime.handle()).await;
    let features: Arc<[String]> = (0..FEATURES)
        .map(|i| format!("user_profile:f{i:02}"))
        .collect();
    println!(
        "{ENTITIES} entities x {FEATURES} features; closed loops of {CONCURRENCY} calls in flight \
         for {SECONDS} s, open loops for {OPEN_LOOP_SECONDS} s; \
         {} cores shared by the load generator, the server and Cassandra\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| case | calls/s | p50 ms | p99 ms | p99.9 ms | CPU µs/call |");
    println!("|---|---:|---:|---:|---:|---:|");

    report(
        "empty call floor (health check)",
        load(health_checks(&cached, |_| String::new())).await,
    );

    let select = Arc::new(prepare_select(&session, &keyspace).await);
    for batch in [1_usize, 10, 100, 250, 500] {
        let ask = {
            let features = features.clone();
            move |call: u64| request(&features, batch, call)
        };
        let ask_typed = {
            let ask = ask.clone();
            move |call: u64| pb::GetOnlineFeaturesRequest {
                value_format: pb::ValueFormat::Typed.into(),
                ..ask(call)
            }
        };
        let hits = get_calls(&cached, ask.clone());
        let misses = get_calls(&uncached, ask.clone());
        let direct = direct_calls(&session, &select, batch);
        let case = format!("batch {batch}: cache hits");
        let rate = OPEN_LOOP_ENTITIES_PER_SECOND / batch as u32;
        let open_hits = format!("batch {batch} at {rate} calls/s: cache hits");
        if selected(&case) || selected(&open_hits) {
            // Warm the cache with every key this batch size will ask for.
            futures::stream::iter(0..ENTITIES as u64 / batch as u64 + 1)
                .map(|call| {
                    let (warm, request) = (cached.clone(), ask(call));
                    async move { warm.get_online_features(&request).await }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
        }
        if selected(&case) {
            report(&case, load(hits.clone()).await);
        }
        let case = format!("batch {batch}: cache hits floor (bare tonic + moka)");
        if selected(&case) {
            report(&case, load(get_calls(&floor, ask.clone())).await);
        }
        let case = format!("batch {batch}: cache hits, typed columns");
        if selected(&case) {
            report(&case, load(get_calls(&cached, ask_typed)).await);
        }
        let case = format!("batch {batch}: cache misses (cache off)");
        if selected(&case) {
            report(&case, load(misses.clone()).await);
        }
        let case = format!("batch {batch}: adapter reads");
        if selected(&case) {
            report(&case, load(adapter_calls(&store, &registry, batch)).await);
        }
        let case = format!("batch {batch}: direct driver reads");
        if selected(&case) {
            report(&case, load(direct.clone()).await);
        }
        let bounded = health_checks(&bound, move |call| {
            let ids: Vec<String> = keys(batch, call).iter().map(i64::to_string).collect();
            ids.join(",")
        });
        let case = format!("batch {batch}: empty call making the direct reads");
        if selected(&case) {
            report(&case, load(bounded.clone()).await);
        }

        // Misses, direct reads and the empty call making them again, at a steady rate well
        // below what any of them sustains: what a client waits for one call when the server is
        // not saturated, rather than queueing behind the other calls in flight. Call by call in
        // turn, so that all meet the same moments of the machine (a pause of Cassandra's, a
        // flush); hits and the empty call likewise, for reference.
        for group in [
            vec![
                (
                    format!("batch {batch} at {rate} calls/s: empty call floor"),
                    health_checks(&cached, |_| String::new()),
                ),
                (open_hits.clone(), hits),
            ],
            vec![
                (
                    format!("batch {batch} at {rate} calls/s: cache misses (cache off)"),
                    misses,
                ),
                (
                    format!("batch {batch} at {rate} calls/s: direct driver reads"),
                    direct,
                ),
                (
                    format!("batch {batch} at {rate} calls/s: empty call making the direct reads"),
                    bounded,
                ),
            ],
        ] {
            let group: Vec<_> = group
                .into_iter()
                .filter(|(case, _)| selected(case))
                .collect();
            if group.is_empty() {
                continue;
            }
            let calls: Vec<Calls> = group.iter().map(|(_, calls)| calls.clone()).collect();
            for ((case, _), measured) in group.iter().zip(load_at_rate(rate, calls).await) {
                report(case, measured);
            }
        }
    }
    let start_product = |cache_ttl| {
        product_shape::Server::start(
            server_runtime.handle(),
            server_store.clone(),
            registry.clone(),
            cache_ttl,
        )
    };
    product_shape::Product {
        cached: start_product(Some(Duration::from_secs(600))).await,
        uncached: start_product(None).await,
        mixed: start_product(Some(product_shape::MIXED_TTL)).await,
        session: session.clone(),
        keyspace: keyspace.clone(),
    }
    .run()
    .await;
    // Dropping a runtime may block, which a runtime's own thread must not do.
    server_runtime.shutdown_background();
}

/// Makes call number `n` of a load, as a future to await.
type Calls = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;

/// One `ScyllaStore::read_features` of each of `batch` entities, concurrently, per call number.
fn adapter_calls(
    store: &Arc<ScyllaStore>,
    registry: &Arc<quiver_core::definition::Registry>,
    batch: usize,
) -> Calls {
    let (store, registry) = (store.clone(), registry.clone());
    Arc::new(move |call| {
        let (store, registry) = (store.clone(), registry.clone());
        Box::pin(async move {
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
        })
    })
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
        ..Default::default()
    }
}

/// One `GetOnlineFeatures` call with `client` per call number, asking `ask(number)`.
fn get_calls(
    client: &GrpcClient,
    ask: impl Fn(u64) -> pb::GetOnlineFeaturesRequest + Send + Sync + 'static,
) -> Calls {
    let client = client.clone();
    Arc::new(move |call| {
        let (client, request) = (client.clone(), ask(call));
        Box::pin(async move {
            std::hint::black_box(client.get_online_features(&request).await);
        })
    })
}

/// One gRPC health check with `client` per call number, asking about the service that `service`
/// names for the call number: on a feature server, with no name, the empty call; on the
/// reading health check, the entity ids to read.
fn health_checks(
    client: &GrpcClient,
    service: impl Fn(u64) -> String + Send + Sync + 'static,
) -> Calls {
    let client = client.clone();
    Arc::new(move |call| {
        let (client, request) = (
            client.clone(),
            HealthCheckRequest {
                service: service(call),
            },
        );
        Box::pin(async move {
            let reply: HealthCheckResponse =
                client.unary("/grpc.health.v1.Health/Check", &request).await;
            assert_eq!(reply.status, ServingStatus::Serving as i32);
        })
    })
}

/// The load generator's gRPC client: unary calls over one HTTP/2 connection, on the h2 crate
/// directly. Each call's headers and message leave in one write, as grpc-go's do; tonic's
/// client sends a call in three frames and three writes (headers, message, end of stream),
/// which would charge the client's own overhead to the server's paths and not to the direct
/// reads.
#[derive(Clone)]
struct GrpcClient {
    connection: h2::client::SendRequest<Bytes>,
    origin: String,
}

impl GrpcClient {
    async fn connect(address: std::net::SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("the server listens");
        tcp.set_nodelay(true).expect("sets TCP_NODELAY");
        let (connection, driver) = h2::client::Builder::new()
            // Windows large enough that flow control never waits on the reader.
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(tcp)
            .await
            .expect("an HTTP/2 server");
        tokio::spawn(async move { driver.await.expect("the connection stays up") });
        GrpcClient {
            connection,
            origin: format!("http://{address}"),
        }
    }

    async fn get_online_features(
        &self,
        request: &pb::GetOnlineFeaturesRequest,
    ) -> pb::GetOnlineFeaturesResponse {
        self.unary("/quiver.v1.FeatureService/GetOnlineFeatures", request)
            .await
    }

    /// Calls `method` with `message` and decodes the reply, which must be OK.
    async fn unary<R: prost::Message + Default>(
        &self,
        method: &str,
        message: &impl prost::Message,
    ) -> R {
        let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
        frame.put_u8(0); // not compressed
        frame.put_u32(message.encoded_len() as u32);
        message.encode(&mut frame).expect("the buffer has room");
        let request = http::Request::post(format!("{}{method}", self.origin))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request");
        let mut connection = self
            .connection
            .clone()
            .ready()
            .await
            .expect("the connection is open");
        let (response, mut body) = connection
            .send_request(request, false)
            .expect("the request is sent");
        body.send_data(frame.freeze(), true)
            .expect("the message is sent");
        let response = response.await.expect("the server answers");
        assert_eq!(response.status(), http::StatusCode::OK);
        let trailers_only = response.headers().get("grpc-status").cloned();
        let mut body = response.into_body();
        let mut reply = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("the reply arrives");
            body.flow_control()
                .release_capacity(chunk.len())
                .expect("capacity to release");
            reply.extend_from_slice(&chunk);
        }
        let status = match trailers_only {
            Some(status) => status,
            None => body
                .trailers()
                .await
                .expect("the trailers arrive")
                .and_then(|trailers| trailers.get("grpc-status").cloned())
                .expect("a grpc-status"),
        };
        assert_eq!(status, "0", "the call succeeds");
        R::decode(reply.get(5..).expect("a length-prefixed message")).expect("the reply decodes")
    }
}

/// The direct read of one profile row: its 20 columns and their write times.
async fn prepare_select(session: &Session, keyspace: &str) -> PreparedStatement {
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
    select
}

/// The least a server can add to a miss: the empty call (a tonic unary call, the gRPC health
/// check) whose handler makes the call's direct driver reads, of the entity ids in the
/// request's `service` field, and answers with nothing from them: no plan, no cache, no reply
/// to build.
struct ReadingHealthCheck {
    session: Session,
    select: PreparedStatement,
}

#[tonic::async_trait]
impl Health for ReadingHealthCheck {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let ids = request
            .into_inner()
            .service
            .split(',')
            .map(|id| id.parse().expect("entity ids"))
            .collect();
        read_directly(&self.session, &self.select, ids).await;
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "this health check reads rows; it does not watch",
        ))
    }
}

/// The least any server answering a cache hit could do: a bare tonic `FeatureService` whose
/// handler looks each requested entity up in a prefilled moka cache of its 20 wire values and
/// answers the same columns as Quiver's server (values cloned into them, statuses, event
/// times), with no registry, plan, key encoding or aggregate.
struct CacheFloor {
    rows: moka::future::Cache<i64, Arc<Vec<pb::Value>>>,
}

#[tonic::async_trait]
impl pb::feature_service_server::FeatureService for CacheFloor {
    async fn get_online_features(
        &self,
        request: tonic::Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<tonic::Response<pb::GetOnlineFeaturesResponse>, tonic::Status> {
        let request = request.into_inner();
        let Some(pb::key_column::Values::Int64Values(ids)) = request
            .entities
            .get("user_id")
            .and_then(|column| column.values.clone())
        else {
            return Err(tonic::Status::invalid_argument("user_id int64 keys"));
        };
        let mut rows = Vec::with_capacity(ids.values.len());
        for id in &ids.values {
            rows.push(self.rows.get(id).await.expect("prefilled"));
        }
        let Some(pb::get_online_features_request::Features::FeatureList(list)) = request.features
        else {
            return Err(tonic::Status::invalid_argument("a feature list"));
        };
        let features = list
            .features
            .into_iter()
            .enumerate()
            .map(|(index, name)| pb::FeatureColumn {
                name,
                values: rows.iter().map(|row| row[index].clone()).collect(),
                statuses: vec![pb::FeatureStatus::Ok as i32; rows.len()],
                event_time_micros: vec![1_790_000_000_000_000; rows.len()],
                typed: None,
            })
            .collect();
        Ok(tonic::Response::new(pb::GetOnlineFeaturesResponse {
            features,
        }))
    }

    async fn list_feature_views(
        &self,
        _: tonic::Request<pb::ListFeatureViewsRequest>,
    ) -> Result<tonic::Response<pb::ListFeatureViewsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the floor only reads"))
    }

    async fn list_feature_services(
        &self,
        _: tonic::Request<pb::ListFeatureServicesRequest>,
    ) -> Result<tonic::Response<pb::ListFeatureServicesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the floor only reads"))
    }

    async fn write_features(
        &self,
        _: tonic::Request<pb::WriteFeaturesRequest>,
    ) -> Result<tonic::Response<pb::WriteFeaturesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the floor only reads"))
    }
}

/// Serves a `CacheFloor` holding every entity on `runtime`, as the feature servers are served;
/// a client of it.
async fn serve_cache_floor(runtime: &tokio::runtime::Handle) -> GrpcClient {
    let (listening, address) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let rows = moka::future::Cache::new(ENTITIES as u64);
        for id in 0..ENTITIES {
            let values = (0..FEATURES)
                .map(|_| quiver_proto::values::to_wire(&Value::String(format!("v{id}"))))
                .collect();
            rows.insert(id, Arc::new(values)).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listening.send(listener.local_addr().unwrap()).unwrap();
        tonic::transport::Server::builder()
            .add_service(pb::feature_service_server::FeatureServiceServer::new(
                CacheFloor { rows },
            ))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
    });
    GrpcClient::connect(address.await.unwrap()).await
}

/// Serves a `ReadingHealthCheck` on `runtime`, as the feature servers are served, with a session
/// of its own that `runtime` drives; a client of it.
async fn serve_reading_health_check(
    runtime: &tokio::runtime::Handle,
    keyspace: String,
) -> GrpcClient {
    let (listening, address) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let session = quiver_testkit::cql_session().await;
        let select = prepare_select(&session, &keyspace).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listening.send(listener.local_addr().unwrap()).unwrap();
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(ReadingHealthCheck { session, select }))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
    });
    GrpcClient::connect(address.await.unwrap()).await
}

/// One direct driver read of `batch` entities per call number.
fn direct_calls(session: &Arc<Session>, select: &Arc<PreparedStatement>, batch: usize) -> Calls {
    let (session, select) = (session.clone(), select.clone());
    Arc::new(move |call| {
        let (session, select) = (session.clone(), select.clone());
        Box::pin(async move { read_directly(&session, &select, keys(batch, call)).await })
    })
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
async fn load(calls: Calls) -> Measured {
    load_with(calls, CONCURRENCY).await
}

/// As [`load`], with `in_flight` calls in flight.
async fn load_with(calls: Calls, in_flight: usize) -> Measured {
    wait_until_quiet().await;
    let cpu_before = process_cpu();
    let counted_from = Instant::now() + WARMUP;
    let until = counted_from + Duration::from_secs(SECONDS);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Each worker is a task of its own on the client's runtime.
    let workers = (0..in_flight).map(|_| {
        let (calls, next) = (calls.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let number = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
                calls(number).await;
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
    let made = next.load(std::sync::atomic::Ordering::Relaxed).max(1);
    Measured {
        took: counted_from.elapsed(),
        latencies,
        cpu_per_call: Some((process_cpu() - cpu_before) / made as u32),
        made,
    }
}

/// Latencies of calls started at a steady `rate` per second on each of `paths`, taking turns
/// call by call, for `OPEN_LOOP_SECONDS` after `WARMUP` at the same rate whose calls are not counted: an
/// open loop, as independent clients make calls. Each call is its own task, started on schedule
/// whether or not earlier ones have answered, so a slow answer cannot delay the next call and
/// hide its own cost (coordinated omission). A thread of its own keeps the schedule, sleeping
/// until each call is due: the runtime's timer wheel ticks every millisecond and would start
/// calls in bursts, each then waiting on its burst's other calls.
async fn load_at_rate(rate: u32, paths: Vec<Calls>) -> Vec<Measured> {
    wait_until_quiet().await;
    let turns = paths.len() as u64;
    let period = Duration::from_secs(1) / (rate * turns as u32);
    let warmup_calls = (WARMUP.as_secs_f64() * f64::from(rate)) as u64 * turns;
    let calls = warmup_calls + OPEN_LOOP_SECONDS * u64::from(rate) * turns;
    let runtime = tokio::runtime::Handle::current();
    let (in_flight, took) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let in_flight: Vec<_> = (0..calls)
            .map(|number| {
                let due = start + period * number as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let call = paths[(number % turns) as usize](number / turns);
                runtime.spawn(async move {
                    let sent = Instant::now();
                    call.await;
                    sent.elapsed()
                })
            })
            .collect();
        (in_flight, start.elapsed() - WARMUP)
    })
    .await
    .expect("the schedule is kept");
    let mut measured: Vec<Measured> = (0..turns)
        .map(|_| Measured {
            latencies: Vec::new(),
            took,
            cpu_per_call: None,
            made: calls / turns,
        })
        .collect();
    for (number, latency) in (0..).zip(join_all(in_flight).await) {
        if number >= warmup_calls {
            measured[(number % turns) as usize]
                .latencies
                .push(latency.expect("a call finishes"));
        }
    }
    measured
}

/// What one case measured.
struct Measured {
    /// Of each counted call.
    latencies: Vec<Duration>,
    /// How long the counted calls took, together.
    took: Duration,
    /// CPU time of this process (load generator, server and driver; not Cassandra) per call,
    /// warm-up included, where the case ran alone.
    cpu_per_call: Option<Duration>,
    /// Calls made, warm-up included.
    made: u64,
}

/// CPU time this process has used so far, from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("a Linux /proc");
    // utime and stime: fields 14 and 15, counted after the parenthesised command name.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse::<u64>().expect("a tick count"))
        .sum();
    // In units of USER_HZ, which Linux fixes at 100 a second.
    Duration::from_millis(ticks * 10)
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

/// Whether case `name` is to run, by `QUIVER_BENCH_ONLY`: texts separated by `|`, one of which
/// the name contains.
fn selected(name: &str) -> bool {
    std::env::var("QUIVER_BENCH_ONLY")
        .map_or(true, |only| only.split('|').any(|part| name.contains(part)))
}

fn report(case: &str, measured: Measured) {
    let Measured {
        mut latencies,
        took,
        cpu_per_call,
        ..
    } = measured;
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "| {case} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        latencies.len() as f64 / took.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(0.999),
        cpu_per_call.map_or(String::new(), |cpu| cpu.as_micros().to_string()),
    );
}
