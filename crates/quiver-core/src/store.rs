//! The online store port: where the registry lives and where feature tables are created.
//!
//! Adapters implement [`OnlineStore`]: ScyllaDB in production (`quiver-scylla`), an embedded
//! store for the quickstart and tests. One contract suite (`quiver_testkit::contract`) runs
//! against every adapter.
//!
//! Feature values are written with their event time as the write timestamp, so each feature of
//! each entity keeps the value of its newest event whatever order events arrive in, and a replay
//! changes nothing. A view's TTL counts from the event time, not from the write.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use crate::aggregate::{AppliedEvent, EntityTiles, Tile, TileChanges, aggregate_feature};
use crate::definition::{Derivation, Entity, FeatureView, Registry, Seconds, VersionedView};
use crate::key::EntityKey;
use crate::name::Name;
use crate::value::{Value, ValueType};

/// What kind of failure a store reported; callers branch on this, people read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A compare-and-set lost: someone else changed the registry first.
    Conflict,
    /// The store could not be reached or did not answer in time.
    Unavailable,
    /// Stored data could not be read back, such as a registry written by a newer Quiver.
    Corrupt,
    /// The store refused the request as malformed.
    Invalid,
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Conflict => "conflict",
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::Corrupt => "corrupt data in the store",
            StoreErrorKind::Invalid => "request refused by the store",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

/// The online store, as the rest of Quiver sees it.
pub trait OnlineStore: Send + Sync {
    /// The applied registry, or `None` before the first apply.
    fn load_registry(&self) -> impl Future<Output = Result<Option<Registry>, StoreError>> + Send;

    /// Stores `registry` if the stored one still has revision `expected_revision` (0: none is
    /// stored yet). Otherwise fails with [`StoreErrorKind::Conflict`] and changes nothing, so two
    /// racing applies can never interleave their registries.
    fn publish_registry(
        &self,
        expected_revision: u64,
        registry: &Registry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes sure the table for one version of a view exists with a column for every feature
    /// read from a field: creates it, or adds the columns of new features. Idempotent.
    fn ensure_view_table(
        &self,
        entity: &Entity,
        view: &FeatureView,
        version: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The values one event gives one entity's features, stamped with the event time.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureWrite {
    pub key: EntityKey,
    /// Microseconds since the Unix epoch.
    pub event_time_micros: i64,
    /// Only the features the event carries; the others keep their stored values.
    pub values: Vec<(Name, Value)>,
}

/// A stored value and the event time it was written with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredValue {
    pub value: Value,
    pub event_time_micros: i64,
}

/// Everything stored of one entity in one view version, as [`FeatureStore::read_entity`] reads
/// it: what serving caches per (view version, entity).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityRow {
    /// The values of the view's stored features, in [`crate::read::stored_features`] order.
    pub values: Vec<Option<StoredValue>>,
    /// The tiles of every aggregate feature of the view, and the entity's deletion mark.
    pub tiles: EntityTiles,
}

/// Checks a write against its view before anything is stored: the key fits the entity, and each
/// value names a field-fed feature of the view and has its type. Shared by every adapter, so
/// they refuse the same writes with the same words.
pub fn check_write(
    entity: &Entity,
    view: &FeatureView,
    write: &FeatureWrite,
) -> Result<(), StoreError> {
    check_key(entity, &write.key)?;
    let invalid = |message: String| Err(StoreError::new(StoreErrorKind::Invalid, message));
    for (name, value) in &write.values {
        let Some(feature) = view.features.iter().find(|feature| &feature.name == name) else {
            return invalid(format!(
                "feature view `{}` has no feature `{name}`",
                view.name
            ));
        };
        if !matches!(feature.derivation, Derivation::Field(_)) {
            return invalid(format!(
                "feature `{name}` of view `{}` is an aggregate; it is not written directly",
                view.name
            ));
        }
        if let Err(mismatch) = feature.value_type.check(value) {
            return invalid(format!("feature `{}:{name}`: {mismatch}", view.name));
        }
    }
    Ok(())
}

/// How long a store remembers an entity's deletion for its aggregates at least: an event older
/// than the deletion that arrives within this time is not counted.
pub const DELETION_MARK_TTL_SECS: u32 = 30 * 86_400;

/// Events from before 2000-01-01 are taken for a unit or clock mistake.
pub const EARLIEST_EVENT_TIME_MICROS: i64 = 946_684_800_000_000;
/// Events may come from clocks a little ahead; more than this ahead is a mistake.
pub const MAX_FUTURE_MICROS: i64 = 3_600_000_000;

/// Whether an event time is believable at `now_micros`: not before 2000 (a unit or clock
/// mistake) and at most an hour ahead (a clock a little fast). Ingested events outside it are
/// refused; pushed rows have a narrower bound of their own.
pub fn plausible_event_time(event_time_micros: i64, now_micros: i64) -> bool {
    (EARLIEST_EVENT_TIME_MICROS..=now_micros.saturating_add(MAX_FUTURE_MICROS))
        .contains(&event_time_micros)
}

/// Checks that `key` has a part of the right type for each key field of `entity`.
pub fn check_key(entity: &Entity, key: &EntityKey) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::new(StoreErrorKind::Invalid, message));
    let parts = key.parts();
    if parts.len() != entity.keys.len() {
        return invalid(format!(
            "key {key} has {} part(s), entity `{}` has {} key field(s)",
            parts.len(),
            entity.name,
            entity.keys.len()
        ));
    }
    for (part, field) in parts.iter().zip(&entity.keys) {
        if part.scalar_type() != field.key_type {
            return invalid(format!(
                "key field `{}` of entity `{}` is {}, got {}",
                field.name,
                entity.name,
                field.key_type,
                part.scalar_type()
            ));
        }
    }
    Ok(())
}

/// How long a value written now should live, in seconds, when its view keeps values for `ttl`
/// after their event time; `None` when it has expired already and should not be written.
pub fn remaining_ttl_secs(ttl: Seconds, event_time_micros: i64, now_micros: i64) -> Option<u64> {
    let age_secs = now_micros.saturating_sub(event_time_micros).max(0) / 1_000_000;
    ttl.0
        .checked_sub(u64::try_from(age_secs).unwrap_or(u64::MAX))
        .filter(|remaining| *remaining > 0)
}

/// Why a write would change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    /// Each of its values has a stored (or earlier written) value at least as new.
    OlderThanStored { newest_stored_micros: i64 },
    /// Its event time is older than the view's TTL allows: it would never be read.
    Expired,
}

impl Unchanged {
    /// The reason's name, as replies and metrics give it.
    pub fn reason(self) -> &'static str {
        match self {
            Unchanged::OlderThanStored { .. } => "older_than_stored",
            Unchanged::Expired => "expired",
        }
    }
}

/// Which of `writes` would change nothing, in order, given the event time of each feature value
/// stored before them (`stored`, by entity key and feature): a write changes something when one
/// of its values is newer than both the stored one and those of the earlier writes for the same
/// entity. Equal event times change nothing, so a repeated write is reported, not counted.
pub fn unchanged_writes(
    view: &FeatureView,
    writes: &[FeatureWrite],
    mut stored: HashMap<(EntityKey, Name), i64>,
    now_micros: i64,
) -> Vec<(usize, Unchanged)> {
    let mut unchanged = Vec::new();
    for (index, write) in writes.iter().enumerate() {
        let time = write.event_time_micros;
        if view
            .ttl
            .is_some_and(|ttl| remaining_ttl_secs(ttl, time, now_micros).is_none())
        {
            unchanged.push((index, Unchanged::Expired));
            continue;
        }
        let mut changes = false;
        let mut newest_stored_micros = i64::MIN;
        for (name, _) in &write.values {
            let newest = stored
                .entry((write.key.clone(), name.clone()))
                .or_insert(i64::MIN);
            changes |= time > *newest;
            newest_stored_micros = newest_stored_micros.max(*newest);
            *newest = (*newest).max(time);
        }
        if !changes {
            unchanged.push((
                index,
                Unchanged::OlderThanStored {
                    newest_stored_micros,
                },
            ));
        }
    }
    unchanged
}

/// The declared types of `names` in `view`, or an `Invalid` error naming the first unknown one.
pub fn feature_types(view: &FeatureView, names: &[Name]) -> Result<Vec<ValueType>, StoreError> {
    names
        .iter()
        .map(|name| {
            view.features
                .iter()
                .find(|feature| &feature.name == name)
                .map(|feature| feature.value_type)
                .ok_or_else(|| {
                    StoreError::new(
                        StoreErrorKind::Invalid,
                        format!("feature view `{}` has no feature `{name}`", view.name),
                    )
                })
        })
        .collect()
}

/// Checks event ids to remember for `view` before anything is stored: the view deduplicates.
/// Returns those not expired at `now_micros`, the ones to store. Shared by every adapter.
pub fn live_applied<'a>(
    view: &FeatureView,
    applied: &'a [AppliedEvent],
    now_micros: i64,
) -> Result<Vec<&'a AppliedEvent>, StoreError> {
    if view.dedup.is_none() && !applied.is_empty() {
        return Err(StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "feature view `{}` declares no event id, so it keeps none",
                view.name
            ),
        ));
    }
    Ok(applied
        .iter()
        .filter(|applied| applied.expires_micros > now_micros)
        .collect())
}

/// Checks tiles of one entity against their view before anything is stored: the key fits the
/// entity, and each tile belongs to an aggregate feature of the view. Returns the tiles still
/// inside their windows at `now_micros`, the ones to store, each with its expiry in
/// microseconds (`None` for lifetime tiles). Shared by every adapter, so they refuse and keep
/// the same tiles.
pub fn live_tiles<'t>(
    entity: &Entity,
    view: &FeatureView,
    key: &EntityKey,
    tiles: &'t [Tile],
    now_micros: i64,
) -> Result<Vec<(&'t Tile, Option<i64>)>, StoreError> {
    check_key(entity, key)?;
    let mut live = Vec::with_capacity(tiles.len());
    for tile in tiles {
        let (_, aggregate) = aggregate_feature(view, &tile.feature).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "feature view `{}` has no aggregate feature `{}`",
                    view.name, tile.feature
                ),
            )
        })?;
        let expires = aggregate.tile_expiry_micros(tile.start_micros);
        if expires.is_none_or(|expires| expires > now_micros) {
            live.push((tile, expires));
        }
    }
    Ok(live)
}

/// The feature read and write half of the port.
pub trait FeatureStore: Send + Sync {
    /// Writes each feature value with its event time as the write timestamp: per feature, the
    /// newest event wins. Every write is checked with [`check_write`] first; if one fails,
    /// nothing is written.
    fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes everything stored for one entity in `view`: every value and every tile,
    /// whatever their event times. The deletion then holds as of the later of
    /// `event_time_micros` and the newest event time it removed (its effective time): a value
    /// or an event at or before that time, arriving later, stays removed (also from
    /// aggregates, for [`DELETION_MARK_TTL_SECS`] at least); a newer one is stored as usual, and
    /// aggregates start again from it.
    fn delete_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        event_time_micros: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored values of `features` for one entity, in that order; `None` where nothing is
    /// stored or the value outlived the view's TTL.
    fn read_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        key: &EntityKey,
    ) -> impl Future<Output = Result<Vec<Option<StoredValue>>, StoreError>> + Send;

    /// Everything stored of one entity in `view` in one read of the store: the values of every
    /// stored feature (as [`FeatureStore::read_features`] of [`crate::read::stored_features`]
    /// gives them) and every tile (as [`FeatureStore::read_tiles`] of all features does). One
    /// read, so that a call reading a view's values and aggregates costs one round trip per
    /// entity, whatever their number.
    fn read_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
    ) -> impl Future<Output = Result<EntityRow, StoreError>> + Send;

    /// Stores what folding changed of one entity's aggregates ([`crate::aggregate::fold`] gives
    /// it): each tile replaces the stored tile of the same feature, start and source, and stays
    /// until its window has passed it (lifetime tiles stay); each applied event's id is kept
    /// until it expires. Tiles are checked with [`live_tiles`] and event ids with
    /// [`live_applied`] first; if one fails, nothing is written. The tiles and the ids need not
    /// be stored atomically: `fold` tells a replay from a duplicate by its position.
    fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        changes: &TileChanges,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored tiles of one entity in `view` whose window has not passed them, in any order:
    /// those of `feature`, or of every aggregate feature when it is `None`; with the effective
    /// time of the entity's last deletion, while it is remembered, and the ids of the events
    /// counted that have not expired.
    fn read_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> impl Future<Output = Result<EntityTiles, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyPart;

    #[test]
    fn writes_not_newer_than_what_is_stored_change_nothing() {
        let view = FeatureView {
            name: "activity".parse().expect("a valid name"),
            entity: "user".parse().expect("a valid name"),
            source: crate::definition::Source {
                topic: "events".into(),
                schema: crate::definition::SchemaRef::Subject("events-value".into()),
                key_fields: vec!["user_id".into()],
                event_time: "at".into(),
                event_id: None,
            },
            ttl: Some(Seconds(3_600)),
            allowed_lateness: None,
            dedup: None,
            description: String::new(),
            owner: String::new(),
            tags: Default::default(),
            features: Vec::new(),
        };
        let now = 1_790_000_000_000_000;
        let key = |user| EntityKey::new(vec![KeyPart::Int64(user)]).expect("a key");
        let name = |text: &str| text.parse::<Name>().expect("a name");
        let write = |user, at, features: &[&str]| FeatureWrite {
            key: key(user),
            event_time_micros: at,
            values: features
                .iter()
                .map(|f| (name(f), Value::Int64(1)))
                .collect(),
        };
        let stored = HashMap::from([((key(1), name("a")), now - 10)]);
        let writes = [
            write(1, now - 20, &["a"]),            // older than stored
            write(1, now - 20, &["a", "b"]),       // b is new
            write(1, now - 20, &["b"]),            // b was just written at the same time
            write(2, now - 7_200_000_000, &["a"]), // past the TTL
            write(2, now, &["a"]),
        ];
        assert_eq!(
            unchanged_writes(&view, &writes, stored, now),
            vec![
                (
                    0,
                    Unchanged::OlderThanStored {
                        newest_stored_micros: now - 10
                    }
                ),
                (
                    2,
                    Unchanged::OlderThanStored {
                        newest_stored_micros: now - 20
                    }
                ),
                (3, Unchanged::Expired),
            ]
        );
    }

    #[test]
    fn ttl_counts_from_the_event_time() {
        let day = Seconds(86_400);
        let now = 1_790_000_000_000_000;
        assert_eq!(remaining_ttl_secs(day, now, now), Some(86_400));
        assert_eq!(
            remaining_ttl_secs(day, now - 3_600_000_000, now),
            Some(82_800)
        );
        assert_eq!(remaining_ttl_secs(day, now - 86_400_000_000, now), None);
        assert_eq!(
            remaining_ttl_secs(day, now + 5_000_000, now),
            Some(86_400),
            "future events live the full TTL"
        );
    }
}
