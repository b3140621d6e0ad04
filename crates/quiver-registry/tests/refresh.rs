//! A running process sees an apply without restarting, on the real CQL server.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::apply::apply;
use quiver_registry::RegistryWatcher;
use quiver_scylla::{ScyllaConfig, ScyllaStore};

#[tokio::test]
async fn an_apply_reaches_a_running_watcher_within_its_interval() {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "watch").await;
    let store = Arc::new(
        ScyllaStore::connect(&ScyllaConfig::one_node(
            quiver_testkit::cql_nodes(),
            keyspace,
        ))
        .await
        .expect("connects"),
    );

    let mut watcher = RegistryWatcher::start(store.clone(), Duration::from_millis(200))
        .await
        .expect("starts");
    assert_eq!(watcher.current().revision, 0, "nothing applied yet");

    let definitions = quiver_testkit::contract::example_definitions();
    apply(&*store, &definitions, false).await.expect("applies");
    let seen = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
        .await
        .expect("the change arrives");
    assert_eq!(seen.revision, 1);
    assert_eq!(seen.feature_views.len(), 2);

    let breaking = quiver_testkit::contract::examples_with_breaking_change();
    apply(&*store, &breaking, true)
        .await
        .expect("applies a new version");
    let seen = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
        .await
        .expect("the second change arrives");
    assert_eq!(seen.revision, 2);
    assert_eq!(watcher.current().feature_views.len(), 3);
}
