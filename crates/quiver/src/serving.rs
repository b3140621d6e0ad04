//! `quiver serve` and `quiver get`: the gRPC server and a client that prints what it serves.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use quiver_client::{Entities, QuiverClient, Selection};
use quiver_core::read::Status;
use quiver_core::value::Value;
use quiver_kafka::invalidations::{Invalidation, Invalidations};
use quiver_serve::{CacheConfig, FeatureServer, ServeConfig, ServeMetrics};

use crate::Stopper;
use crate::kafka::KafkaArgs;
use crate::store::{Store, StoreArgs};

/// Seconds after the drain timeout at which `serve` exits whatever its handlers are doing.
const HARD_STOP_GRACE_SECS: u64 = 5;

/// How `serve` listens, limits calls and caches.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address of the gRPC server (FeatureService, health, reflection).
    #[arg(long, env = "QUIVER_LISTEN", default_value = "0.0.0.0:50051")]
    pub(crate) listen: std::net::SocketAddr,
    /// Address of the Prometheus endpoint, served at /metrics.
    #[arg(long, env = "QUIVER_METRICS_ADDR", default_value = "0.0.0.0:9465")]
    metrics_addr: std::net::SocketAddr,
    /// Most entity rows in one call; more is INVALID_ARGUMENT.
    #[arg(long, default_value_t = quiver_serve::DEFAULT_MAX_ENTITIES)]
    max_entities: usize,
    /// Most feature references in one read; more is INVALID_ARGUMENT.
    #[arg(long, default_value_t = quiver_serve::DEFAULT_MAX_FEATURES)]
    max_features: usize,
    /// Most cells (distinct features times entity rows) in one read; more is INVALID_ARGUMENT.
    /// Bounds the memory and time one call can take.
    #[arg(long, default_value_t = quiver_serve::DEFAULT_MAX_CELLS)]
    max_cells: usize,
    /// Milliseconds any call may take, also when the client sets no deadline; beyond it the
    /// call stops its work and fails with DEADLINE_EXCEEDED.
    #[arg(long, default_value_t = quiver_serve::DEFAULT_CALL_TIMEOUT.as_millis() as u64)]
    call_timeout_ms: u64,
    /// Milliseconds a pushed row's event time may be ahead of this server's clock; more is
    /// INVALID_ARGUMENT (a value from the future would shadow every real one until then).
    #[arg(long, default_value_t = quiver_serve::DEFAULT_MAX_PUSH_FUTURE.as_millis() as u64)]
    max_push_future_ms: u64,
    /// Largest request in bytes; more is INVALID_ARGUMENT (beyond twice this, OUT_OF_RANGE).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_request_bytes: usize,
    /// Most calls answered at once; more are shed with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1_024)]
    max_in_flight: usize,
    /// Milliseconds one store read may take before the call fails with UNAVAILABLE (or is
    /// answered stale, with --serve-stale-ms). Unset, reads are bounded by the call's deadline
    /// only, so a large cold call answers however its reads queue at the database.
    #[arg(long, value_name = "MS")]
    read_timeout_ms: Option<u64>,
    /// Cache capacity in MiB of rows.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Milliseconds a row is served from the cache before it is read again: the staleness bound.
    #[arg(long, default_value_t = 5_000)]
    cache_ttl_ms: u64,
    /// Milliseconds an absent entity is remembered as absent.
    #[arg(long, default_value_t = 1_000)]
    negative_ttl_ms: u64,
    /// When a store read fails or times out (--read-timeout-ms), serve the last value read for
    /// up to this many milliseconds, marked stale, instead of failing the call with UNAVAILABLE.
    /// Off unless given.
    #[arg(long, value_name = "MS", requires = "read_timeout_ms")]
    serve_stale_ms: Option<u64>,
    /// Read the store on every call, for comparison.
    #[arg(long)]
    no_cache: bool,
    /// The ingester's --invalidation-topic: deleted entities are dropped from the cache.
    #[arg(long, env = "QUIVER_INVALIDATION_TOPIC")]
    invalidation_topic: Option<String>,
    /// The Kafka cluster of --invalidation-topic.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Seconds between reloads of the registry: a `quiver apply` reaches the server within this.
    #[arg(long, default_value_t = 5)]
    registry_refresh_secs: u64,
    /// On SIGTERM or Ctrl-C, seconds open connections get to finish their calls before the
    /// server stops anyway.
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,
    /// Also log the rows WriteFeatures pushes to this offline log (as `quiver ingest
    /// --offline-log` logs events), so that `quiver historical` sees them: a local folder or
    /// file:// URL. Not logged when not given (the quickstart logs to <data-dir>/offline-log).
    #[arg(long, env = "QUIVER_OFFLINE_LOG", value_name = "LOCATION")]
    pub(crate) offline_log: Option<String>,
}

pub(crate) async fn serve(args: ServeArgs, store: StoreArgs) -> anyhow::Result<()> {
    let store = Arc::new(store.connect().await?);
    let listener = bind(args.listen).await?;
    run_server(&args, store, listener, Stopper::on_signal()).await
}

/// A listener on `address` for the gRPC server.
pub(crate) async fn bind(address: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// Serves `store` on `listener`, with metrics and the invalidation listener `args` ask for,
/// until `stopper` says stop.
pub(crate) async fn run_server(
    args: &ServeArgs,
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    stopper: Stopper,
) -> anyhow::Result<()> {
    let config = ServeConfig {
        max_entities: args.max_entities,
        max_features: args.max_features,
        max_cells: args.max_cells,
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        max_push_future: Duration::from_millis(args.max_push_future_ms),
        max_request_bytes: args.max_request_bytes,
        max_in_flight: args.max_in_flight.max(1),
        read_timeout: args.read_timeout_ms.map(Duration::from_millis),
        cache: (!args.no_cache).then(|| CacheConfig {
            capacity_bytes: args.cache_mib * 1024 * 1024,
            ttl: Duration::from_millis(args.cache_ttl_ms),
            negative_ttl: Duration::from_millis(args.negative_ttl_ms),
            serve_stale_for: args.serve_stale_ms.map(Duration::from_millis),
        }),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        offline_log: args
            .offline_log
            .as_deref()
            .map(|location| {
                quiver_offline::OfflineLog::open(location)
                    .map(Arc::new)
                    .context("--offline-log")
            })
            .transpose()?,
    };
    let watcher = quiver_registry::RegistryWatcher::start(
        store.clone(),
        Duration::from_secs(args.registry_refresh_secs.max(1)),
    )
    .await
    .context("cannot read the registry")?;
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let metrics = ServeMetrics::register(&mut metrics_registry);
    let server = Arc::new(FeatureServer::new(
        config,
        watcher.subscribe(),
        store,
        metrics,
    ));
    let metrics_server = stopper
        .serve_metrics(args.metrics_addr, metrics_registry)
        .await?;
    if let Some(topic) = &args.invalidation_topic {
        let (server, kafka, stopped) =
            (server.clone(), args.kafka.connection()?, stopper.stopped());
        let invalidations = Invalidations::subscribe(&kafka, topic)
            .context("cannot subscribe to the invalidation topic")?;
        tokio::spawn(drop_invalidated(server, invalidations, stopped));
    }
    let stopped = stopper.stopped();
    let hard_stop = Duration::from_secs(args.drain_timeout_secs + HARD_STOP_GRACE_SECS);
    tokio::spawn(async move {
        stopped.await;
        // A thread of its own, not a task: it must fire even if every worker is busy.
        std::thread::spawn(move || {
            std::thread::sleep(hard_stop);
            tracing::error!(
                ?hard_stop,
                "still running this long after the stop signal; exiting"
            );
            std::process::exit(1);
        });
    });
    server.run(listener, stopper.stopped()).await?;
    metrics_server.abort();
    Ok(())
}

/// Drops each entity announced on the invalidation topic from `server`'s cache, until
/// `stopped` resolves.
async fn drop_invalidated(
    server: Arc<FeatureServer<Store>>,
    invalidations: Invalidations,
    stopped: impl Future<Output = ()>,
) {
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let Invalidation { entity, key } = tokio::select! {
            () = &mut stopped => return,
            next = invalidations.next(|| server.registry()) => next,
        };
        server.invalidate(entity.as_str(), &key).await;
        tracing::debug!(%entity, %key, "cache invalidated");
    }
}

/// What `get` asks for.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The server's address.
    #[arg(long, env = "QUIVER_SERVER", default_value = "http://127.0.0.1:50051")]
    pub(crate) server: String,
    /// A feature service to read.
    #[arg(
        long,
        conflicts_with = "features",
        required_unless_present = "features"
    )]
    pub(crate) service: Option<String>,
    /// A `view:feature` reference to read; repeat for more.
    #[arg(long = "feature", value_name = "VIEW:FEATURE")]
    pub(crate) features: Vec<String>,
    /// An entity row as KEY=VALUE, such as user_id=42; repeat for more rows. A value of digits is
    /// sent as an int64 key, anything else as a string.
    #[arg(long = "entity", value_name = "KEY=VALUE", required = true, value_parser = parse_entity)]
    pub(crate) entities: Vec<(String, String)>,
}

fn parse_entity(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` must look like KEY=VALUE, such as user_id=42"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// Which server `health` asks.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The server's address.
    #[arg(long, env = "QUIVER_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
}

/// Whether the server says it is serving; prints its answer.
#[allow(clippy::print_stdout, reason = "the answer is the command's output")]
pub(crate) async fn health(args: HealthArgs) -> anyhow::Result<bool> {
    let check = async {
        QuiverClient::connect(&args.server)
            .await?
            .is_serving()
            .await
    };
    let serving = tokio::time::timeout(Duration::from_secs(args.timeout_secs), check)
        .await
        .with_context(|| {
            format!(
                "{} did not answer within {} s",
                args.server, args.timeout_secs
            )
        })??;
    println!(
        "{}: {}",
        args.server,
        if serving { "serving" } else { "not serving" }
    );
    Ok(serving)
}

#[allow(clippy::print_stdout, reason = "the table is the command's output")]
pub(crate) async fn get(args: GetArgs) -> anyhow::Result<()> {
    let key = &args.entities[0].0;
    if let Some((other, _)) = args.entities.iter().find(|(name, _)| name != key) {
        anyhow::bail!("every --entity must name the same key; got `{key}` and `{other}`");
    }
    let values: Vec<&str> = args
        .entities
        .iter()
        .map(|(_, value)| value.as_str())
        .collect();
    let entities = match values
        .iter()
        .map(|value| value.parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(numbers) => Entities::new().int64(key, numbers),
        Err(_) => Entities::new().string(key, values.iter().map(|v| (*v).to_owned())),
    };
    let selection = match args.service {
        Some(service) => Selection::Service(service),
        None => Selection::Features(args.features),
    };
    let mut client = QuiverClient::connect(&args.server).await?;
    let table = client.get(selection, entities).await?;
    let now_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64);
    let mut lines = vec![[
        "entity".to_owned(),
        "feature".into(),
        "status".into(),
        "age".into(),
        "value".into(),
    ]];
    for (row, value) in values.iter().enumerate() {
        for column in &table.columns {
            let cell = &column.cells[row];
            let age = match cell.status {
                Status::Ok | Status::Stale => age((now_micros - cell.event_time_micros).max(0)),
                _ => "-".into(),
            };
            lines.push([
                format!("{key}={value}"),
                column.name.clone(),
                cell.status.to_string(),
                age,
                cell.value.as_ref().map_or_else(|| "-".into(), show),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            lines
                .iter()
                .map(|line| line[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:>w3$}  {}",
            line[0],
            line[1],
            line[2],
            line[3],
            line[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    Ok(())
}

/// `3s`, `5m`, `2h`, `4d`: how long ago an event happened.
fn age(micros: i64) -> String {
    let secs = micros / 1_000_000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Bool(v) => v.to_string(),
        Value::Int32(v) => v.to_string(),
        Value::Int64(v) | Value::Timestamp(v) => v.to_string(),
        Value::Float32(v) => v.to_string(),
        Value::Float64(v) => v.to_string(),
        Value::Float32List(items) if items.len() > 4 => {
            format!("[{}, {}, ... {} floats]", items[0], items[1], items.len())
        }
        other => format!("{other:?}"),
    }
}
