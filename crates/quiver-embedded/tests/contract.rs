//! The online store contract, run against the embedded adapter, plus what only it promises: the
//! data survives reopening the file.

use quiver_core::apply::apply;
use quiver_core::store::OnlineStore;
use quiver_embedded::EmbeddedStore;

/// A store in a file of its own. The directory is removed at once: the store keeps the file
/// open, and an unlinked file stays usable until it is closed.
async fn fresh_store() -> EmbeddedStore {
    let directory = tempfile::tempdir().expect("a temporary directory");
    EmbeddedStore::open(&directory.path().join("quiver.redb")).expect("opens")
}

quiver_testkit::online_store_contract!(fresh_store);

#[tokio::test]
async fn the_registry_survives_reopening_the_file() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("quiver.redb");
    let definitions = quiver_testkit::contract::example_definitions();
    let applied = {
        let store = EmbeddedStore::open(&path).expect("opens");
        apply(&store, &definitions, false)
            .await
            .expect("applies")
            .registry
    };
    let reopened = EmbeddedStore::open(&path).expect("opens again");
    assert_eq!(
        reopened.load_registry().await.expect("loads"),
        Some(applied)
    );
}

#[tokio::test]
async fn a_store_file_already_open_is_refused_naming_it() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("quiver.redb");
    let _open = EmbeddedStore::open(&path).expect("opens");
    let error = EmbeddedStore::open(&path).expect_err("the file is in use");
    assert!(error.to_string().contains("quiver.redb"), "{error}");
}

#[tokio::test]
async fn expired_values_are_swept_when_the_file_is_opened() {
    use quiver_core::key::{EntityKey, KeyPart};
    use quiver_core::store::{FeatureStore, FeatureWrite};
    use quiver_core::value::Value;

    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("quiver.redb");
    let store = EmbeddedStore::open(&path).expect("opens");
    let registry = quiver_testkit::contract::apply_examples(&store).await;
    let activity = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    // user_activity keeps values 7 days: this one expires two seconds from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let write = FeatureWrite {
        key: EntityKey::new(vec![KeyPart::Int64(1)]).unwrap(),
        event_time_micros: now - 7 * 86_400_000_000 + 2_000_000,
        values: vec![("last_country".parse().unwrap(), Value::String("SE".into()))],
    };
    store
        .write_features(&registry.entities[0], activity, &[write])
        .await
        .expect("writes");
    drop(store);
    let size_with_value = || {
        let database = redb::Database::open(&path).expect("opens");
        let transaction = redb::ReadableDatabase::begin_read(&database).unwrap();
        let table = transaction
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("features"))
            .unwrap();
        redb::ReadableTableMetadata::len(&table).unwrap()
    };
    assert_eq!(size_with_value(), 1);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    drop(EmbeddedStore::open(&path).expect("opens again"));
    assert_eq!(
        size_with_value(),
        0,
        "the expired value is gone from the file"
    );
}
