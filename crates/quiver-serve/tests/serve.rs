//! `quiver.v1.FeatureService` over the real Cassandra: what is served equals what was written,
//! in request order, with the right statuses; bad requests get their documented codes; cold
//! keys are read once however many clients ask; the TTL and deletions reach the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quiver_core::aggregate::{EntityTiles, LIFETIME_TILE_START, Partial, Tile, TileChanges};
use quiver_core::apply::apply;
use quiver_core::definition::{Definitions, Derivation, Entity, Feature, Registry, VersionedView};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::{
    EntityRow, FeatureStore, FeatureWrite, OnlineStore, StoreError, StoredValue,
};
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_embedded::EmbeddedStore;
use quiver_proto::v1 as pb;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::get_online_features_request::Features;
use quiver_proto::v1::key_column::Values;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use quiver_serve::{FeatureServer, ServeConfig, ServeMetrics};
use quiver_testkit::contract;
use tonic::Code;
use tonic::transport::Channel;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn user(id: i64) -> EntityKey {
    EntityKey::new(vec![KeyPart::Int64(id)]).unwrap()
}

/// A real store, slowed down by `delay_ms` per read when a test needs a slow database.
struct Store<S = ScyllaStore> {
    inner: S,
    delay_ms: std::sync::atomic::AtomicU64,
}

impl<S: FeatureStore> FeatureStore for Store<S> {
    async fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<(), StoreError> {
        self.inner.write_features(entity, view, writes).await
    }

    async fn delete_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        event_time_micros: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .delete_entity(entity, view, key, event_time_micros)
            .await
    }

    async fn read_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        key: &EntityKey,
    ) -> Result<Vec<Option<StoredValue>>, StoreError> {
        let delay = self.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.read_features(entity, view, features, key).await
    }

    async fn read_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
    ) -> Result<EntityRow, StoreError> {
        let delay = self.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.read_entity(entity, view, key).await
    }

    async fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        changes: &TileChanges,
    ) -> Result<(), StoreError> {
        self.inner.write_tiles(entity, view, key, changes).await
    }

    async fn read_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> Result<EntityTiles, StoreError> {
        self.inner.read_tiles(entity, view, key, feature).await
    }
}

/// A server over a fresh store (a Cassandra keyspace, or an embedded store's file) with the
/// examples applied.
struct Served<S = ScyllaStore> {
    store: Arc<Store<S>>,
    registry: Registry,
    server: Arc<FeatureServer<Store<S>>>,
    client: FeatureServiceClient<Channel>,
    address: std::net::SocketAddr,
    metrics: prometheus_client::registry::Registry,
    /// The embedded store's folder, removed when the test ends.
    _folder: Option<tempfile::TempDir>,
}

impl Served {
    /// A server over the real Cassandra.
    async fn start(config: ServeConfig, delay: Duration) -> Served {
        let session = quiver_testkit::cql_session().await;
        let keyspace = quiver_testkit::create_keyspace(&session, "serve").await;
        let inner = ScyllaStore::connect(&ScyllaConfig::one_node(
            quiver_testkit::cql_nodes(),
            keyspace,
        ))
        .await
        .expect("connects");
        Served::over(inner, &contract::example_definitions(), config, delay, None).await
    }
}

impl Served<EmbeddedStore> {
    /// A server over an embedded store in a folder of its own, with `definitions` applied.
    async fn embedded(config: ServeConfig, definitions: &Definitions) -> Self {
        let folder = tempfile::tempdir().unwrap();
        let inner = EmbeddedStore::open(&folder.path().join("quiver.redb")).expect("opens");
        Served::over(inner, definitions, config, Duration::ZERO, Some(folder)).await
    }
}

impl<S: FeatureStore + OnlineStore + 'static> Served<S> {
    async fn over(
        inner: S,
        definitions: &Definitions,
        config: ServeConfig,
        delay: Duration,
        folder: Option<tempfile::TempDir>,
    ) -> Self {
        let registry = apply(&inner, definitions, false)
            .await
            .expect("applies")
            .registry;
        let store = Arc::new(Store {
            inner,
            delay_ms: (delay.as_millis() as u64).into(),
        });
        let mut metrics = prometheus_client::registry::Registry::default();
        let server = Arc::new(FeatureServer::new(
            config,
            tokio::sync::watch::channel(Arc::new(registry.clone())).1,
            store.clone(),
            ServeMetrics::register(&mut metrics),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let serving = server.clone();
        tokio::spawn(async move { serving.run(listener, std::future::pending()).await });
        let client = FeatureServiceClient::connect(format!("http://{address}"))
            .await
            .expect("the server answers");
        Served {
            store,
            registry,
            server,
            client,
            address,
            metrics,
            _folder: folder,
        }
    }

    fn view(&self, name: &str) -> &VersionedView {
        self.registry.latest_view(&name.parse().unwrap()).unwrap()
    }

    async fn write(&self, view: &str, id: i64, event_time_micros: i64, values: &[(&str, Value)]) {
        let write = FeatureWrite {
            key: user(id),
            event_time_micros,
            values: values
                .iter()
                .map(|(name, value)| (name.parse().unwrap(), value.clone()))
                .collect(),
        };
        self.store
            .write_features(&self.registry.entities[0], self.view(view), &[write])
            .await
            .expect("writes");
    }

    fn counter(&self, name: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.metrics).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }
}

fn request(features: &[&str], users: &[i64]) -> pb::GetOnlineFeaturesRequest {
    pb::GetOnlineFeaturesRequest {
        features: Some(Features::FeatureList(pb::FeatureList {
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        })),
        entities: HashMap::from([(
            "user_id".to_owned(),
            pb::KeyColumn {
                values: Some(Values::Int64Values(pb::Int64List {
                    values: users.to_vec(),
                })),
            },
        )]),
        ..Default::default()
    }
}

fn string(text: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::StringValue(text.into())),
    }
}

const OK: i32 = pb::FeatureStatus::Ok as i32;
const NOT_FOUND: i32 = pb::FeatureStatus::NotFound as i32;
const EXPIRED: i32 = pb::FeatureStatus::Expired as i32;
const STALE: i32 = pb::FeatureStatus::Stale as i32;

#[tokio::test]
async fn served_values_equal_written_ones_in_request_order_with_statuses() {
    let mut served = Served::start(ServeConfig::default(), Duration::ZERO).await;
    let at = now_micros() - 1_000_000;
    let embedding: Vec<f32> = (0..32).map(|i| i as f32).collect();
    served
        .write(
            "user_profile",
            1,
            at,
            &[
                ("country", Value::String("SE".into())),
                ("bio_embedding", Value::Float32List(embedding.clone())),
            ],
        )
        .await;
    served
        .write(
            "user_profile",
            2,
            at - 5,
            &[("country", Value::String("NO".into()))],
        )
        .await;

    // Duplicates, and user 3 who has nothing.
    let reply = served
        .client
        .get_online_features(request(
            &["user_profile:country", "user_profile:bio_embedding"],
            &[2, 1, 3, 2, 1],
        ))
        .await
        .expect("answers")
        .into_inner();
    let country = &reply.features[0];
    assert_eq!(country.name, "user_profile:country");
    assert_eq!(
        country.values,
        [
            string("NO"),
            string("SE"),
            pb::Value::default(),
            string("NO"),
            string("SE")
        ]
    );
    assert_eq!(country.statuses, [OK, OK, NOT_FOUND, OK, OK]);
    assert_eq!(country.event_time_micros, [at - 5, at, 0, at - 5, at]);
    let bio = &reply.features[1];
    assert_eq!(bio.statuses, [NOT_FOUND, OK, NOT_FOUND, NOT_FOUND, OK]);
    assert_eq!(
        bio.values[1],
        pb::Value {
            kind: Some(pb::value::Kind::Float32ListValue(pb::Float32List {
                values: embedding
            }))
        }
    );
    assert_eq!(
        served.counter("quiver_serve_store_reads_total"),
        3,
        "each distinct user is read once"
    );

    // A feature service answers in its declared order, across two views.
    let reply = served
        .client
        .get_online_features(pb::GetOnlineFeaturesRequest {
            features: Some(Features::FeatureService("ranker_v1".into())),
            ..request(&[], &[1])
        })
        .await
        .expect("answers")
        .into_inner();
    let names: Vec<&str> = reply.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "user_activity:actions_1h",
            "user_activity:chat_seconds_24h",
            "user_activity:last_country",
            "user_profile:country",
            "user_profile:verified",
            "user_profile:bio_embedding"
        ]
    );
    assert_eq!(reply.features[3].values, [string("SE")]);
}

#[tokio::test]
async fn a_value_past_its_ttl_is_expired_and_a_deletion_reaches_the_cache() {
    let mut served = Served::start(ServeConfig::default(), Duration::ZERO).await;
    // user_activity keeps values for 7 days: this one has two seconds left.
    let seven_days = 7 * 86_400 * 1_000_000;
    served
        .write(
            "user_activity",
            7,
            now_micros() - seven_days + 2_000_000,
            &[("last_country", Value::String("FI".into()))],
        )
        .await;
    let ask = || request(&["user_activity:last_country"], &[7]);
    let first = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.features[0].statuses, [OK]);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let later = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        later.features[0].statuses,
        [EXPIRED],
        "served from the cache, past the TTL"
    );

    served
        .write(
            "user_profile",
            8,
            now_micros(),
            &[("country", Value::String("DK".into()))],
        )
        .await;
    let ask = || request(&["user_profile:country"], &[8]);
    let before = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.features[0].statuses, [OK]);
    served
        .store
        .delete_entity(
            &served.registry.entities[0],
            served.view("user_profile"),
            &user(8),
            now_micros(),
        )
        .await
        .unwrap();
    let cached = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cached.features[0].statuses,
        [OK],
        "the cache still holds the row"
    );
    served.server.invalidate("user", &user(8)).await;
    let after = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.features[0].statuses, [NOT_FOUND]);
}

#[tokio::test]
async fn many_clients_asking_for_the_same_cold_keys_make_one_read_per_key() {
    // A slow store, so the clients' misses overlap.
    let served = Served::start(ServeConfig::default(), Duration::from_millis(200)).await;
    for id in 0..10 {
        served
            .write(
                "user_profile",
                id,
                now_micros(),
                &[("country", Value::String("SE".into()))],
            )
            .await;
    }
    let users: Vec<i64> = (0..10).collect();
    let calls = (0..50).map(|_| {
        let mut client = served.client.clone();
        let ask = request(&["user_profile:country"], &users);
        async move { client.get_online_features(ask).await }
    });
    for reply in futures::future::join_all(calls).await {
        assert_eq!(
            reply.expect("answers").into_inner().features[0].statuses,
            [OK; 10]
        );
    }
    assert_eq!(served.counter("quiver_serve_store_reads_total"), 10);
}

#[tokio::test]
async fn bad_requests_get_their_documented_codes() {
    let config = ServeConfig {
        max_entities: 100,
        max_request_bytes: 16 * 1024,
        ..ServeConfig::default()
    };
    let mut served = Served::start(config, Duration::ZERO).await;
    let service = |name: &str| pb::GetOnlineFeaturesRequest {
        features: Some(Features::FeatureService(name.into())),
        ..request(&[], &[1])
    };
    let mut wrong_type = request(&["user_profile:country"], &[]);
    wrong_type.entities.insert(
        "user_id".into(),
        pb::KeyColumn {
            values: Some(Values::StringValues(pb::StringList {
                values: vec!["1".into()],
            })),
        },
    );
    let mut no_key = request(&["user_profile:country"], &[1]);
    no_key.entities = HashMap::from([(
        "account_id".into(),
        no_key.entities.remove("user_id").unwrap(),
    )]);
    let too_many: Vec<i64> = (0..101).collect();
    let long_name = "x".repeat(20 * 1024);
    let cases = [
        (
            request(&[], &[1]),
            Code::InvalidArgument,
            "no features requested",
        ),
        (
            request(&["country"], &[1]),
            Code::InvalidArgument,
            "`country` is not a feature reference",
        ),
        (
            request(&["user_prof:country"], &[1]),
            Code::NotFound,
            "feature view `user_prof`",
        ),
        (
            request(&["user_profile:colour"], &[1]),
            Code::NotFound,
            "has no feature `colour`",
        ),
        (
            request(&["user_profile@9:country"], &[1]),
            Code::NotFound,
            "has no version 9",
        ),
        (
            service("ranker_v9"),
            Code::NotFound,
            "feature service `ranker_v9`",
        ),
        (
            wrong_type,
            Code::InvalidArgument,
            "key `user_id` of entity `user` is int64, but the request gives string",
        ),
        (no_key, Code::InvalidArgument, "no such key column"),
        (
            request(&["user_profile:country"], &too_many),
            Code::InvalidArgument,
            "101 entity rows requested",
        ),
        (
            request(&[long_name.as_str()], &[1]),
            Code::InvalidArgument,
            "bytes",
        ),
    ];
    for (request, code, words) in cases {
        let status = served
            .client
            .get_online_features(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(words), "{}", status.message());
    }
}

#[tokio::test]
async fn a_slow_store_gives_deadline_exceeded_unavailable_or_resource_exhausted_never_a_hang() {
    let config = ServeConfig {
        max_in_flight: 1,
        read_timeout: Some(Duration::from_millis(1_500)),
        cache: None,
        ..ServeConfig::default()
    };
    let served = Served::start(config, Duration::from_millis(3_000)).await;
    let ask = || request(&["user_profile:country"], &[1]);

    let mut client = served.client.clone();
    let mut with_deadline = tonic::Request::new(ask());
    // A deadline long enough that the server's early answer (a tenth before it) has room to
    // reach the client on a busy machine before the client's own timer cancels the call.
    with_deadline.set_timeout(Duration::from_millis(1_000));
    let started = std::time::Instant::now();
    let status = client.get_online_features(with_deadline).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    assert!(started.elapsed() < Duration::from_millis(1_000));

    let started = std::time::Instant::now();
    let (mut one, mut two) = (served.client.clone(), served.client.clone());
    let (first, second) = tokio::join!(one.get_online_features(ask()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        two.get_online_features(ask()).await
    });
    let first = first.unwrap_err();
    assert_eq!(first.code(), Code::Unavailable, "{}", first.message());
    assert!(
        first.message().contains("did not answer within"),
        "{}",
        first.message()
    );
    assert!(
        served.counter("quiver_serve_store_errors_total") >= 1,
        "the timed-out read is counted as a store error"
    );
    let second = second.unwrap_err();
    assert_eq!(
        second.code(),
        Code::ResourceExhausted,
        "{}",
        second.message()
    );
    assert!(started.elapsed() < Duration::from_millis(2_900));
}

#[tokio::test]
async fn health_discovery_and_reflection_answer() {
    let mut served = Served::start(ServeConfig::default(), Duration::ZERO).await;
    let channel = Channel::from_shared(format!("http://{}", served.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "quiver.v1.FeatureService".into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let views = served
        .client
        .list_feature_views(pb::ListFeatureViewsRequest {})
        .await
        .unwrap()
        .into_inner()
        .feature_views;
    let profile = views
        .iter()
        .find(|view| view.name == "user_profile")
        .unwrap();
    assert_eq!(profile.key_fields, ["user_id"]);
    assert_eq!(profile.key_types, ["int64"]);
    assert!(
        profile
            .features
            .iter()
            .any(|f| f.name == "bio_embedding" && f.r#type == "embedding<32>")
    );
    let services = served
        .client
        .list_feature_services(pb::ListFeatureServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .feature_services;
    assert_eq!(services[0].name, "ranker_v1");

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let channel_alpha = channel.clone();
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([ask]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"quiver.v1.FeatureService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // The older protocol version too, which ghz and grpcurl before 1.9 ask.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let ask = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::FileContainingSymbol(
            "quiver.v1.FeatureService".into(),
        )),
    };
    let answer = AlphaClient::new(channel_alpha)
        .server_reflection_info(futures::stream::iter([ask]))
        .await
        .expect("v1alpha reflection answers")
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("an answer");
    let Some(AlphaResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!(
            "the file declaring the service, got {:?}",
            answer.message_response
        )
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn a_store_out_of_reach_serves_the_last_values_marked_stale_where_configured() {
    let config = ServeConfig {
        read_timeout: Some(Duration::from_millis(200)),
        cache: Some(quiver_serve::CacheConfig {
            capacity_bytes: 1 << 20,
            ttl: Duration::from_millis(100),
            negative_ttl: Duration::from_millis(100),
            serve_stale_for: Some(Duration::from_secs(60)),
        }),
        ..ServeConfig::default()
    };
    let mut served = Served::start(config, Duration::ZERO).await;
    let at = now_micros();
    served
        .write(
            "user_profile",
            4,
            at,
            &[("country", Value::String("IS".into()))],
        )
        .await;
    let ask = || request(&["user_profile:country"], &[4, 5]);
    let fresh = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.features[0].statuses, [OK, NOT_FOUND]);

    // The database stops answering in time; the cache's own TTL has passed.
    served
        .store
        .delay_ms
        .store(1_000, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stale = served
        .client
        .get_online_features(ask())
        .await
        .unwrap()
        .into_inner();
    let column = &stale.features[0];
    assert_eq!(
        column.statuses,
        [STALE, NOT_FOUND],
        "the absent user stays absent"
    );
    assert_eq!(column.values[0], string("IS"));
    assert_eq!(column.event_time_micros[0], at);

    // An entity never read before has nothing to fall back on.
    let status = served
        .client
        .get_online_features(request(&["user_profile:country"], &[6]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
}

fn int64(value: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Int64Value(value)),
    }
}

/// A pushed row of `user_profile`: user `id`'s country at `event_time_micros`.
fn pushed(id: i64, event_time_micros: i64, country: &str) -> pb::FeatureRow {
    pb::FeatureRow {
        keys: HashMap::from([("user_id".to_owned(), int64(id))]),
        values: HashMap::from([("country".to_owned(), string(country))]),
        event_time_micros,
    }
}

fn push(view: &str, rows: Vec<pb::FeatureRow>) -> pb::WriteFeaturesRequest {
    pb::WriteFeaturesRequest {
        feature_view: view.into(),
        rows,
    }
}

#[tokio::test]
async fn pushed_rows_are_served_at_once_and_event_time_orders_them() {
    let mut served = Served::start(ServeConfig::default(), Duration::ZERO).await;
    let now = now_micros();
    let country = |reply: pb::GetOnlineFeaturesResponse| {
        let column = &reply.features[0];
        (column.values[0].clone(), column.event_time_micros[0])
    };
    let read = |served: &mut Served| {
        let mut client = served.client.clone();
        async move {
            client
                .get_online_features(request(&["user_profile:country"], &[21]))
                .await
                .expect("answers")
                .into_inner()
        }
    };
    let written = served
        .client
        .write_features(push(
            "user_profile",
            vec![pushed(21, now - 2_000_000, "SE"), pushed(22, now, "NO")],
        ))
        .await
        .expect("writes")
        .into_inner();
    assert_eq!(written.rows_written, 2);
    assert_eq!(served.counter("quiver_serve_rows_pushed_total"), 2);
    assert_eq!(
        country(read(&mut served).await),
        (string("SE"), now - 2_000_000)
    );

    // The cached row is dropped by a newer push; an older one changes nothing.
    served
        .client
        .write_features(push(
            "user_profile@1",
            vec![pushed(21, now - 1_000_000, "FI")],
        ))
        .await
        .expect("writes");
    assert_eq!(
        country(read(&mut served).await),
        (string("FI"), now - 1_000_000)
    );
    served
        .client
        .write_features(push(
            "user_profile",
            vec![pushed(21, now - 3_000_000, "DK")],
        ))
        .await
        .expect("writes");
    assert_eq!(
        country(read(&mut served).await),
        (string("FI"), now - 1_000_000)
    );
}

#[tokio::test]
async fn every_bad_push_is_refused_whole_naming_the_row_and_why() {
    let config = ServeConfig {
        max_entities: 3,
        ..ServeConfig::default()
    };
    let mut served = Served::start(config, Duration::ZERO).await;
    let now = now_micros();
    let good = pushed(77, now, "SE");
    let with = |change: &dyn Fn(&mut pb::FeatureRow)| {
        let mut row = pushed(78, now, "NO");
        change(&mut row);
        push("user_profile", vec![good.clone(), row])
    };
    let cases: Vec<(pb::WriteFeaturesRequest, &str)> = vec![
        (
            pb::WriteFeaturesRequest {
                feature_view: "nope".into(),
                rows: vec![good.clone()],
            },
            "feature view `nope` is not in the registry",
        ),
        (
            push("user_profile@9", vec![good.clone()]),
            "feature view `user_profile@9` is not in the registry",
        ),
        (
            with(&|row| {
                row.values.insert("favourite_colour".into(), string("blue"));
            }),
            "row 1: feature view `user_profile` has no feature `favourite_colour`",
        ),
        (
            with(&|row| {
                row.values.insert("country".into(), int64(46));
            }),
            "row 1: feature `user_profile:country`: expected a value of type string, got int64",
        ),
        (
            with(&|row| row.keys.clear()),
            "row 1: key field `user_id` of entity `user` is missing",
        ),
        (
            with(&|row| {
                row.keys.insert("user_id".into(), string("78"));
            }),
            "row 1: key field `user_id` of entity `user` is int64, got string",
        ),
        (
            with(&|row| {
                row.keys.insert("item_id".into(), int64(5));
            }),
            "row 1: `item_id` is not a key field of entity `user`",
        ),
        (
            with(&|row| row.event_time_micros = 0),
            "row 1: event_time_micros is not set",
        ),
        (
            with(&|row| row.event_time_micros = 1_000_000),
            "row 1: event_time_micros 1000000 is before 2000",
        ),
        (
            pb::WriteFeaturesRequest {
                feature_view: "user_activity".into(),
                rows: vec![pb::FeatureRow {
                    keys: HashMap::from([("user_id".to_owned(), int64(77))]),
                    values: HashMap::from([("actions_1h".to_owned(), int64(3))]),
                    event_time_micros: now,
                }],
            },
            "row 0: feature `actions_1h` of view `user_activity` is an aggregate",
        ),
        (
            push("user_profile", vec![good.clone(); 4]),
            "4 rows given; this server takes at most 3 per call",
        ),
    ];
    for (request, message) in cases {
        let status = served
            .client
            .write_features(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
    let stored = served
        .store
        .read_features(
            &served.registry.entities[0],
            served.view("user_profile"),
            &["country".parse().unwrap()],
            &user(77),
        )
        .await
        .expect("reads");
    assert_eq!(stored, [None], "nothing of a refused push is written");
}

#[tokio::test]
async fn a_client_that_never_lets_go_does_not_keep_a_stopping_server_alive() {
    use tokio::io::AsyncWriteExt;
    let config = ServeConfig {
        drain_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let served = Served::start(config, Duration::ZERO).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = served.server.clone();
    let running = tokio::spawn(async move {
        server
            .run(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    // An HTTP/2 client that opens its connection and then never answers again, as a client
    // whose process hangs does: the server's goodbye is never acknowledged.
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the server stops within its drain timeout")
        .unwrap()
        .expect("and stops cleanly");
    drop(silent);
}

fn count_tile(feature: &str, start_micros: i64, count: u64, newest_event_micros: i64) -> Tile {
    Tile {
        feature: feature.parse().unwrap(),
        start_micros,
        source: "match-events/0".into(),
        through_offset: count as i64,
        newest_event_micros,
        partial: Partial::Count(count),
    }
}

#[tokio::test]
async fn a_cold_call_of_500_users_reads_each_part_of_each_view_once_per_user_on_cassandra() {
    let served = Served::start(ServeConfig::default(), Duration::ZERO).await;
    a_cold_call_of_500_users_reads_each_part_of_each_view_once_per_user(served).await;
}

#[tokio::test]
async fn a_cold_call_of_500_users_reads_each_part_of_each_view_once_per_user_on_the_embedded_store()
{
    let served = Served::embedded(ServeConfig::default(), &contract::example_definitions()).await;
    a_cold_call_of_500_users_reads_each_part_of_each_view_once_per_user(served).await;
}

/// 500 users with stored features of two views and aggregates of one, read cold in one call
/// in both reply formats: every value as written, and one store read per part of each view
/// per user.
async fn a_cold_call_of_500_users_reads_each_part_of_each_view_once_per_user<
    S: FeatureStore + OnlineStore + 'static,
>(
    served: Served<S>,
) {
    let now = now_micros();
    let at = now - 1_000_000;
    // The tile of `actions_1h` holding `at`: 5-minute tiles, aligned to the epoch.
    let five_minutes = 300_000_000;
    let recent_tile = at.div_euclid(five_minutes) * five_minutes;
    let users: Vec<i64> = (0..500).collect();
    let activity = served.view("user_activity").clone();
    for &id in &users {
        served
            .write(
                "user_profile",
                id,
                at,
                &[("country", Value::String(format!("c{id}")))],
            )
            .await;
        served
            .write(
                "user_activity",
                id,
                at,
                &[("last_country", Value::String(format!("l{id}")))],
            )
            .await;
        let tiles = [
            count_tile("actions_total", LIFETIME_TILE_START, id as u64 + 1, at),
            count_tile("actions_1h", recent_tile, 2, at),
        ];
        served
            .store
            .write_tiles(
                &served.registry.entities[0],
                &activity,
                &user(id),
                &TileChanges::of_tiles(tiles.to_vec()),
            )
            .await
            .expect("writes tiles");
    }

    let ask = request(
        &[
            "user_profile:country",
            "user_activity:actions_total",
            "user_activity:last_country",
            "user_activity:actions_1h",
        ],
        &users,
    );
    let reply = served
        .client
        .clone()
        .get_online_features(ask.clone())
        .await
        .expect("answers")
        .into_inner();
    let int64 = |value| pb::Value {
        kind: Some(pb::value::Kind::Int64Value(value)),
    };
    for (row, &id) in users.iter().enumerate() {
        let served_row: Vec<&pb::Value> = reply
            .features
            .iter()
            .map(|column| &column.values[row])
            .collect();
        assert_eq!(
            served_row,
            [
                &string(&format!("c{id}")),
                &int64(id + 1),
                &string(&format!("l{id}")),
                &int64(2)
            ],
            "user {id}"
        );
        for column in &reply.features {
            assert_eq!(column.statuses[row], OK, "{} of user {id}", column.name);
            assert_eq!(
                column.event_time_micros[row], at,
                "{} of user {id}",
                column.name
            );
        }
    }
    assert_eq!(
        served.counter("quiver_serve_store_reads_total"),
        500 * 2,
        "per user, one read of each view: the activity's values and all its tiles together"
    );
    let typed = served
        .client
        .clone()
        .get_online_features(typed_format(ask))
        .await
        .expect("answers")
        .into_inner();
    assert_same_cells(&reply, &typed);
}

#[tokio::test]
async fn an_entity_the_view_never_saw_is_not_found_and_an_inactive_one_counts_zero() {
    let served = Served::embedded(ServeConfig::default(), &contract::example_definitions()).await;
    let at = now_micros() - 3 * 86_400_000_000;
    let activity = served.view("user_activity").clone();
    // User 1 acted three days ago: a lifetime count, nothing in the last hour.
    served
        .store
        .write_tiles(
            &served.registry.entities[0],
            &activity,
            &user(1),
            &TileChanges::of_tiles(vec![count_tile(
                "actions_total",
                LIFETIME_TILE_START,
                3,
                at,
            )]),
        )
        .await
        .expect("writes tiles");
    // User 2 has a stored value of the view and no aggregate tile at all.
    served
        .write(
            "user_activity",
            2,
            at,
            &[("last_country", Value::String("SE".into()))],
        )
        .await;
    let reply = served
        .client
        .clone()
        .get_online_features(request(
            &[
                "user_activity:actions_1h",
                "user_activity:actions_total",
                "user_activity:recent_candidates",
            ],
            &[1, 2, 99],
        ))
        .await
        .expect("answers")
        .into_inner();
    let cells = |row: usize| -> Vec<(i32, Option<pb::Value>)> {
        reply
            .features
            .iter()
            .map(|column| {
                let value = column.values[row].clone();
                (column.statuses[row], value.kind.is_some().then_some(value))
            })
            .collect()
    };
    let int64 = |value| {
        Some(pb::Value {
            kind: Some(pb::value::Kind::Int64Value(value)),
        })
    };
    let empty_list = Some(pb::Value {
        kind: Some(pb::value::Kind::Int64ListValue(pb::Int64List {
            values: vec![],
        })),
    });
    assert_eq!(
        cells(0),
        [(OK, int64(0)), (OK, int64(3)), (OK, empty_list.clone())],
        "user 1 is known and has been quiet for an hour"
    );
    assert_eq!(
        cells(1),
        [(OK, int64(0)), (OK, int64(0)), (OK, empty_list)],
        "user 2 is known by a stored value"
    );
    assert_eq!(
        cells(2),
        [(NOT_FOUND, None), (NOT_FOUND, None), (NOT_FOUND, None)],
        "user 99 was never seen"
    );
}

fn typed_format(request: pb::GetOnlineFeaturesRequest) -> pb::GetOnlineFeaturesRequest {
    pb::GetOnlineFeaturesRequest {
        value_format: pb::ValueFormat::Typed.into(),
        ..request
    }
}

/// That a reply in `Value`s and one in typed columns carry the same cells, and that each
/// fills only its own field.
fn assert_same_cells(
    values: &pb::GetOnlineFeaturesResponse,
    typed: &pb::GetOnlineFeaturesResponse,
) {
    assert_eq!(values.features.len(), typed.features.len());
    for (by_value, by_type) in values.features.iter().zip(&typed.features) {
        let name = &by_value.name;
        assert_eq!(&by_type.name, name);
        assert_eq!(by_type.statuses, by_value.statuses, "{name}");
        assert_eq!(
            by_type.event_time_micros, by_value.event_time_micros,
            "{name}"
        );
        assert!(
            by_value.typed.is_none(),
            "{name}: no typed column unless asked for"
        );
        assert!(
            by_type.values.is_empty(),
            "{name}: no Values in a typed reply"
        );
        let rows = by_value.statuses.len();
        let typed_rows =
            quiver_proto::columns::typed_rows(by_type.typed.clone().expect("typed"), rows)
                .expect("a well-formed typed column");
        for (row, (value, typed)) in by_value.values.iter().zip(typed_rows).enumerate() {
            if by_value.statuses[row] == OK || by_value.statuses[row] == STALE {
                assert_eq!(
                    quiver_proto::values::from_wire(value.clone()),
                    Some(typed),
                    "{name}, row {row}"
                );
            } else {
                assert_eq!(value, &pb::Value::default(), "{name}, row {row}");
            }
        }
    }
}

/// Every type a feature can be declared with.
const EVERY_TYPE: [&str; 17] = [
    "bool",
    "int32",
    "int64",
    "float32",
    "float64",
    "string",
    "bytes",
    "timestamp",
    "list<bool>",
    "list<int32>",
    "list<int64>",
    "list<float32>",
    "list<float64>",
    "list<string>",
    "list<bytes>",
    "list<timestamp>",
    "embedding<4>",
];

/// The examples, plus a view `every_type` (keyed by user, written directly) with one feature
/// per declared type, `f0` to `f16` in [`EVERY_TYPE`] order.
fn with_every_type() -> Definitions {
    let mut definitions = contract::example_definitions();
    let mut view = definitions.feature_views[0].clone();
    view.name = "every_type".parse().unwrap();
    view.features = EVERY_TYPE
        .iter()
        .enumerate()
        .map(|(index, value_type)| Feature {
            name: format!("f{index}").parse().unwrap(),
            value_type: value_type.parse().unwrap(),
            derivation: Derivation::Field(format!("f{index}")),
            default: None,
            description: String::new(),
            filter: None,
        })
        .collect();
    definitions.feature_views.push(view);
    definitions
}

/// A value of `value_type` that differs by user; lists of 0, 1 or 2 elements.
fn sample(value_type: ValueType, id: i64) -> Value {
    match value_type {
        ValueType::Scalar(scalar) => match scalar {
            ScalarType::Bool => Value::Bool(id % 2 == 0),
            ScalarType::Int32 => Value::Int32(-(id as i32)),
            ScalarType::Int64 => Value::Int64(id << 33),
            ScalarType::Float32 => Value::Float32(id as f32 / 4.0),
            ScalarType::Float64 => Value::Float64(id as f64 * 1.5),
            ScalarType::String => Value::String(format!("s{id}")),
            ScalarType::Bytes => Value::Bytes(vec![id as u8, 0]),
            ScalarType::Timestamp => Value::Timestamp(1_700_000_000_000_000 + id),
        },
        ValueType::List(element) => Value::list_from_scalars(
            element,
            (0..id % 3)
                .map(|k| sample(ValueType::Scalar(element), id + k))
                .collect(),
        )
        .unwrap(),
        ValueType::Embedding { dimension } => {
            Value::Float32List((0..dimension).map(|k| (id + i64::from(k)) as f32).collect())
        }
    }
}

#[tokio::test]
async fn typed_columns_and_value_columns_carry_the_same_values_for_every_feature_type() {
    let served = Served::embedded(ServeConfig::default(), &with_every_type()).await;
    let view = served.view("every_type").clone();
    let at = now_micros() - 1_000_000;
    // Users 0 to 29 have every feature; 30 to 39 none.
    for id in 0..30 {
        let values: Vec<(&str, Value)> = view
            .view
            .features
            .iter()
            .map(|feature| (feature.name.as_str(), sample(feature.value_type, id)))
            .collect();
        served.write("every_type", id, at, &values).await;
    }
    let activity = served.view("user_activity").clone();
    for id in 0..30 {
        let tiles = [count_tile(
            "actions_total",
            LIFETIME_TILE_START,
            id as u64 + 1,
            at,
        )];
        served
            .store
            .write_tiles(
                &served.registry.entities[0],
                &activity,
                &user(id),
                &TileChanges::of_tiles(tiles.to_vec()),
            )
            .await
            .expect("writes tiles");
    }
    let mut features: Vec<String> = (0..EVERY_TYPE.len())
        .map(|index| format!("every_type:f{index}"))
        .collect();
    features.extend([
        "user_activity:actions_total".into(),
        "user_activity:best_rank_7d".into(),
    ]);
    let features: Vec<&str> = features.iter().map(String::as_str).collect();
    // Rows repeat and mix users with and without values.
    let users: Vec<i64> = (0..40).chain([3, 35, 3]).collect();
    let ask = request(&features, &users);
    let mut client = served.client.clone();
    let by_value = client
        .get_online_features(ask.clone())
        .await
        .unwrap()
        .into_inner();
    let by_type = client
        .get_online_features(typed_format(ask))
        .await
        .unwrap()
        .into_inner();
    assert_same_cells(&by_value, &by_type);

    // And the typed cells are what was written.
    for (index, column) in by_type.features.iter().take(EVERY_TYPE.len()).enumerate() {
        let value_type: ValueType = EVERY_TYPE[index].parse().unwrap();
        let typed =
            quiver_proto::columns::typed_rows(column.typed.clone().unwrap(), users.len()).unwrap();
        for (row, &id) in users.iter().enumerate() {
            if id < 30 {
                assert_eq!(column.statuses[row], OK, "{} of user {id}", column.name);
                assert_eq!(
                    typed[row],
                    sample(value_type, id),
                    "{} of user {id}",
                    column.name
                );
            } else {
                assert_eq!(
                    column.statuses[row], NOT_FOUND,
                    "{} of user {id}",
                    column.name
                );
            }
        }
    }
    let counts = &by_type.features[EVERY_TYPE.len()];
    let counts =
        quiver_proto::columns::typed_rows(counts.typed.clone().unwrap(), users.len()).unwrap();
    assert_eq!(counts[3], Value::Int64(4));
    assert_eq!(
        counts[35],
        Value::Int64(0),
        "a user with no events counts 0"
    );
    // min over no events: NOT_FOUND, its typed slot the type's zero.
    assert!(
        by_type.features[EVERY_TYPE.len() + 1]
            .statuses
            .iter()
            .all(|&s| s == NOT_FOUND)
    );
}

/// One of `choices`, picked by `random`.
fn pick<'a, T>(random: &mut quiver_testkit::stream::Random, choices: &'a [T]) -> &'a T {
    &choices[random.below(choices.len() as u64) as usize]
}

/// A read request with parts replaced by random valid and invalid ones: references, key names,
/// key types and lengths, formats.
fn hostile_read(random: &mut quiver_testkit::stream::Random) -> pb::GetOnlineFeaturesRequest {
    const REFERENCES: [&str; 9] = [
        "user_profile:country",
        "user_activity:actions_1h",
        "user_activity@1:last_country",
        "user_activity@99:last_country",
        "user_profile:",
        ":country",
        "nope:country",
        "user_profile:country:extra",
        "",
    ];
    let features = match random.below(4) {
        0 => Features::FeatureService(pick(random, &["ranker_v1", "nope", ""]).to_string()),
        _ => Features::FeatureList(pb::FeatureList {
            features: (0..random.below(4))
                .map(|_| pick(random, &REFERENCES).to_string())
                .collect(),
        }),
    };
    let ids: Vec<i64> = (0..random.below(6))
        .map(|_| *pick(random, &[1, 2, -1, 0, i64::MAX, i64::MIN]))
        .collect();
    let values = match random.below(4) {
        0 => Values::Int64Values(pb::Int64List { values: ids }),
        1 => Values::Int32Values(pb::Int32List {
            values: ids.iter().map(|id| *id as i32).collect(),
        }),
        2 => Values::StringValues(pb::StringList {
            values: ids.iter().map(|id| format!("{id}\u{0}é")).collect(),
        }),
        _ => Values::BytesValues(pb::BytesList {
            values: ids.iter().map(|id| id.to_le_bytes().to_vec()).collect(),
        }),
    };
    let mut entities = HashMap::new();
    for _ in 0..random.below(3) {
        entities.insert(
            pick(random, &["user_id", "account_id", ""]).to_string(),
            pb::KeyColumn {
                values: (random.below(5) > 0).then(|| values.clone()),
            },
        );
    }
    // A valid request, with none, some or all of its parts replaced by the random ones.
    let mut read = request(
        &["user_profile:country", "user_activity:actions_1h"],
        &[1, 2],
    );
    if random.below(2) == 0 {
        read.features = (random.below(8) > 0).then_some(features);
    }
    if random.below(2) == 0 {
        read.entities = entities;
    }
    if random.below(2) == 0 {
        read.value_format = random.below(4) as i32;
    }
    read
}

/// A push assembled from valid and invalid parts: views, keys, feature names, value types, event
/// times.
fn hostile_push(random: &mut quiver_testkit::stream::Random) -> pb::WriteFeaturesRequest {
    let value = |random: &mut quiver_testkit::stream::Random| pb::Value {
        kind: match random.below(5) {
            0 => Some(pb::value::Kind::StringValue("SE".into())),
            1 => Some(pb::value::Kind::Int64Value(7)),
            2 => Some(pb::value::Kind::Float32ListValue(pb::Float32List {
                values: vec![f32::NAN; random.below(40) as usize],
            })),
            3 => Some(pb::value::Kind::BoolValue(true)),
            _ => None,
        },
    };
    let rows = (0..random.below(4))
        .map(|_| pb::FeatureRow {
            keys: HashMap::from([(
                pick(random, &["user_id", "item_id"]).to_string(),
                value(random),
            )]),
            values: HashMap::from([(
                pick(random, &["country", "bio_embedding", "actions_1h", "nope"]).to_string(),
                value(random),
            )]),
            event_time_micros: *pick(random, &[now_micros(), 0, -1, i64::MAX, i64::MIN]),
        })
        .collect();
    pb::WriteFeaturesRequest {
        feature_view: pick(random, &["user_profile", "user_activity", "nope", ""]).to_string(),
        rows,
    }
}

/// Hundreds of requests mixing valid and invalid parts get an answer or a refusal with a client
/// error's code; none makes the server fail (INTERNAL, UNKNOWN) or drop the connection, and it
/// answers a good request afterwards.
#[tokio::test]
async fn no_request_makes_the_server_fail() {
    let mut served =
        Served::embedded(ServeConfig::default(), &contract::example_definitions()).await;
    served
        .write(
            "user_profile",
            1,
            now_micros() - 1_000_000,
            &[("country", Value::String("SE".into()))],
        )
        .await;
    let client_errors = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::OutOfRange,
        Code::FailedPrecondition,
    ];
    let mut random = quiver_testkit::stream::Random(7);
    let (mut answered, mut refused) = (0, 0);
    for round in 0..300 {
        let outcome = if round % 3 == 0 {
            served
                .client
                .write_features(hostile_push(&mut random))
                .await
                .map(|_| ())
        } else {
            served
                .client
                .get_online_features(hostile_read(&mut random))
                .await
                .map(|_| ())
        };
        match outcome {
            Ok(()) => answered += 1,
            Err(status) => {
                assert!(
                    client_errors.contains(&status.code()),
                    "round {round}: {status:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        answered > 30 && refused > 30,
        "a mix of good and bad requests: {answered} answered, {refused} refused"
    );
    let reply = served
        .client
        .get_online_features(request(&["user_profile:country"], &[1]))
        .await
        .expect("the server still answers")
        .into_inner();
    assert_eq!(reply.features[0].values, vec![string("SE")]);
}
