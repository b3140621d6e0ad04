//! Moves the tiles of a keyspace made before tiles lived in the view tables out of the old
//! `quiver_tiles` table, then drops it.
//!
//! It runs when a store connects, and only while `quiver_tiles` exists. Each tile is written
//! again through [`FeatureStore::write_tiles`], so it gets the TTL its window gives it, and
//! tiles whose window has passed are left behind. Copying is idempotent, so a migration cut
//! short, or two processes migrating at once, only copy again; the table is dropped once every
//! row has been copied. Tiles of view versions no longer in the registry are not copied.
//!
//! Then every view table of the registry gets the columns this release stores beside the
//! features (such as `_ties`) that a table made by an earlier release lacks.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use quiver_core::aggregate::TileChanges;
use quiver_core::definition::{Entity, VersionedView, view_table_name};
use quiver_core::key::EntityKey;
use quiver_core::store::{FeatureStore, OnlineStore, StoreError, StoreErrorKind};

use crate::tiles::{self, decode_tile};
use crate::{ScyllaStore, now_micros, retry_evicted, unavailable, values};

/// The table tiles lived in before they moved into the view tables.
const OLD_TABLE: &str = "quiver_tiles";

/// A row of the old table: view table, encoded entity key, feature, source, the tiles by start,
/// and the entity's deletion mark (feature and source are null on a row holding only the mark).
type OldRow = (
    String,
    Vec<u8>,
    Option<String>,
    Option<String>,
    Option<BTreeMap<i64, String>>,
    Option<i64>,
);

/// Adds the storage columns this release writes to every view table of the registry made
/// without them.
pub(crate) async fn columns_of_every_view(store: &ScyllaStore) -> Result<(), StoreError> {
    let registry = store.load_registry().await?.unwrap_or_default();
    for view in &registry.feature_views {
        if let Some(entity) = registry.entity(&view.view.entity) {
            store
                .ensure_view_table(entity, &view.view, view.version)
                .await?;
        }
    }
    Ok(())
}

/// Copies every tile and deletion mark of `quiver_tiles` into the view tables, then drops it.
pub(crate) async fn tiles_into_view_tables(store: &ScyllaStore) -> Result<(), StoreError> {
    if !old_table_exists(store).await? {
        return Ok(());
    }
    let registry = store.load_registry().await?.unwrap_or_default();
    let mut views: HashMap<String, (&Entity, &VersionedView)> = HashMap::new();
    for view in &registry.feature_views {
        let Some(entity) = registry
            .entities
            .iter()
            .find(|entity| entity.name == view.view.entity)
        else {
            continue;
        };
        store
            .ensure_view_table(entity, &view.view, view.version)
            .await?;
        views.insert(
            view_table_name(&view.view.name, view.version),
            (entity, view),
        );
    }
    let failed = |error: &dyn std::fmt::Display| unavailable("moving tiles", error);
    let mut rows = store
        .session
        .query_iter(
            format!(
                "SELECT view_table, entity, feature, source, tiles, deleted_through \
                 FROM {}.{OLD_TABLE}",
                store.keyspace
            ),
            (),
        )
        .await
        .map_err(|error| failed(&error))?
        .rows_stream::<OldRow>()
        .map_err(|error| failed(&error))?;
    let (mut moved, mut left) = (0_usize, 0_usize);
    while let Some(row) = rows.next().await {
        let (table, encoded_key, feature, source, cells, deleted_through) =
            row.map_err(|error| failed(&error))?;
        let Some(&(entity, view)) = views.get(&table) else {
            left += 1;
            continue;
        };
        let key = EntityKey::decode(&encoded_key).map_err(|error| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("an entity key in {OLD_TABLE} is unreadable: {error}"),
            )
        })?;
        if let Some(mark) = deleted_through {
            write_mark(store, entity, view, &key, mark).await?;
        }
        let (Some(feature), Some(source)) = (feature, source) else {
            continue;
        };
        let tiles = cells
            .unwrap_or_default()
            .into_iter()
            .map(|(start, cell)| decode_tile(feature.clone(), source.clone(), start, &cell))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| {
                StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!("a tile of {key} in {OLD_TABLE} is unreadable: {why}"),
                )
            })?;
        moved += tiles.len();
        store
            .write_tiles(entity, view, &key, &TileChanges::of_tiles(tiles))
            .await?;
    }
    store
        .run(
            "dropping the old tiles table",
            format!("DROP TABLE IF EXISTS {}.{OLD_TABLE}", store.keyspace),
        )
        .await?;
    tracing::info!(
        tiles = moved,
        rows_of_unknown_views = left,
        "moved aggregate tiles into the view tables and dropped {OLD_TABLE}"
    );
    Ok(())
}

async fn old_table_exists(store: &ScyllaStore) -> Result<bool, StoreError> {
    let rows = retry_evicted(|| {
        store.session.query_unpaged(
            "SELECT table_name FROM system_schema.tables \
             WHERE keyspace_name = ? AND table_name = ?",
            (store.keyspace.as_str(), OLD_TABLE),
        )
    })
    .await
    .map_err(|error| unavailable("reading the schema", error))?
    .into_rows_result()
    .map_err(|error| unavailable("reading the schema", error))?;
    Ok(rows.rows_num() > 0)
}

/// Writes an entity's deletion mark into its row of the view table.
async fn write_mark(
    store: &ScyllaStore,
    entity: &Entity,
    view: &VersionedView,
    key: &EntityKey,
    deleted_through_micros: i64,
) -> Result<(), StoreError> {
    let statement = store
        .prepared(tiles::mark_statement(&store.table(view), entity))
        .await?;
    let mut bound = tiles::mark_values(deleted_through_micros, now_micros());
    bound.extend(key.parts().iter().map(values::key_part));
    retry_evicted(|| store.session.execute_unpaged(&statement, &bound))
        .await
        .map_err(|error| unavailable("moving a deletion mark", error))?;
    Ok(())
}
