//! The server's Prometheus metrics, registered once per process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) method: &'static str,
    /// The gRPC status code name, such as `ok` or `not_found`.
    pub(crate) code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// `hit` or `miss`.
    result: &'static str,
}

/// Counters, gauges and histograms of one server process.
#[derive(Debug, Clone)]
pub struct ServeMetrics {
    pub(crate) request_seconds: Family<MethodLabels, Histogram>,
    /// `cache_lookups_total{result="hit"}` and `{result="miss"}`, resolved once: both series
    /// exist from the start, and a lookup costs no label hashing.
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) store_reads: Counter,
    pub(crate) store_read_seconds: Histogram,
    pub(crate) store_errors: Counter,
    pub(crate) in_flight: Gauge,
    pub(crate) stale_rows: Counter,
    pub(crate) rows_pushed: Counter,
}

impl ServeMetrics {
    /// Creates the metrics and registers them, all prefixed `quiver_serve_`.
    pub fn register(registry: &mut Registry) -> Self {
        // 50 µs to about 1.6 s.
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let cache_lookups = Family::<LookupLabels, Counter>::default();
        // One statement each: the family's lock guard lives to the end of its statement.
        let cache_hits = cache_lookups
            .get_or_create(&LookupLabels { result: "hit" })
            .clone();
        let cache_misses = cache_lookups
            .get_or_create(&LookupLabels { result: "miss" })
            .clone();
        let metrics = ServeMetrics {
            request_seconds: Family::new_with_constructor(latency),
            cache_hits,
            cache_misses,
            store_reads: Counter::default(),
            store_read_seconds: latency(),
            store_errors: Counter::default(),
            in_flight: Gauge::default(),
            stale_rows: Counter::default(),
            rows_pushed: Counter::default(),
        };
        let registry = registry.sub_registry_with_prefix("quiver_serve");
        registry.register(
            "request_seconds",
            "Time to answer a gRPC call, by method and status code",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cached rows looked up, by result (hit or miss); the hit ratio is hit / (hit + miss)",
            cache_lookups,
        );
        registry.register(
            "store_reads",
            "Rows read from the online store",
            metrics.store_reads.clone(),
        );
        registry.register(
            "store_read_seconds",
            "Time to read one entity's row of one view from the online store",
            metrics.store_read_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Store reads that failed or took longer than the read timeout",
            metrics.store_errors.clone(),
        );
        registry.register(
            "in_flight_requests",
            "gRPC calls being answered now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "stale_rows",
            "Rows served stale because the online store could not be reached in time",
            metrics.stale_rows.clone(),
        );
        registry.register(
            "rows_pushed",
            "Rows written through WriteFeatures",
            metrics.rows_pushed.clone(),
        );
        metrics
    }
}
