//! The committed golden registry and tiles, written into the file as this adapter lays them
//! out, read back as the samples they encode; a newer registry format is refused.

use quiver_core::store::{FeatureStore, OnlineStore, StoreErrorKind};
use quiver_testkit::golden::{
    REGISTRY_UNVERSIONED, REGISTRY_V1, TILES_V2, sample_registry, sample_tiles, sorted_tiles,
    tiled_entity,
};

use super::{EmbeddedStore, REGISTRY, REGISTRY_KEY, TILES, row_key, tile_key};

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(&directory.path().join("quiver.redb")).expect("opens");
    (directory, store)
}

/// Puts `entries` into `table` as they are, past the store's encoders.
fn write_raw(
    store: &EmbeddedStore,
    table: redb::TableDefinition<&[u8], &[u8]>,
    entries: &[(Vec<u8>, Vec<u8>)],
) {
    let transaction = store.database.begin_write().unwrap();
    {
        let mut table = transaction.open_table(table).unwrap();
        for (key, entry) in entries {
            table.insert(key.as_slice(), entry.as_slice()).unwrap();
        }
    }
    transaction.commit().unwrap();
}

fn write_registry(store: &EmbeddedStore, document: &str) {
    let mut entry = 7u64.to_be_bytes().to_vec();
    entry.extend_from_slice(document.trim_end().as_bytes());
    let transaction = store.database.begin_write().unwrap();
    transaction
        .open_table(REGISTRY)
        .unwrap()
        .insert(REGISTRY_KEY, entry.as_slice())
        .unwrap();
    transaction.commit().unwrap();
}

#[tokio::test]
async fn reads_the_golden_registry_of_every_format() {
    for document in [REGISTRY_V1, REGISTRY_UNVERSIONED] {
        let (_directory, store) = store();
        write_registry(&store, document);
        let loaded = store.load_registry().await.expect("reads").expect("stored");
        assert_eq!(loaded, sample_registry());
    }
}

#[tokio::test]
async fn refuses_a_registry_of_a_newer_format() {
    let (_directory, store) = store();
    let newer = REGISTRY_V1.replacen(r#""format_version":1"#, r#""format_version":2"#, 1);
    write_registry(&store, &newer);
    let error = store.load_registry().await.expect_err("a newer format");
    assert_eq!(error.kind, StoreErrorKind::Corrupt);
    assert!(
        error
            .message
            .contains("is in storage format 2, newer than format 1"),
        "{error}"
    );
}

#[tokio::test]
async fn reads_the_golden_tiles() {
    let (_directory, store) = store();
    let (entity, view, key) = tiled_entity();
    let row = row_key(&view, &key);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = sample_tiles()
        .iter()
        .zip(TILES_V2.lines())
        .map(|(tile, cell)| {
            let mut entry = i64::MAX.to_be_bytes().to_vec();
            entry.extend_from_slice(cell.as_bytes());
            (tile_key(&row, tile), entry)
        })
        .collect();
    write_raw(&store, TILES, &entries);
    let read = store
        .read_tiles(&entity, &view, &key, None)
        .await
        .expect("reads");
    assert_eq!(sorted_tiles(read.tiles), sorted_tiles(sample_tiles()));
}
