//! The online store contract, run against the ScyllaDB adapter on the real CQL server, plus the
//! checks only this adapter can make: its tables, as CQL sees them.

use std::time::Duration;

use quiver_core::apply::apply;
use quiver_core::definition::view_table_name;
use quiver_core::store::StoreErrorKind;
use quiver_scylla::{CqlTls, ScyllaConfig, ScyllaStore};
use scylla::statement::Consistency;

async fn fresh_store() -> ScyllaStore {
    store_in(fresh_keyspace().await).await
}

async fn fresh_keyspace() -> String {
    let session = quiver_testkit::cql_session().await;
    quiver_testkit::create_keyspace(&session, "store").await
}

async fn store_in(keyspace: String) -> ScyllaStore {
    ScyllaStore::connect(&ScyllaConfig::one_node(
        quiver_testkit::cql_nodes(),
        keyspace,
    ))
    .await
    .expect("the store connects")
}

quiver_testkit::online_store_contract!(fresh_store);

#[tokio::test]
async fn a_missing_keyspace_is_named_with_how_to_create_it() {
    let _reachable = quiver_testkit::cql_session().await;
    let error = ScyllaStore::connect(&ScyllaConfig {
        nodes: quiver_testkit::cql_nodes(),
        keyspace: "no_such_keyspace".into(),
        consistency: Consistency::One,
        request_timeout: Duration::from_secs(10),
        create_keyspace: false,
        credentials: None,
        tls: None,
    })
    .await
    .expect_err("the keyspace is missing");
    assert!(
        error
            .to_string()
            .contains("keyspace `no_such_keyspace` does not exist"),
        "{error}"
    );
    assert!(error.to_string().contains("CREATE KEYSPACE"), "{error}");
}

#[tokio::test]
async fn an_unreadable_tls_ca_file_is_named_before_any_connection() {
    let mut config = ScyllaConfig::one_node(quiver_testkit::cql_nodes(), "quiver".into());
    config.tls = Some(CqlTls {
        ca_file: Some("/no/such/ca.pem".into()),
        ..CqlTls::default()
    });
    let error = ScyllaStore::connect(&config)
        .await
        .expect_err("the CA file does not exist");
    assert_eq!(error.kind, StoreErrorKind::Invalid, "{error}");
    assert!(
        error
            .to_string()
            .contains("CQL TLS CA file /no/such/ca.pem"),
        "{error}"
    );
}

#[tokio::test]
async fn tls_to_a_plaintext_node_fails_promptly_instead_of_hanging() {
    let _reachable = quiver_testkit::cql_session().await;
    let mut config = ScyllaConfig::one_node(quiver_testkit::cql_nodes(), "quiver".into());
    config.request_timeout = Duration::from_secs(5);
    config.tls = Some(CqlTls::default());
    let started = std::time::Instant::now();
    let error = ScyllaStore::connect(&config)
        .await
        .expect_err("the test node speaks plain CQL, so the TLS handshake fails");
    assert_eq!(error.kind, StoreErrorKind::Unavailable, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn view_versions_get_tables_and_the_old_one_stays_readable() {
    let keyspace = fresh_keyspace().await;
    let store = store_in(keyspace.clone()).await;
    let session = quiver_testkit::cql_session().await;
    apply(
        &store,
        &quiver_testkit::contract::example_definitions(),
        false,
    )
    .await
    .expect("applies");

    let v1 = format!(
        "{keyspace}.{}",
        view_table_name(&"user_profile".parse().unwrap(), 1)
    );
    session
        .query_unpaged(
            format!("INSERT INTO {v1} (user_id, country, photo_count) VALUES (42, 'SE', 3)"),
            (),
        )
        .await
        .expect("version 1 takes a row");

    apply(
        &store,
        &quiver_testkit::contract::examples_with_breaking_change(),
        true,
    )
    .await
    .expect("applies version 2");
    let v2 = format!(
        "{keyspace}.{}",
        view_table_name(&"user_profile".parse().unwrap(), 2)
    );
    session
        .query_unpaged(
            format!("INSERT INTO {v2} (user_id, photo_count) VALUES (42, 5000000000)"),
            (),
        )
        .await
        .expect("version 2 stores photo_count as bigint");
    let old = session
        .query_unpaged(
            format!("SELECT country, photo_count FROM {v1} WHERE user_id = 42"),
            (),
        )
        .await
        .expect("version 1 is still readable")
        .into_rows_result()
        .expect("rows")
        .single_row::<(String, i32)>()
        .expect("the row written before the new version");
    assert_eq!(old, ("SE".to_owned(), 3));
}

#[tokio::test]
async fn a_new_feature_adds_a_column_in_place() {
    let keyspace = fresh_keyspace().await;
    let store = store_in(keyspace.clone()).await;
    let mut definitions = quiver_testkit::contract::example_definitions();
    apply(&store, &definitions, false).await.expect("applies");

    let profile = definitions
        .feature_views
        .iter_mut()
        .find(|view| view.name.as_str() == "user_profile")
        .unwrap();
    let mut interests = profile.features[2].clone();
    interests.name = "interests".parse().unwrap();
    profile.features.push(interests);
    let applied = apply(&store, &definitions, false)
        .await
        .expect("a safe change applies");
    assert!(applied.plan.breaking_views().is_empty());

    let session = quiver_testkit::cql_session().await;
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.user_profile_v1 (user_id, interests) VALUES (1, ['hiking'])"
            ),
            (),
        )
        .await
        .expect("the new column exists in version 1's table");
}
