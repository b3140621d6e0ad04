//! `quiver.v1.FeatureService`: resolve the request against the registry, read each distinct
//! entity of each view once (from the cache or the store), and answer in request order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use prometheus_client::metrics::gauge::Gauge;
use quiver_core::definition::{Entity, Registry, VersionedView};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::read::{ReadError, plan_features, plan_service};
use quiver_core::store::{
    EARLIEST_EVENT_TIME_MICROS, FeatureStore, FeatureWrite, StoreError, StoreErrorKind, Unchanged,
    check_write, unchanged_writes,
};
use quiver_proto::v1 as pb;
use quiver_proto::v1::get_online_features_request::Features;
use tokio::sync::{Semaphore, watch};
use tonic::{Request, Response, Status};

use crate::ServeConfig;
use crate::cache::{Cached, Row, RowCache, RowKey, row_key, view_table};
use crate::convert;
use crate::metrics::{MethodLabels, ServeMetrics};
use crate::read_plan::{CallPlan, Fetched, Format, ViewSource};

/// Rows one call reads at once. Enough to keep the store busy; and bounded, so that each poll
/// of a call touches this many reads at most: with all of a large call's reads started in one
/// poll, that poll took seconds, and no deadline or cancellation could cut in before it ended.
const ROW_READS_IN_FLIGHT: usize = 256;

/// Entities read at once to tell which pushed rows change something.
const PUSH_READS_IN_FLIGHT: usize = 64;

pub(crate) struct Service<S> {
    pub(crate) store: Arc<S>,
    pub(crate) registry: watch::Receiver<Arc<Registry>>,
    pub(crate) cache: Option<RowCache>,
    pub(crate) config: ServeConfig,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) metrics: ServeMetrics,
}

fn read_error(error: ReadError) -> Status {
    match error {
        ReadError::NoFeatures | ReadError::BadReference(_) => {
            Status::invalid_argument(error.to_string())
        }
        _ => Status::not_found(error.to_string()),
    }
}

fn store_error(error: StoreError) -> Status {
    match error.kind {
        StoreErrorKind::Unavailable | StoreErrorKind::Conflict => {
            Status::unavailable(error.to_string())
        }
        StoreErrorKind::Invalid => Status::invalid_argument(error.to_string()),
        StoreErrorKind::Corrupt => Status::internal(error.to_string()),
    }
}

/// How long the client gave the call, from its `grpc-timeout` header, if it set one.
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` value: an integer and a unit (`100m` is 100 ms).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (amount, unit) = text.split_at(text.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3_600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// When to give up on a call the client gave `deadline`: a tenth of it early, at least 20 ms,
/// at most half of it.
fn answer_by(deadline: Duration) -> Duration {
    let margin = (deadline / 10)
        .max(Duration::from_millis(20))
        .min(deadline / 2);
    deadline - margin
}

/// The metric label of a gRPC status code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal",
        _ => "other",
    }
}

/// The longest error message sent back: whatever part of a request an error quotes, the
/// reply's headers stay small enough for every client to take.
const MAX_ERROR_MESSAGE_BYTES: usize = 1_024;

/// `status` with its message cut to [`MAX_ERROR_MESSAGE_BYTES`].
fn bounded(status: Status) -> Status {
    let message = status.message();
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return status;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Status::new(
        status.code(),
        format!("{}… ({} bytes in all)", &message[..end], message.len()),
    )
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64)
}

/// One call counted in the in-flight gauge while it lives.
struct InFlight<'g>(&'g Gauge);

impl<'g> InFlight<'g> {
    fn enter(gauge: &'g Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S: FeatureStore + 'static> Service<S> {
    /// Runs one call under the server's limits: shed when too many are in flight, cut at the
    /// client's deadline, and timed.
    async fn limited<T>(
        &self,
        method: &'static str,
        deadline: Option<Duration>,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = match self.permits.clone().try_acquire_owned() {
            Err(_) => Err(Status::resource_exhausted(format!(
                "the server is answering {} calls already; retry with backoff",
                self.config.max_in_flight
            ))),
            Ok(_permit) => {
                // A guard, not a decrement after the work: a call whose client goes away is
                // dropped here mid-way, and must leave the gauge too.
                let _in_flight = InFlight::enter(&self.metrics.in_flight);
                // Early, so the answer reaches the client before its own timer fires and
                // before the transport cancels the call (as CANCELLED); and never later than
                // the server's own bound, so that no call works on for ever.
                let limit = deadline.map_or(self.config.call_timeout, |deadline| {
                    answer_by(deadline).min(self.config.call_timeout)
                });
                tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(match deadline {
                        Some(deadline) if answer_by(deadline) <= self.config.call_timeout => {
                            format!("not answered within the client's deadline of {deadline:?}")
                        }
                        _ => format!(
                            "not answered within the server's call timeout of {:?}",
                            self.config.call_timeout
                        ),
                    }))
                })
            }
        };
        let code = match &result {
            Ok(_) => "ok",
            Err(status) => code_name(status.code()),
        };
        self.metrics
            .request_seconds
            .get_or_create(&MethodLabels { method, code })
            .observe(started.elapsed().as_secs_f64());
        if let Err(status) = &result {
            tracing::debug!(method, code = ?status.code(), message = status.message(), "call refused");
        }
        result.map(Response::new).map_err(bounded)
    }

    /// INVALID_ARGUMENT for a request over the size limit (up to twice it; the transport
    /// refuses larger ones before they are decoded).
    fn refuse_oversized(&self, request: &impl prost::Message) -> Result<(), Status> {
        let size = request.encoded_len();
        if size > self.config.max_request_bytes {
            return Err(Status::invalid_argument(format!(
                "the request is {size} bytes; this server accepts at most {} bytes per call",
                self.config.max_request_bytes
            )));
        }
        Ok(())
    }

    /// INVALID_ARGUMENT for a read of more features than the server answers in one call.
    fn refuse_too_many_features(&self, features: usize) -> Result<(), Status> {
        if features > self.config.max_features {
            return Err(Status::invalid_argument(format!(
                "{features} features requested; this server answers at most {} per call \
                 (--max-features)",
                self.config.max_features
            )));
        }
        Ok(())
    }

    async fn online_features(
        &self,
        request: pb::GetOnlineFeaturesRequest,
    ) -> Result<pb::GetOnlineFeaturesResponse, Status> {
        let registry = self.registry.borrow().clone();
        let format = Format::of(request.value_format());
        let rows = convert::row_count(&request.entities)?;
        if rows > self.config.max_entities {
            return Err(Status::invalid_argument(format!(
                "{rows} entity rows requested; this server answers at most {} per call \
                 (--max-entities)",
                self.config.max_entities
            )));
        }
        if let Some(Features::FeatureList(list)) = &request.features {
            self.refuse_too_many_features(list.features.len())?;
        }
        let plan = match request.features {
            Some(Features::FeatureService(name)) => plan_service(&registry, &name),
            Some(Features::FeatureList(list)) => plan_features(&registry, list.features),
            None => Err(ReadError::NoFeatures),
        }
        .map_err(read_error)?;
        self.refuse_too_many_features(plan.columns.len())?;
        let cells = plan.columns.len().saturating_mul(rows);
        if cells > self.config.max_cells {
            return Err(Status::invalid_argument(format!(
                "{} features of {rows} entity rows are {cells} cells; this server answers at \
                 most {} cells per call (--max-cells); split the call",
                plan.columns.len(),
                self.config.max_cells
            )));
        }

        let mut call = CallPlan::new(plan, &request.entities, rows)?;
        if let Some(cache) = &self.cache {
            // Hits first, one after another with no future in flight: most rows end here, at
            // the cost of a lookup each, as a bare cache would.
            let hits = call.take_cached(cache).await;
            self.metrics.cache_hits.inc_by(hits);
        }
        call.fetch(ROW_READS_IN_FLIGHT, |source, key| self.row(source, key))
            .await?;
        let features = call.answer(now_micros(), format)?;
        Ok(pb::GetOnlineFeaturesResponse { features })
    }

    async fn write_features(
        &self,
        request: pb::WriteFeaturesRequest,
    ) -> Result<pb::WriteFeaturesResponse, Status> {
        let registry = self.registry.borrow().clone();
        let (entity, view) = pushed_view(&registry, &request.feature_view)?;
        if request.rows.len() > self.config.max_entities {
            return Err(Status::invalid_argument(format!(
                "{} rows given; this server takes at most {} per call",
                request.rows.len(),
                self.config.max_entities
            )));
        }
        let now = now_micros();
        let max_future = i64::try_from(self.config.max_push_future.as_micros()).unwrap_or(i64::MAX);
        let writes = request
            .rows
            .into_iter()
            .enumerate()
            .map(|(row, pushed)| {
                pushed_write(entity, view, pushed, now, max_future)
                    .map_err(|why| Status::invalid_argument(format!("row {row}: {why}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let unchanged = unchanged_writes(
            &view.view,
            &writes,
            self.stored_times(entity, view, &writes).await?,
            now,
        );
        let ignored: HashSet<usize> = unchanged.iter().map(|&(row, _)| row).collect();
        let changing: Vec<FeatureWrite> = writes
            .into_iter()
            .enumerate()
            .filter_map(|(row, write)| (!ignored.contains(&row)).then_some(write))
            .collect();
        self.store
            .write_features(entity, view, &changing)
            .await
            .map_err(store_error)?;
        if let Some(log) = &self.config.offline_log {
            // A failure leaves the rows stored but unlogged; the client's retry logs them.
            let unwritten = |error: quiver_offline::LogError| {
                Status::unavailable(format!("the offline log could not be written: {error}"))
            };
            log.record_registry(&registry).await.map_err(unwritten)?;
            log.append_pushes(entity, view, &push_writer(), &changing, now)
                .await
                .map_err(unwritten)?;
        }
        if let Some(cache) = &self.cache {
            let table = view_table(view);
            cache
                .invalidate(
                    changing
                        .iter()
                        .map(|write| row_key(&table, write.key.clone()))
                        .collect(),
                )
                .await;
        }
        self.metrics.rows_pushed.inc_by(changing.len() as u64);
        Ok(pb::WriteFeaturesResponse {
            rows_written: changing.len() as u64,
            ignored_rows: unchanged
                .into_iter()
                .map(|(row, why)| pb::IgnoredRow {
                    row: u32::try_from(row).unwrap_or(u32::MAX),
                    reason: why.reason().to_owned(),
                    detail: match why {
                        Unchanged::OlderThanStored {
                            newest_stored_micros,
                        } => format!(
                            "every value is at or before the stored one's event time \
                             ({newest_stored_micros} µs)"
                        ),
                        Unchanged::Expired => format!(
                            "its event time is older than the TTL of feature view `{}`",
                            view.view.name
                        ),
                    },
                })
                .collect(),
        })
    }

    /// The stored event time of each feature that `writes` set, by entity: each entity is read
    /// once, a bounded number at a time.
    async fn stored_times(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<HashMap<(EntityKey, Name), i64>, Status> {
        let mut features: Vec<Name> = writes
            .iter()
            .flat_map(|write| write.values.iter().map(|(name, _)| name.clone()))
            .collect();
        features.sort();
        features.dedup();
        let mut keys: Vec<EntityKey> = writes.iter().map(|write| write.key.clone()).collect();
        keys.sort_by_key(EntityKey::encode);
        keys.dedup();
        let features = &features;
        let stored: Vec<Vec<((EntityKey, Name), i64)>> = futures::stream::iter(keys)
            .map(|key: EntityKey| async move {
                let values = self
                    .store
                    .read_features(entity, view, features, &key)
                    .await
                    .map_err(store_error)?;
                Ok::<_, Status>(
                    features
                        .iter()
                        .zip(values)
                        .filter_map(|(name, value)| {
                            Some(((key.clone(), name.clone()), value?.event_time_micros))
                        })
                        .collect(),
                )
            })
            .buffer_unordered(PUSH_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(stored.into_iter().flatten().collect())
    }

    /// Everything stored of one entity in the view of `source`, in one read of the store
    /// (within the read timeout, if one is set), and timed.
    async fn read_store(
        &self,
        source: &ViewSource<'_>,
        key: &EntityKey,
    ) -> Result<Row, StoreError> {
        let ViewSource { entity, view, .. } = *source;
        let started = Instant::now();
        self.metrics.store_reads.inc();
        let read = async {
            let row = self.store.read_entity(entity, view, key).await?;
            Ok(Cached {
                values: row.values,
                tiles: row.tiles.tiles,
            })
        };
        let row = match self.config.read_timeout {
            None => read.await,
            Some(limit) => tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
                Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("the online store did not answer within {limit:?} (--read-timeout-ms)"),
                ))
            }),
        }
        .map(Arc::new);
        self.metrics
            .store_read_seconds
            .observe(started.elapsed().as_secs_f64());
        if row.is_err() {
            self.metrics.store_errors.inc();
        }
        row
    }

    /// Everything stored of one entity (`key` names it and its view version) in the view of
    /// `source`: through the cache when there is one, which the call found it missing from.
    async fn row(&self, source: &ViewSource<'_>, key: &RowKey) -> Result<Fetched, Status> {
        // The load (moka's coalescing, the store read) is a future of kilobytes, boxed so that
        // the call's row futures stay small.
        match &self.cache {
            None => {
                let row = Box::pin(self.read_store(source, &key.1))
                    .await
                    .map_err(store_error)?;
                Ok(Fetched { row, stale: false })
            }
            Some(cache) => Box::pin(self.load_row(cache, source, key)).await,
        }
    }

    /// An entity not in the cache: loaded once however many calls ask for it at once, or else its
    /// last read, marked stale, when the store cannot be reached and stale rows are kept.
    async fn load_row(
        &self,
        cache: &RowCache,
        source: &ViewSource<'_>,
        row_key: &RowKey,
    ) -> Result<Fetched, Status> {
        let load = || self.read_store(source, &row_key.1);
        let (row, hit) = match cache.get_or_load(row_key, load).await {
            Ok(loaded) => loaded,
            Err(error) if error.kind == StoreErrorKind::Unavailable => {
                let stale = cache
                    .last_read(row_key)
                    .await
                    .ok_or_else(|| store_error(error))?;
                self.metrics.stale_rows.inc();
                return Ok(Fetched {
                    row: stale,
                    stale: true,
                });
            }
            Err(error) => return Err(store_error(error)),
        };
        if hit {
            self.metrics.cache_hits.inc();
        } else {
            self.metrics.cache_misses.inc();
        }
        Ok(Fetched { row, stale: false })
    }
}

/// The view version a push names (`view` or `view@2`), with its entity.
fn pushed_view<'r>(
    registry: &'r Registry,
    name: &str,
) -> Result<(&'r Entity, &'r VersionedView), Status> {
    let unknown = |what: String| Status::invalid_argument(format!("{what} is not in the registry"));
    let (view_name, version) = match name.split_once('@') {
        Some((view, version)) => (
            view,
            Some(version.parse::<u32>().map_err(|_| {
                Status::invalid_argument(format!(
                    "`{name}` is not a feature view; write `view` or `view@2`"
                ))
            })?),
        ),
        None => (name, None),
    };
    let view = view_name
        .parse::<Name>()
        .ok()
        .and_then(|view_name| registry.view(&view_name, version))
        .ok_or_else(|| unknown(format!("feature view `{name}`")))?;
    let entity = registry
        .entity(&view.view.entity)
        .ok_or_else(|| unknown(format!("the entity of feature view `{name}`")))?;
    Ok((entity, view))
}

/// One pushed row as a write, checked against the view at `now`, with event times up to
/// `max_future` µs ahead; the error says what is wrong.
/// The name this process's pushed rows are logged under: its host name (a pod's name), so
/// that servers never write the same file.
fn push_writer() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string());
    format!("push-{host}")
}

fn pushed_write(
    entity: &Entity,
    view: &VersionedView,
    row: pb::FeatureRow,
    now: i64,
    max_future: i64,
) -> Result<FeatureWrite, String> {
    if row.event_time_micros == 0 {
        return Err("event_time_micros is not set".into());
    }
    if row.event_time_micros < EARLIEST_EVENT_TIME_MICROS {
        return Err(format!(
            "event_time_micros {} is before 2000; event times are microseconds since the epoch",
            row.event_time_micros
        ));
    }
    let ahead = row.event_time_micros.saturating_sub(now);
    if ahead > max_future {
        return Err(format!(
            "event_time_micros {} is {} ms ahead of the server's clock; at most {} ms is \
             accepted (--max-push-future-ms)",
            row.event_time_micros,
            ahead / 1_000,
            max_future / 1_000
        ));
    }
    let key = convert::row_key(entity, row.keys)?;
    let mut values = Vec::with_capacity(row.values.len());
    for (name, value) in row.values {
        let feature: Name = name
            .parse()
            .map_err(|_| format!("feature view `{}` has no feature `{name}`", view.view.name))?;
        let value = quiver_proto::values::from_wire(value)
            .ok_or_else(|| format!("feature `{name}` has no value"))?;
        values.push((feature, value));
    }
    let write = FeatureWrite {
        key,
        event_time_micros: row.event_time_micros,
        values,
    };
    check_write(entity, &view.view, &write).map_err(|error| error.message)?;
    Ok(write)
}

#[tonic::async_trait]
impl<S: FeatureStore + 'static> pb::feature_service_server::FeatureService for Service<S> {
    async fn get_online_features(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<Response<pb::GetOnlineFeaturesResponse>, Status> {
        let deadline = deadline(&request);
        self.refuse_oversized(request.get_ref())?;
        self.limited(
            "GetOnlineFeatures",
            deadline,
            self.online_features(request.into_inner()),
        )
        .await
    }

    async fn write_features(
        &self,
        request: Request<pb::WriteFeaturesRequest>,
    ) -> Result<Response<pb::WriteFeaturesResponse>, Status> {
        let deadline = deadline(&request);
        self.refuse_oversized(request.get_ref())?;
        self.limited(
            "WriteFeatures",
            deadline,
            self.write_features(request.into_inner()),
        )
        .await
    }

    async fn list_feature_views(
        &self,
        request: Request<pb::ListFeatureViewsRequest>,
    ) -> Result<Response<pb::ListFeatureViewsResponse>, Status> {
        let deadline = deadline(&request);
        let registry = self.registry.borrow().clone();
        self.limited("ListFeatureViews", deadline, async {
            let feature_views = registry
                .latest_views()
                .into_iter()
                .map(|view| {
                    let keys = registry
                        .entity(&view.view.entity)
                        .map(|entity| entity.keys.as_slice())
                        .unwrap_or_default();
                    pb::FeatureViewInfo {
                        name: view.view.name.to_string(),
                        version: view.version,
                        entity: view.view.entity.to_string(),
                        key_fields: keys.iter().map(|key| key.name.to_string()).collect(),
                        key_types: keys.iter().map(|key| key.key_type.to_string()).collect(),
                        ttl_seconds: view.view.ttl.map_or(0, |ttl| ttl.0),
                        features: view
                            .view
                            .features
                            .iter()
                            .map(|feature| pb::FeatureInfo {
                                name: feature.name.to_string(),
                                r#type: feature.value_type.to_string(),
                                description: feature.description.clone(),
                            })
                            .collect(),
                        description: view.view.description.clone(),
                    }
                })
                .collect();
            Ok(pb::ListFeatureViewsResponse { feature_views })
        })
        .await
    }

    async fn list_feature_services(
        &self,
        request: Request<pb::ListFeatureServicesRequest>,
    ) -> Result<Response<pb::ListFeatureServicesResponse>, Status> {
        let deadline = deadline(&request);
        let registry = self.registry.borrow().clone();
        self.limited("ListFeatureServices", deadline, async {
            let mut feature_services: Vec<pb::FeatureServiceInfo> = registry
                .feature_services
                .iter()
                .map(|service| pb::FeatureServiceInfo {
                    name: service.name.to_string(),
                    features: service.features.iter().map(ToString::to_string).collect(),
                    description: service.description.clone(),
                })
                .collect();
            feature_services.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(pb::ListFeatureServicesResponse { feature_services })
        })
        .await
    }
}
