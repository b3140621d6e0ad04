//! Online serving: `quiver.v1.FeatureService` over the online store, with an in-process cache.
//!
//! [`FeatureServer::run`] serves, on one listener, the feature service, the gRPC health checking
//! protocol (`grpc.health.v1.Health`) and server reflection, so `grpcurl` works without proto
//! files. Each call resolves its features against the registry (a `watch` receiver, so a
//! `quiver apply` takes effect without a restart), reads each distinct entity of each view once,
//! from the cache or concurrently from the store, and answers in request order.
//!
//! Limits are explicit: rows per call and request bytes (INVALID_ARGUMENT beyond), calls in
//! flight (RESOURCE_EXHAUSTED beyond, never an unbounded queue), the client's deadline
//! (DEADLINE_EXCEEDED, never a late reply) and, where one is set, a timeout on each store read
//! (UNAVAILABLE).

mod cache;
mod connection;
mod convert;
mod metrics;
mod read_plan;
mod service;

pub use cache::CacheConfig;
pub use metrics::ServeMetrics;

use std::future::Future;

use futures::{FutureExt, TryStreamExt};
use std::sync::Arc;
use std::time::Duration;

use quiver_core::definition::Registry;
use quiver_core::key::EntityKey;
use quiver_core::store::FeatureStore;
use quiver_proto::v1::feature_service_server::FeatureServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::cache::{RowCache, row_key, view_table};
use crate::service::Service;

/// Default of [`ServeConfig::max_entities`].
pub const DEFAULT_MAX_ENTITIES: usize = 1_000;
/// Default of [`ServeConfig::max_features`]: room for the 250-feature services of public
/// benchmarks, twice over.
pub const DEFAULT_MAX_FEATURES: usize = 500;
/// Default of [`ServeConfig::max_cells`]: 500 entities of 400 features, a reply of tens of MB.
pub const DEFAULT_MAX_CELLS: usize = 200_000;
/// Default of [`ServeConfig::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`ServeConfig::max_push_future`]: clock skew between hosts, not more.
pub const DEFAULT_MAX_PUSH_FUTURE: Duration = Duration::from_secs(5);

/// Limits and cache settings of a server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most entity rows in one call.
    pub max_entities: usize,
    /// Most feature references in one read call (a feature service counts its features).
    pub max_features: usize,
    /// Most cells (distinct features times entity rows) in one read call: what bounds the work
    /// and memory of a reply.
    pub max_cells: usize,
    /// Largest request, in bytes.
    pub max_request_bytes: usize,
    /// Most calls answered at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// The longest one store read may take before the call fails with UNAVAILABLE (or is
    /// answered stale, with [`CacheConfig::serve_stale_for`]); `None` bounds reads by the
    /// call's deadline only, so that a large cold call answers however its reads queue.
    pub read_timeout: Option<Duration>,
    /// The longest any call may take (DEADLINE_EXCEEDED beyond), also when the client sets no
    /// deadline: a call's work always ends.
    pub call_timeout: Duration,
    /// How far ahead of the server's clock a pushed row's event time may be; further is
    /// INVALID_ARGUMENT, since a value from the future would shadow every real one until then.
    pub max_push_future: Duration,
    /// The cache; `None` reads the store on every call.
    pub cache: Option<CacheConfig>,
    /// After shutdown is asked for, how long open connections get to finish their calls and
    /// close before the server stops anyway: a client that keeps its connection open must not
    /// keep the process alive.
    pub drain_timeout: Duration,
    /// Where pushed rows are also logged for training data, once the online store wrote them;
    /// `None` logs nothing.
    pub offline_log: Option<std::sync::Arc<quiver_offline::OfflineLog>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_entities: DEFAULT_MAX_ENTITIES,
            max_features: DEFAULT_MAX_FEATURES,
            max_cells: DEFAULT_MAX_CELLS,
            max_request_bytes: 4 * 1024 * 1024,
            max_in_flight: 1_024,
            read_timeout: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_push_future: DEFAULT_MAX_PUSH_FUTURE,
            cache: Some(CacheConfig {
                capacity_bytes: 256 * 1024 * 1024,
                ttl: Duration::from_secs(5),
                negative_ttl: Duration::from_secs(1),
                serve_stale_for: None,
            }),
            drain_timeout: Duration::from_secs(10),
            offline_log: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A feature server, ready to run.
pub struct FeatureServer<S> {
    service: Arc<Service<S>>,
}

impl<S> std::fmt::Debug for FeatureServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureServer")
            .field("config", &self.service.config)
            .finish()
    }
}

impl<S: FeatureStore + 'static> FeatureServer<S> {
    pub fn new(
        config: ServeConfig,
        registry: watch::Receiver<Arc<Registry>>,
        store: Arc<S>,
        metrics: ServeMetrics,
    ) -> Self {
        let service = Service {
            store,
            registry,
            cache: config.cache.as_ref().map(RowCache::new),
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            metrics,
        };
        FeatureServer {
            service: Arc::new(service),
        }
    }

    /// The registry as this server sees it now.
    pub fn registry(&self) -> Arc<Registry> {
        self.service.registry.borrow().clone()
    }

    /// Drops the cached rows of an entity in every view of it, such as after a deletion.
    pub async fn invalidate(&self, entity: &str, key: &EntityKey) {
        let Some(cache) = &self.service.cache else {
            return;
        };
        let registry = self.service.registry.borrow().clone();
        let keys = registry
            .feature_views
            .iter()
            .filter(|view| view.view.entity.as_str() == entity)
            .map(|view| row_key(&view_table(view), key.clone()))
            .collect::<Vec<_>>();
        cache.invalidate(keys).await;
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the calls in flight.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<FeatureServiceServer<Service<S>>>()
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(quiver_proto::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both versions of the reflection protocol: ghz and grpcurl before 1.9 ask v1alpha.
        let (reflection_v1, reflection_v1alpha) =
            (reflection().build_v1()?, reflection().build_v1alpha()?);
        // Twice the limit: requests up to it are decoded so that the refusal can say how large
        // they were (INVALID_ARGUMENT); beyond it the transport refuses them (OUT_OF_RANGE).
        let features = FeatureServiceServer::from_arc(self.service.clone())
            .max_decoding_message_size(self.service.config.max_request_bytes.saturating_mul(2));
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving");
        }
        let shutdown = shutdown.shared();
        // Announced before the transport sends GOAWAY: health checks answer NOT_SERVING while
        // the calls in flight finish, so that load balancers stop sending new ones here.
        let draining = {
            let (shutdown, health, service) =
                (shutdown.clone(), health.clone(), self.service.clone());
            async move {
                shutdown.await;
                tracing::info!(
                    in_flight = service.config.max_in_flight - service.permits.available_permits(),
                    drain_timeout = ?service.config.drain_timeout,
                    "draining: finishing the calls in flight, accepting no new connections"
                );
                health
                    .set_not_serving::<FeatureServiceServer<Service<S>>>()
                    .await;
            }
        }
        .shared();
        let serving = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(features)
            // No Nagle delay: a reply is written in several small frames, and waiting to
            // coalesce them costs tens of milliseconds against a delayed ACK.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .map_ok(connection::Connection),
                draining.clone(),
            );
        let drain_timeout = self.service.config.drain_timeout;
        tokio::select! {
            served = serving => {
                served?;
                tracing::info!("drained: every call answered, every connection closed");
            }
            () = async {
                draining.await;
                tokio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!(
                    ?drain_timeout,
                    in_flight = self.service.config.max_in_flight - self.service.permits.available_permits(),
                    "connections still open after the drain timeout; stopping"
                );
            }
        }
        Ok(())
    }
}
