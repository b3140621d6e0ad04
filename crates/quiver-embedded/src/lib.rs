//! The embedded adapter of the online store port: the registry and every feature value in one
//! [redb](https://www.redb.org) file, for a laptop, the quickstart and tests, with the semantics
//! of the ScyllaDB adapter.
//!
//! Layout, tables of bytes:
//! - `registry`: the registry's revision, then the registry in `quiver-format`'s registry
//!   format, under one key;
//! - `features`: one entry per (view version, entity, feature), keyed by the view's table name, a
//!   NUL, the entity key's canonical encoding ([`EntityKey::encode`]) and the feature name;
//!   the value holds the event time, the expiry and the value in `quiver-format`'s value form;
//! - `deletions`: per (view version, entity), the effective time of its latest deletion (the
//!   later of its event time and the newest event time it removed), kept for good;
//! - `tiles`: one entry per aggregate tile, keyed by the entity's row key, the feature name, a
//!   NUL, the tile start and the source; the value holds the tile's expiry and the tile in
//!   `quiver-format`'s tile format;
//! - `applied`: one entry per event id a view's aggregates counted, keyed by the entity's row
//!   key and the id; the value is in `quiver-format`'s applied event format;
//! - `ties`: per (view version, entity), the events later ones of the same millisecond are
//!   ordered against: the expiry, then `quiver-format`'s ties format.
//!
//! What CQL does with `USING TIMESTAMP` and `TTL` is done here in each write transaction: a value
//! replaces the stored one only if its event time is not older, a deletion removes everything
//! and keeps shadowing writes not newer than its effective time, and an expired value reads as absent. Each call
//! is one transaction, so a refused batch writes nothing, and a commit is durable (fsync) before
//! the call returns.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quiver_core::aggregate::{AppliedEvent, EntityTiles, Tile, TileChanges};
use quiver_core::definition::{Entity, FeatureView, Registry, VersionedView, view_table_name};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::read::stored_features;
use quiver_core::store::{
    EntityRow, FeatureStore, FeatureWrite, OnlineStore, StoreError, StoreErrorKind, StoredValue,
    check_key, check_write, feature_types, live_applied, live_tiles, remaining_ttl_secs,
};
use quiver_core::ties::{MEMORY_TTL_SECS, TiedEvent};
use quiver_core::value::Value;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

const REGISTRY: TableDefinition<&str, &[u8]> = TableDefinition::new("registry");
const FEATURES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("features");
const DELETIONS: TableDefinition<&[u8], i64> = TableDefinition::new("deletions");
const TILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tiles");
const APPLIED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("applied");
const TIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ties");

const REGISTRY_KEY: &str = "current";

/// One write's entries, encoded: its row key, event time, and (feature key, entry) pairs.
struct EncodedRow {
    row: Vec<u8>,
    event_time: i64,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The online store in one local file.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    database: Arc<Database>,
}

fn unavailable(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, format!("{context}: {error}"))
}

fn corrupt(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, message)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64)
}

/// The key of an entity's row in one view version: every feature key starts with it.
fn row_key(view: &VersionedView, key: &EntityKey) -> Vec<u8> {
    let mut out = view_table_name(&view.view.name, view.version).into_bytes();
    out.push(0);
    out.extend_from_slice(&key.encode());
    out
}

fn feature_key(row: &[u8], feature: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + feature.as_str().len());
    out.extend_from_slice(row);
    out.extend_from_slice(feature.as_str().as_bytes());
    out
}

/// The end of the key range of every entry of `row`: the NUL after the table name and the
/// self-delimiting key encoding keep other rows out of `row..row_end(row)`.
fn row_end(row: &[u8]) -> Vec<u8> {
    let mut end = row.to_vec();
    end.push(u8::MAX);
    end
}

fn tile_key(row: &[u8], tile: &Tile) -> Vec<u8> {
    let mut out = row.to_vec();
    out.extend_from_slice(tile.feature.as_str().as_bytes());
    out.push(0);
    out.extend_from_slice(&tile.start_micros.to_be_bytes());
    out.extend_from_slice(tile.source.as_bytes());
    out
}

/// A stored tile: its expiry (`i64::MAX` for none), then the tile in its storage format.
fn encode_tile(expires_micros: i64, tile: &Tile) -> Vec<u8> {
    let mut out = expires_micros.to_be_bytes().to_vec();
    out.extend_from_slice(&quiver_format::encode_tile(tile));
    out
}

/// The tile stored as `entry` under `key`, the key of a tile of the row whose key is `row`
/// long: the feature name, a NUL, the start (big-endian) and the source follow the row key.
fn decode_tile(row: usize, key: &[u8], entry: &[u8]) -> Result<Tile, String> {
    let tail = key.get(row..).unwrap_or_default();
    let nul = tail
        .iter()
        .position(|byte| *byte == 0)
        .ok_or("a key without its feature")?;
    let feature = std::str::from_utf8(&tail[..nul])
        .map_err(|error| error.to_string())?
        .parse()
        .map_err(|error| format!("{error}"))?;
    let start = tail
        .get(nul + 1..nul + 9)
        .and_then(|bytes| bytes.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or("a key without its start")?;
    let source = String::from_utf8(tail[nul + 9..].to_vec()).map_err(|error| error.to_string())?;
    quiver_format::decode_tile(feature, source, start, entry.get(8..).unwrap_or_default())
        .map_err(|error| error.with_causes())
}

fn tile_expiry(entry: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(entry.get(..8)?.try_into().ok()?))
}

/// The key of an applied event id: the row key, then the id, whose UTF-8 never holds the
/// `0xFF` that ends the row's range.
fn applied_key(row: &[u8], applied: &AppliedEvent) -> Vec<u8> {
    let mut out = row.to_vec();
    out.extend_from_slice(applied.event_id.as_bytes());
    out
}

/// A stored feature value: event time, expiry (`i64::MAX` for none), then the value.
fn encode_entry(event_time_micros: i64, expires_micros: i64, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&event_time_micros.to_be_bytes());
    out.extend_from_slice(&expires_micros.to_be_bytes());
    out.extend_from_slice(&quiver_format::encode_value(value));
    out
}

/// The event time and expiry of a stored entry, without decoding its value.
fn entry_times(entry: &[u8]) -> Option<(i64, i64)> {
    let event_time = i64::from_be_bytes(entry.get(..8)?.try_into().ok()?);
    let expires = i64::from_be_bytes(entry.get(8..16)?.try_into().ok()?);
    Some((event_time, expires))
}

impl EmbeddedStore {
    /// Opens the store in `path`, creating the file if it does not exist, and drops the values
    /// that expired since. One process at a time may have it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let database = Database::create(path).map_err(|error| {
            unavailable(&format!("opening the store file {}", path.display()), error)
        })?;
        let transaction = database
            .begin_write()
            .map_err(|error| unavailable("creating the tables", error))?;
        let creating = |error: redb::TableError| unavailable("creating the tables", error);
        transaction.open_table(REGISTRY).map_err(creating)?;
        transaction.open_table(DELETIONS).map_err(creating)?;
        // Expired values read as absent, but only a sweep gives their space back; one pass at
        // open keeps a long-lived file from growing with them.
        let now = now_micros();
        transaction
            .open_table(FEATURES)
            .map_err(creating)?
            .retain(|_, entry| entry_times(entry).is_none_or(|(_, expires)| expires > now))
            .map_err(|error| unavailable("sweeping expired values", error))?;
        transaction
            .open_table(TILES)
            .map_err(creating)?
            .retain(|_, entry| tile_expiry(entry).is_none_or(|expires| expires > now))
            .map_err(|error| unavailable("sweeping expired tiles", error))?;
        transaction
            .open_table(APPLIED)
            .map_err(creating)?
            .retain(|_, entry| {
                quiver_format::applied_expiry(entry).is_none_or(|expires| expires > now)
            })
            .map_err(|error| unavailable("sweeping expired event ids", error))?;
        transaction
            .open_table(TIES)
            .map_err(creating)?
            .retain(|_, entry| tile_expiry(entry).is_none_or(|expires| expires > now))
            .map_err(|error| unavailable("sweeping expired ties", error))?;
        transaction
            .commit()
            .map_err(|error| unavailable("creating the tables", error))?;
        Ok(EmbeddedStore {
            database: Arc::new(database),
        })
    }

    /// Runs a write transaction on the blocking pool, since its commit waits for the disk.
    async fn in_write_transaction<T: Send + 'static>(
        &self,
        work: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let database = self.database.clone();
        tokio::task::spawn_blocking(move || {
            let transaction = database
                .begin_write()
                .map_err(|error| unavailable("starting a write", error))?;
            let result = work(&transaction)?;
            transaction
                .commit()
                .map_err(|error| unavailable("committing a write", error))?;
            Ok(result)
        })
        .await
        .map_err(|error| unavailable("the write task", error))?
    }
}

impl OnlineStore for EmbeddedStore {
    async fn load_registry(&self) -> Result<Option<Registry>, StoreError> {
        let transaction = self
            .database
            .begin_read()
            .map_err(|error| unavailable("loading the registry", error))?;
        let table = transaction
            .open_table(REGISTRY)
            .map_err(|error| unavailable("loading the registry", error))?;
        let Some(stored) = table
            .get(REGISTRY_KEY)
            .map_err(|error| unavailable("loading the registry", error))?
        else {
            return Ok(None);
        };
        let document = stored.value().get(8..).unwrap_or_default();
        quiver_format::decode_registry(document)
            .map(Some)
            .map_err(|error| {
                corrupt(format!(
                    "the stored registry cannot be read: {}",
                    error.with_causes()
                ))
            })
    }

    async fn publish_registry(
        &self,
        expected_revision: u64,
        registry: &Registry,
    ) -> Result<(), StoreError> {
        let mut entry = registry.revision.to_be_bytes().to_vec();
        entry.extend_from_slice(&quiver_format::encode_registry(registry));
        self.in_write_transaction(move |transaction| {
            let mut table = transaction
                .open_table(REGISTRY)
                .map_err(|error| unavailable("publishing the registry", error))?;
            let current = table
                .get(REGISTRY_KEY)
                .map_err(|error| unavailable("publishing the registry", error))?
                .map(|stored| {
                    stored
                        .value()
                        .get(..8)
                        .and_then(|bytes| bytes.try_into().ok())
                        .map(u64::from_be_bytes)
                        .ok_or_else(|| corrupt("the stored registry has no revision".into()))
                })
                .transpose()?
                .unwrap_or(0);
            if current != expected_revision {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!("the registry is no longer at revision {expected_revision}"),
                ));
            }
            table
                .insert(REGISTRY_KEY, entry.as_slice())
                .map_err(|error| unavailable("publishing the registry", error))?;
            Ok(())
        })
        .await
    }

    /// Nothing to create: a view version's values live under its table name in `features`.
    async fn ensure_view_table(
        &self,
        _entity: &Entity,
        _view: &FeatureView,
        _version: u32,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

impl FeatureStore for EmbeddedStore {
    async fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<(), StoreError> {
        for write in writes {
            check_write(entity, &view.view, write)?;
        }
        let now = now_micros();
        // Encoded before the transaction, so that the blocking task owns what it writes.
        let rows: Vec<EncodedRow> = writes
            .iter()
            .filter_map(|write| {
                let expires = match view.view.ttl {
                    None => i64::MAX,
                    // Like CQL's TTL: counted from the event time, and an event already older
                    // than the TTL is not stored.
                    Some(ttl) => {
                        let remaining = remaining_ttl_secs(ttl, write.event_time_micros, now)?;
                        now.saturating_add((remaining as i64).saturating_mul(1_000_000))
                    }
                };
                let row = row_key(view, &write.key);
                let entries = write
                    .values
                    .iter()
                    .map(|(name, value)| {
                        (
                            feature_key(&row, name),
                            encode_entry(write.event_time_micros, expires, value),
                        )
                    })
                    .collect();
                Some(EncodedRow {
                    row,
                    event_time: write.event_time_micros,
                    entries,
                })
            })
            .collect();
        self.in_write_transaction(move |transaction| {
            let failed = |error: redb::StorageError| unavailable("writing features", error);
            let mut features = transaction
                .open_table(FEATURES)
                .map_err(|error| unavailable("writing features", error))?;
            let deletions = transaction
                .open_table(DELETIONS)
                .map_err(|error| unavailable("writing features", error))?;
            for EncodedRow {
                row,
                event_time,
                entries,
            } in rows
            {
                let deleted_at = deletions
                    .get(row.as_slice())
                    .map_err(failed)?
                    .map(|stored| stored.value());
                if deleted_at.is_some_and(|deleted_at| deleted_at >= event_time) {
                    continue;
                }
                for (key, entry) in entries {
                    let newer_stored = features
                        .get(key.as_slice())
                        .map_err(failed)?
                        .and_then(|stored| entry_times(stored.value()))
                        .is_some_and(|(stored_time, expires)| {
                            stored_time > event_time && expires > now
                        });
                    if !newer_stored {
                        features
                            .insert(key.as_slice(), entry.as_slice())
                            .map_err(failed)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn delete_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        event_time_micros: i64,
    ) -> Result<(), StoreError> {
        check_key(entity, key)?;
        let row = row_key(view, key);
        let unreadable_tile = format!("a tile of {key} in {} is unreadable", view.view.name);
        self.in_write_transaction(move |transaction| {
            let failed = |error: redb::StorageError| unavailable("deleting an entity", error);
            let mut deletions = transaction
                .open_table(DELETIONS)
                .map_err(|error| unavailable("deleting an entity", error))?;
            let mut features = transaction
                .open_table(FEATURES)
                .map_err(|error| unavailable("deleting an entity", error))?;
            let mut tiles = transaction
                .open_table(TILES)
                .map_err(|error| unavailable("deleting an entity", error))?;
            let end = row_end(&row);
            // The deletion holds as of the newest event time it removes, so that none of
            // what it removed (values from a clock running fast included) comes back.
            let mut effective = deletions
                .get(row.as_slice())
                .map_err(failed)?
                .map_or(event_time_micros, |stored| {
                    stored.value().max(event_time_micros)
                });
            for entry in features
                .range(row.as_slice()..end.as_slice())
                .map_err(failed)?
            {
                let (_, stored) = entry.map_err(failed)?;
                if let Some((event_time, _)) = entry_times(stored.value()) {
                    effective = effective.max(event_time);
                }
            }
            for entry in tiles
                .range(row.as_slice()..end.as_slice())
                .map_err(failed)?
            {
                let (stored_key, stored) = entry.map_err(failed)?;
                let tile = decode_tile(row.len(), stored_key.value(), stored.value())
                    .map_err(|why| corrupt(format!("{unreadable_tile}: {why}")))?;
                effective = effective.max(tile.newest_event_micros);
            }
            deletions
                .insert(row.as_slice(), effective)
                .map_err(failed)?;
            features
                .retain_in(row.as_slice()..end.as_slice(), |_, _| false)
                .map_err(failed)?;
            tiles
                .retain_in(row.as_slice()..end.as_slice(), |_, _| false)
                .map_err(failed)?;
            transaction
                .open_table(APPLIED)
                .map_err(|error| unavailable("deleting an entity", error))?
                .retain_in(row.as_slice()..end.as_slice(), |_, _| false)
                .map_err(failed)?;
            transaction
                .open_table(TIES)
                .map_err(|error| unavailable("deleting an entity", error))?
                .remove(row.as_slice())
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn read_features(
        &self,
        _entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        key: &EntityKey,
    ) -> Result<Vec<Option<StoredValue>>, StoreError> {
        let transaction = self
            .database
            .begin_read()
            .map_err(|error| unavailable("reading features", error))?;
        stored_values(&transaction, view, features, key)
    }

    async fn read_entity(
        &self,
        _entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
    ) -> Result<EntityRow, StoreError> {
        let transaction = self
            .database
            .begin_read()
            .map_err(|error| unavailable("reading an entity", error))?;
        Ok(EntityRow {
            values: stored_values(&transaction, view, &stored_features(view), key)?,
            tiles: stored_tiles(&transaction, view, key, None)?,
        })
    }

    async fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        changes: &TileChanges,
    ) -> Result<(), StoreError> {
        let row = row_key(view, key);
        let now = now_micros();
        let tiles: Vec<(Vec<u8>, Vec<u8>)> =
            live_tiles(entity, &view.view, key, &changes.tiles, now)?
                .into_iter()
                .map(|(tile, expires)| {
                    (
                        tile_key(&row, tile),
                        encode_tile(expires.unwrap_or(i64::MAX), tile),
                    )
                })
                .collect();
        let applied: Vec<(Vec<u8>, Vec<u8>)> = live_applied(&view.view, &changes.applied, now)?
            .into_iter()
            .map(|applied| {
                (
                    applied_key(&row, applied),
                    quiver_format::encode_applied(applied),
                )
            })
            .collect();
        let horizon_micros = i64::from(MEMORY_TTL_SECS) * 1_000_000;
        let ties = changes.ties.as_ref().map(|ties| {
            let mut entry = now.saturating_add(horizon_micros).to_be_bytes().to_vec();
            entry.extend_from_slice(&quiver_format::encode_ties(ties));
            entry
        });
        self.in_write_transaction(move |transaction| {
            if let Some(entry) = ties {
                transaction
                    .open_table(TIES)
                    .map_err(|error| unavailable("writing tiles", error))?
                    .insert(row.as_slice(), entry.as_slice())
                    .map_err(|error| unavailable("writing tiles", error))?;
            }
            for (table, entries) in [(TILES, tiles), (APPLIED, applied)] {
                let mut table = transaction
                    .open_table(table)
                    .map_err(|error| unavailable("writing tiles", error))?;
                for (key, entry) in entries {
                    table
                        .insert(key.as_slice(), entry.as_slice())
                        .map_err(|error| unavailable("writing tiles", error))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn read_tiles(
        &self,
        _entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> Result<EntityTiles, StoreError> {
        let transaction = self
            .database
            .begin_read()
            .map_err(|error| unavailable("reading tiles", error))?;
        Ok(EntityTiles {
            applied: stored_applied(&transaction, view, key)?,
            ties: stored_ties(&transaction, view, key)?,
            ..stored_tiles(&transaction, view, key, feature)?
        })
    }
}

/// The stored values of `features` of one entity, in that order, as of one read transaction.
fn stored_values(
    transaction: &ReadTransaction,
    view: &VersionedView,
    features: &[Name],
    key: &EntityKey,
) -> Result<Vec<Option<StoredValue>>, StoreError> {
    let types = feature_types(&view.view, features)?;
    let failed = |error: redb::StorageError| unavailable("reading features", error);
    let table = transaction
        .open_table(FEATURES)
        .map_err(|error| unavailable("reading features", error))?;
    let row = row_key(view, key);
    let now = now_micros();
    features
        .iter()
        .zip(types)
        .map(|(name, value_type)| {
            let Some(stored) = table
                .get(feature_key(&row, name).as_slice())
                .map_err(failed)?
            else {
                return Ok(None);
            };
            let entry = stored.value();
            let unreadable =
                || corrupt(format!("{}:{name} of {key} is unreadable", view.view.name));
            let (event_time_micros, expires) = entry_times(entry).ok_or_else(unreadable)?;
            if expires <= now {
                return Ok(None);
            }
            let value = quiver_format::decode_value(&entry[16..]).map_err(|_| unreadable())?;
            if value_type.check(&value).is_err() {
                return Err(corrupt(format!(
                    "{}:{name} of {key} holds a value that is not a {value_type}",
                    view.view.name
                )));
            }
            Ok(Some(StoredValue {
                value,
                event_time_micros,
            }))
        })
        .collect()
}

/// The live tiles of one entity (of `feature`, or of every aggregate) and its deletion mark, as
/// of one read transaction.
fn stored_tiles(
    transaction: &ReadTransaction,
    view: &VersionedView,
    key: &EntityKey,
    feature: Option<&Name>,
) -> Result<EntityTiles, StoreError> {
    let failed = |error: redb::StorageError| unavailable("reading tiles", error);
    let table = transaction
        .open_table(TILES)
        .map_err(|error| unavailable("reading tiles", error))?;
    let row = row_key(view, key);
    let row_len = row.len();
    let deleted_through_micros = transaction
        .open_table(DELETIONS)
        .map_err(|error| unavailable("reading tiles", error))?
        .get(row.as_slice())
        .map_err(failed)?
        .map(|stored| stored.value());
    // The tiles of one feature lie under the row key, the feature name and a NUL.
    let mut start = row;
    if let Some(feature) = feature {
        start.extend_from_slice(feature.as_str().as_bytes());
        start.push(0);
    }
    let end = row_end(&start);
    let now = now_micros();
    let mut tiles = Vec::new();
    for entry in table
        .range(start.as_slice()..end.as_slice())
        .map_err(failed)?
    {
        let (stored_key, stored) = entry.map_err(failed)?;
        let stored = stored.value();
        let unreadable = |why: &str| {
            corrupt(format!(
                "a tile of {key} in {} is unreadable: {why}",
                view.view.name
            ))
        };
        if tile_expiry(stored).ok_or_else(|| unreadable("no expiry"))? <= now {
            continue;
        }
        tiles.push(
            decode_tile(row_len, stored_key.value(), stored).map_err(|why| unreadable(&why))?,
        );
    }
    Ok(EntityTiles {
        tiles,
        deleted_through_micros,
        applied: Vec::new(),
        ties: Vec::new(),
    })
}

/// The remembered ties of one entity, unless they expired, as of one read transaction.
fn stored_ties(
    transaction: &ReadTransaction,
    view: &VersionedView,
    key: &EntityKey,
) -> Result<Vec<TiedEvent>, StoreError> {
    let stored = transaction
        .open_table(TIES)
        .map_err(|error| unavailable("reading ties", error))?
        .get(row_key(view, key).as_slice())
        .map_err(|error| unavailable("reading ties", error))?;
    let Some(stored) = stored else {
        return Ok(Vec::new());
    };
    let entry = stored.value();
    if tile_expiry(entry).is_none_or(|expires| expires <= now_micros()) {
        return Ok(Vec::new());
    }
    quiver_format::decode_ties(&entry[8..]).map_err(|error| {
        corrupt(format!(
            "the ties of {key} in {} are unreadable: {}",
            view.view.name,
            error.with_causes()
        ))
    })
}

/// The event ids of one entity that have not expired, as of one read transaction.
fn stored_applied(
    transaction: &ReadTransaction,
    view: &VersionedView,
    key: &EntityKey,
) -> Result<Vec<AppliedEvent>, StoreError> {
    let failed = |error: redb::StorageError| unavailable("reading event ids", error);
    let table = transaction
        .open_table(APPLIED)
        .map_err(|error| unavailable("reading event ids", error))?;
    let row = row_key(view, key);
    let end = row_end(&row);
    let now = now_micros();
    let mut applied = Vec::new();
    for entry in table
        .range(row.as_slice()..end.as_slice())
        .map_err(failed)?
    {
        let (stored_key, stored) = entry.map_err(failed)?;
        let unreadable = |why: String| {
            corrupt(format!(
                "an event id of {key} in {} is unreadable: {why}",
                view.view.name
            ))
        };
        let event_id = String::from_utf8(stored_key.value()[row.len()..].to_vec())
            .map_err(|error| unreadable(error.to_string()))?;
        let event = quiver_format::decode_applied(event_id, stored.value())
            .map_err(|error| unreadable(error.with_causes()))?;
        if event.expires_micros > now {
            applied.push(event);
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod golden;
