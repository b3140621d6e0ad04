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
