//! The adapter against a node that forgets its prepared statements: Cassandra and ScyllaDB
//! evict them under memory pressure, on schema changes and on restarts. The test Cassandra of
//! `scripts/services.sh` has a 1 MiB statement cache, and thrashers here keep evicting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use quiver_core::apply::apply;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::{FeatureStore, FeatureWrite, OnlineStore};
use quiver_core::value::Value;
use quiver_scylla::{ScyllaConfig, ScyllaStore};

/// Prepares distinct statements in a loop until told to stop, so that the node's prepared
/// statement cache keeps evicting the others; returns how many it prepared.
async fn thrash(session: Arc<scylla::client::session::Session>, stop: Arc<AtomicBool>) -> u64 {
    let mut prepared = 0;
    while !stop.load(Ordering::Relaxed) {
        let statement = format!(
            "SELECT release_version FROM system.local WHERE key = ? /* {} {prepared} */",
            "x".repeat(2_000)
        );
        if session.prepare(statement).await.is_ok() {
            prepared += 1;
        }
    }
    prepared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_survive_a_node_that_keeps_evicting_prepared_statements() {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "evict").await;
    let store = ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace,
    ))
    .await
    .expect("the store connects");
    let mut definitions = quiver_testkit::contract::example_definitions();
    definitions.feature_services.clear();
    for view in &mut definitions.feature_views {
        view.ttl = None;
    }
    apply(&store, &definitions, false).await.expect("applies");
    let registry = store.load_registry().await.unwrap().unwrap();
    let profile: Name = "user_profile".parse().unwrap();
    let view = registry.view(&profile, None).unwrap();
    let entity = registry.entity(&view.view.entity).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let session = Arc::new(session);
    let thrashers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(thrash(session.clone(), stop.clone())))
        .collect();
    let event_time = 1_790_000_000_000_000;
    let rows = 20_000i64;
    let row = |user: i64| FeatureWrite {
        key: EntityKey::new(vec![KeyPart::Int64(user % 500)]).unwrap(),
        event_time_micros: event_time + user,
        values: vec![
            (
                "country".parse().unwrap(),
                Value::String(format!("c{user}")),
            ),
            ("birth_year".parse().unwrap(), Value::Int32(1990)),
            (
                "photo_count".parse().unwrap(),
                Value::Int32((user % 100) as i32),
            ),
        ],
    };
    let mut failures = Vec::new();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(1_000) {
        let writes: Vec<FeatureWrite> = chunk.iter().map(|&user| row(user)).collect();
        if let Err(error) = store.write_features(entity, view, &writes).await {
            failures.push(error.to_string());
        }
    }
    let features: Vec<Name> = vec!["country".parse().unwrap(), "photo_count".parse().unwrap()];
    let mut missing = 0;
    for user in 0..rows {
        match store
            .read_features(
                entity,
                view,
                &features,
                &EntityKey::new(vec![KeyPart::Int64(user % 500)]).unwrap(),
            )
            .await
        {
            Ok(values) if values.iter().all(Option::is_some) => {}
            Ok(_) => missing += 1,
            Err(error) => failures.push(error.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut prepared = 0;
    for thrasher in thrashers {
        prepared += thrasher.await.unwrap();
    }
    failures.truncate(3);
    assert!(
        failures.is_empty() && missing == 0,
        "{failures:?}, {missing} missing; thrasher prepared {prepared}"
    );
}
