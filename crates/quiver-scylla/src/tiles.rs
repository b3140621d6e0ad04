//! Aggregate tiles in their entity's row of the view table.
//!
//! A view table has two columns beside the features: `_tiles`, a map from (feature, source, tile
//! start) to the tile, and `_deleted_through`, the effective time of the entity's last deletion.
//! A tile is one map cell, rewritten whole each time it changes (never a CQL counter, whose
//! increments a replay would repeat), with its own TTL that ends when its window has passed it.
//! The cell is the tile in `quiver-format`'s tile format, as text.
//!
//! A view that deduplicates also has `_applied`: a map from each event id its aggregates
//! counted to where it was counted (source, offset) and when it is forgotten, each cell with
//! the TTL of its dedup horizon. Only the ingester reads it; serving does not select it.
//!
//! `_ties` holds the entity's recent events that later ones of the same millisecond are ordered
//! against (`quiver_core::ties`), in `quiver-format`'s ties format, as text, with the TTL
//! `quiver_core::ties::MEMORY_TTL_SECS`. Only the ingester reads it too.

use quiver_core::aggregate::{AppliedEvent, EntityTiles, Tile};
use quiver_core::definition::{Entity, VersionedView};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::store::{DELETION_MARK_TTL_SECS, StoreError, StoreErrorKind};
use quiver_core::ties::{MEMORY_TTL_SECS, TiedEvent};
use scylla::value::CqlValue;

use crate::key_conditions;

/// The tiles column, quoted for CQL.
pub(crate) const TILES: &str = "\"_tiles\"";

/// The deletion mark column, quoted for CQL.
pub(crate) const DELETED_THROUGH: &str = "\"_deleted_through\"";

/// The applied event ids column, quoted for CQL.
pub(crate) const APPLIED: &str = "\"_applied\"";

/// The remembered ties column, quoted for CQL.
pub(crate) const TIES: &str = "\"_ties\"";

/// The columns every view table has for its tiles, unquoted, with their CQL types.
pub(crate) const COLUMNS: [(&str, &str); 4] = [
    ("_tiles", "map<frozen<tuple<text, text, bigint>>, text>"),
    ("_deleted_through", "bigint"),
    ("_applied", "map<text, frozen<tuple<text, bigint, bigint>>>"),
    ("_ties", "text"),
];

/// The write of one tile of one entity into `table`.
pub(crate) fn insert_statement(table: &str, entity: &Entity) -> String {
    format!(
        "UPDATE {table} USING TTL ? SET {TILES}[?] = ? WHERE {}",
        key_conditions(entity).join(" AND ")
    )
}

/// The values [`insert_statement`] binds for `tile`, expiring at `expires` (`None`: never),
/// of the entity whose key parts are `key_values`.
pub(crate) fn insert_values(
    tile: &Tile,
    expires: Option<i64>,
    now_micros: i64,
    key_values: &[CqlValue],
) -> Vec<CqlValue> {
    let ttl_secs = expires.map_or(0, |expires| ttl_secs(expires, now_micros));
    let cell = String::from_utf8(quiver_format::encode_tile(tile))
        .expect("the tile's storage format is JSON, which is UTF-8");
    let mut bound = vec![
        CqlValue::Int(ttl_secs),
        map_key(&tile.feature, &tile.source, tile.start_micros),
        CqlValue::Text(cell),
    ];
    bound.extend_from_slice(key_values);
    bound
}

/// The write of one applied event id of one entity into `table`.
pub(crate) fn applied_statement(table: &str, entity: &Entity) -> String {
    format!(
        "UPDATE {table} USING TTL ? SET {APPLIED}[?] = ? WHERE {}",
        key_conditions(entity).join(" AND ")
    )
}

/// The values [`applied_statement`] binds for `applied`, of the entity whose key parts are
/// `key_values`: it lives until it expires.
pub(crate) fn applied_values(
    applied: &AppliedEvent,
    now_micros: i64,
    key_values: &[CqlValue],
) -> Vec<CqlValue> {
    let mut bound = vec![
        CqlValue::Int(ttl_secs(applied.expires_micros, now_micros)),
        CqlValue::Text(applied.event_id.clone()),
        CqlValue::Tuple(vec![
            Some(CqlValue::Text(applied.source.clone())),
            Some(CqlValue::BigInt(applied.offset)),
            Some(CqlValue::BigInt(applied.expires_micros)),
        ]),
    ];
    bound.extend_from_slice(key_values);
    bound
}

/// The write of one entity's remembered ties into `table`.
pub(crate) fn ties_statement(table: &str, entity: &Entity) -> String {
    format!(
        "UPDATE {table} USING TTL ? SET {TIES} = ? WHERE {}",
        key_conditions(entity).join(" AND ")
    )
}

/// The values [`ties_statement`] binds for `ties`, kept for [`MEMORY_TTL_SECS`], of the
/// entity whose key parts are `key_values`.
pub(crate) fn ties_values(ties: &[TiedEvent], key_values: &[CqlValue]) -> Vec<CqlValue> {
    let cell = String::from_utf8(quiver_format::encode_ties(ties))
        .expect("the ties' storage format is JSON, which is UTF-8");
    let ttl = i32::try_from(MEMORY_TTL_SECS).unwrap_or(i32::MAX);
    let mut bound = vec![CqlValue::Int(ttl), CqlValue::Text(cell)];
    bound.extend_from_slice(key_values);
    bound
}

/// The remembered ties of one entity from its row's `_ties` column.
pub(crate) fn ties_from_column(
    view: &VersionedView,
    key: &EntityKey,
    column: Option<CqlValue>,
) -> Result<Vec<TiedEvent>, StoreError> {
    let unreadable = |found: &str| {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "the ties of {key} in {} are unreadable: {found}",
                view.view.name
            ),
        )
    };
    match column {
        None => Ok(Vec::new()),
        Some(CqlValue::Text(cell)) => quiver_format::decode_ties(cell.as_bytes())
            .map_err(|error| unreadable(&error.with_causes())),
        Some(other) => Err(unreadable(&format!("{other:?}"))),
    }
}

/// The seconds from `now_micros` until `expires_micros`, rounded up, as a CQL TTL.
fn ttl_secs(expires_micros: i64, now_micros: i64) -> i32 {
    i32::try_from((expires_micros - now_micros + 999_999) / 1_000_000).unwrap_or(i32::MAX)
}

/// The applied event ids of one entity from its row's `_applied` column.
pub(crate) fn applied_from_column(
    view: &VersionedView,
    key: &EntityKey,
    column: Option<CqlValue>,
) -> Result<Vec<AppliedEvent>, StoreError> {
    let cells = match column {
        None => return Ok(Vec::new()),
        Some(CqlValue::Map(cells)) => cells,
        Some(other) => return Err(unreadable_applied(view, key, &format!("{other:?}"))),
    };
    cells
        .into_iter()
        .map(|cell| match cell {
            (CqlValue::Text(event_id), CqlValue::Tuple(parts)) => match parts.as_slice() {
                [
                    Some(CqlValue::Text(source)),
                    Some(CqlValue::BigInt(offset)),
                    Some(CqlValue::BigInt(expires_micros)),
                ] => Ok(AppliedEvent {
                    event_id,
                    source: source.clone(),
                    offset: *offset,
                    expires_micros: *expires_micros,
                }),
                other => Err(unreadable_applied(view, key, &format!("{other:?}"))),
            },
            other => Err(unreadable_applied(view, key, &format!("{other:?}"))),
        })
        .collect()
}

fn unreadable_applied(view: &VersionedView, key: &EntityKey, found: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!(
            "an event id of {key} in {} is unreadable: {found}",
            view.view.name
        ),
    )
}

/// The write of an entity's deletion mark into its row of `table`: it lives as long as
/// [`DELETION_MARK_TTL_SECS`], with the timestamp [`mark_values`] gives it.
pub(crate) fn mark_statement(table: &str, entity: &Entity) -> String {
    format!(
        "UPDATE {table} USING TTL {DELETION_MARK_TTL_SECS} AND TIMESTAMP ? \
         SET {DELETED_THROUGH} = ? WHERE {}",
        key_conditions(entity).join(" AND ")
    )
}

/// The values [`mark_statement`] binds before the key, for a deletion effective at
/// `deleted_through_micros`. The mark is stamped after the deletion's row tombstone (at the
/// effective time, which a fast clock's event can put ahead of now), so that it survives it.
pub(crate) fn mark_values(deleted_through_micros: i64, now_micros: i64) -> Vec<CqlValue> {
    vec![
        CqlValue::BigInt(now_micros.max(deleted_through_micros.saturating_add(1))),
        CqlValue::BigInt(deleted_through_micros),
    ]
}

/// The `_tiles` key of a tile.
pub(crate) fn map_key(feature: &Name, source: &str, start_micros: i64) -> CqlValue {
    CqlValue::Tuple(vec![
        Some(CqlValue::Text(feature.to_string())),
        Some(CqlValue::Text(source.to_owned())),
        Some(CqlValue::BigInt(start_micros)),
    ])
}

/// The tiles (of `feature`, or all) and the deletion mark of one entity, from the next two of a
/// row's `columns`: `_tiles`, then `_deleted_through`.
pub(crate) fn from_columns(
    view: &VersionedView,
    key: &EntityKey,
    feature: Option<&Name>,
    columns: &mut impl Iterator<Item = Option<CqlValue>>,
) -> Result<EntityTiles, StoreError> {
    let unreadable = |error: &dyn std::fmt::Display| {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "a tile of {key} in {} is unreadable: {error}",
                view.view.name
            ),
        )
    };
    let cells = match columns.next().flatten() {
        None => Vec::new(),
        Some(CqlValue::Map(cells)) => cells,
        Some(other) => return Err(unreadable(&format!("not a map: {other:?}"))),
    };
    let deleted_through_micros = match columns.next().flatten() {
        None => None,
        Some(CqlValue::BigInt(micros)) => Some(micros),
        Some(other) => return Err(unreadable(&format!("a deletion mark of {other:?}"))),
    };
    let mut tiles = Vec::with_capacity(cells.len());
    for (cell_key, cell) in cells {
        let (name, source, start_micros) = decode_key(cell_key).map_err(|why| unreadable(&why))?;
        if feature.is_some_and(|wanted| wanted.as_str() != name) {
            continue;
        }
        let CqlValue::Text(cell) = cell else {
            return Err(unreadable(&"a tile that is not text"));
        };
        tiles.push(decode_tile(name, source, start_micros, &cell).map_err(|why| unreadable(&why))?);
    }
    Ok(EntityTiles {
        tiles,
        deleted_through_micros,
        applied: Vec::new(),
        ties: Vec::new(),
    })
}

/// A `_tiles` key's feature, source and start.
fn decode_key(cell_key: CqlValue) -> Result<(String, String, i64), String> {
    match cell_key {
        CqlValue::Tuple(parts) => match <[Option<CqlValue>; 3]>::try_from(parts) {
            Ok(
                [
                    Some(CqlValue::Text(feature)),
                    Some(CqlValue::Text(source)),
                    Some(CqlValue::BigInt(start)),
                ],
            ) => Ok((feature, source, start)),
            Ok(other) => Err(format!("a key of {other:?}")),
            Err(parts) => Err(format!("a key of {} parts", parts.len())),
        },
        other => Err(format!("a key of {other:?}")),
    }
}

/// The tile stored as `cell` under its feature, source and start.
pub(crate) fn decode_tile(
    feature: String,
    source: String,
    start_micros: i64,
    cell: &str,
) -> Result<Tile, String> {
    let feature: Name = feature.parse().map_err(|error| format!("{error}"))?;
    quiver_format::decode_tile(feature, source, start_micros, cell.as_bytes())
        .map_err(|error| error.with_causes())
}
