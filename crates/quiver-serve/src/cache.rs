//! The in-process cache of stored rows: one entry per view version and entity, holding its
//! stored values and its tiles as one store read gave them, weighted by its size in bytes,
//! expiring after a configured time (sooner for entities found absent).
//!
//! Loads go through [`RowCache::get_or_load`], which coalesces concurrent misses on one key into
//! one load, so a burst of requests for a cold entity makes one database read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use quiver_core::aggregate::{Partial, Tile};
use quiver_core::definition::{VersionedView, view_table_name};
use quiver_core::key::EntityKey;
use quiver_core::store::{StoreError, StoredValue};
use quiver_core::value::Value;

/// What is cached of one entity in one view version: everything one store read gives.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    /// The stored features, in `stored_features` order.
    pub(crate) values: Vec<Option<StoredValue>>,
    /// The tiles of every aggregate of the view, evaluated against the time of each request.
    pub(crate) tiles: Vec<Tile>,
}

impl Cached {
    /// Whether the store had nothing of the entity: never seen, deleted, or silent for longer
    /// than every window of a view without stored or lifetime features.
    pub(crate) fn is_absent(&self) -> bool {
        self.values.iter().all(Option::is_none) && self.tiles.is_empty()
    }
}

pub(crate) type Row = Arc<Cached>;

/// What the cache is keyed by: the view version's table name and the entity key. Made only by
/// [`row_key`].
pub(crate) type RowKey = (Arc<str>, EntityKey);

/// The table a view version's cache keys name.
pub(crate) fn view_table(view: &VersionedView) -> Arc<str> {
    view_table_name(&view.view.name, view.version).into()
}

/// The cache key of one entity in the view version whose table is `table`.
pub(crate) fn row_key(table: &Arc<str>, key: EntityKey) -> RowKey {
    (table.clone(), key)
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The most bytes of cached rows, approximately.
    pub capacity_bytes: u64,
    /// How long a row is served from the cache before it is read again: the bound on staleness.
    pub ttl: Duration,
    /// How long an entity found absent is remembered as absent.
    pub negative_ttl: Duration,
    /// How long the last row read is kept to be served, marked stale, when the store cannot be
    /// reached in time; `None` fails such calls with UNAVAILABLE instead.
    pub serve_stale_for: Option<Duration>,
}

/// The caches' hasher: foldhash, seeded at random per process, rather than the standard
/// library's SipHash; a hit hashes its key (table name, entity key) several times in
/// moka, and those lookups were a tenth of the CPU of 500-entity hits.
type KeyHasher = foldhash::fast::RandomState;

#[derive(Debug, Clone)]
pub(crate) struct RowCache {
    rows: Cache<RowKey, Row, KeyHasher>,
    /// The last row read per key, kept longer, for when the store cannot be reached.
    last_read: Option<Cache<RowKey, Row, KeyHasher>>,
}

/// Absent rows live for the negative TTL, others for the cache's TTL.
struct RowExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<RowKey, Row> for RowExpiry {
    fn expire_after_create(&self, _key: &RowKey, row: &Row, _created: Instant) -> Option<Duration> {
        Some(if row.is_absent() {
            self.negative_ttl
        } else {
            self.ttl
        })
    }
}

impl RowCache {
    pub(crate) fn new(config: &CacheConfig) -> Self {
        let rows = Cache::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|key: &RowKey, row: &Row| u32::try_from(weight(key, row)).unwrap_or(u32::MAX))
            .expire_after(RowExpiry {
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
            })
            .build_with_hasher(KeyHasher::default());
        let last_read = config.serve_stale_for.map(|keep| {
            Cache::builder()
                .max_capacity(config.capacity_bytes)
                .weigher(|key: &RowKey, row: &Row| {
                    u32::try_from(weight(key, row)).unwrap_or(u32::MAX)
                })
                .time_to_live(keep)
                .build_with_hasher(KeyHasher::default())
        });
        RowCache { rows, last_read }
    }

    /// The cached row of `key`, if there is one.
    pub(crate) async fn get(&self, key: &RowKey) -> Option<Row> {
        self.rows.get(key).await
    }

    /// The last row read for `key`, if stale rows are kept and this one still is.
    pub(crate) async fn last_read(&self, key: &RowKey) -> Option<Row> {
        self.last_read.as_ref()?.get(key).await
    }

    /// The cached row, or else the row from the future that `load` makes, which is then
    /// cached; concurrent callers for one key share one load. A failed load is not cached.
    pub(crate) async fn get_or_load<F, Load>(
        &self,
        key: &RowKey,
        load: F,
    ) -> Result<(Row, bool), StoreError>
    where
        F: FnOnce() -> Load,
        Load: Future<Output = Result<Row, StoreError>>,
    {
        if let Some(row) = self.rows.get(key).await {
            return Ok((row, true));
        }
        let mut loaded = false;
        let last_read = self.last_read.clone();
        let remembered = key.clone();
        let row = self
            .rows
            .try_get_with(key.clone(), async {
                loaded = true;
                let row = load().await?;
                if let Some(last_read) = last_read {
                    last_read.insert(remembered, row.clone()).await;
                }
                Ok(row)
            })
            .await
            .map_err(|error: Arc<StoreError>| (*error).clone())?;
        Ok((row, !loaded))
    }

    /// Drops the cached rows of `keys`, such as every view version of a deleted entity.
    pub(crate) async fn invalidate(&self, keys: Vec<RowKey>) {
        for key in keys {
            self.rows.invalidate(&key).await;
        }
    }
}

/// Approximate bytes a cached row holds.
fn weight(key: &RowKey, row: &Row) -> usize {
    64 + key.0.len() + values_weight(&row.values) + row.tiles.iter().map(tile_weight).sum::<usize>()
}

fn tile_weight(tile: &Tile) -> usize {
    let partial = match &tile.partial {
        Partial::LastK { newest, .. } => newest
            .iter()
            .map(|stamped| 32 + value_weight(&stamped.value))
            .sum(),
        Partial::Distinct(sketch) => sketch.size_bytes(),
        Partial::Min(value) | Partial::Max(value) => value_weight(value),
        Partial::First(stamped) | Partial::Last(stamped) => 8 + value_weight(&stamped.value),
        Partial::Count(_) | Partial::IntSum(_) | Partial::FloatSum(_) | Partial::Avg { .. } => 16,
    };
    64 + tile.feature.as_str().len() + tile.source.len() + partial
}

fn values_weight(values: &[Option<StoredValue>]) -> usize {
    values
        .iter()
        .map(|stored| {
            16 + stored
                .as_ref()
                .map_or(0, |stored| value_weight(&stored.value))
        })
        .sum()
}

fn value_weight(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
        Value::StringList(items) => items.iter().map(|item| item.len() + 24).sum(),
        Value::BytesList(items) => items.iter().map(|item| item.len() + 24).sum(),
        Value::Float32List(items) => items.len() * 4,
        Value::Int32List(items) => items.len() * 4,
        Value::BoolList(items) => items.len(),
        Value::Int64List(items) | Value::TimestampList(items) => items.len() * 8,
        Value::Float64List(items) => items.len() * 8,
        Value::Bool(_)
        | Value::Int32(_)
        | Value::Int64(_)
        | Value::Float32(_)
        | Value::Float64(_)
        | Value::Timestamp(_) => 8,
    }
}
