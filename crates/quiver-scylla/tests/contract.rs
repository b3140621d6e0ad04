//! The online store contract, run against the ScyllaDB adapter on the real CQL server, plus the
//! checks only this adapter can make: its tables, as CQL sees them.

use std::time::Duration;

use quiver_core::aggregate::{Partial, TileChanges};
use quiver_core::apply::apply;
use quiver_core::definition::{Registry, view_table_name};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, StoreErrorKind};
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

/// A fresh keyspace with the example definitions applied, and their registry; no store is left
/// connected to it.
async fn keyspace_with_the_examples() -> (String, Registry) {
    let keyspace = fresh_keyspace().await;
    let store = store_in(keyspace.clone()).await;
    let registry = quiver_testkit::contract::apply_examples(&store).await;
    (keyspace, registry)
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

/// A keyspace from before tiles moved into the view tables: the view table without its tile
/// columns, and the tiles and a deletion mark in `quiver_tiles`. Connecting moves them over and
/// drops the old table; tiles whose window has passed are left behind.
#[tokio::test]
async fn tiles_of_the_old_layout_move_into_the_view_tables_on_connect() {
    let (keyspace, registry) = keyspace_with_the_examples().await;
    let session = quiver_testkit::cql_session().await;
    let run = |statement: String| {
        let session = &session;
        async move {
            session
                .query_unpaged(statement.clone(), ())
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
    };
    run(format!(
        "ALTER TABLE {keyspace}.user_activity_v1 DROP (\"_tiles\", \"_deleted_through\")"
    ))
    .await;
    run(format!(
        "CREATE TABLE {keyspace}.quiver_tiles (view_table text, entity blob, feature text, \
         source text, tiles map<bigint, text>, deleted_through bigint static, \
         PRIMARY KEY ((view_table, entity), feature, source))"
    ))
    .await;
    let user = |id: i64| EntityKey::new(vec![KeyPart::Int64(id)]).unwrap();
    let blob = |id: i64| {
        user(id)
            .encode()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    // Cells as the old layout wrote them: [through offset, newest event time, partial].
    let recent = now_micros() / 300_000_000 * 300_000_000;
    let passed = recent - 3 * 3_600_000_000;
    run(format!(
        "INSERT INTO {keyspace}.quiver_tiles (view_table, entity, feature, source, tiles) \
         VALUES ('user_activity_v1', 0x{}, 'actions_1h', 'match-events/0', \
         {{{recent}: '[7, {recent}, {{\"Count\": 3}}]', {passed}: '[2, {passed}, {{\"Count\": 1}}]'}})",
        blob(7)
    ))
    .await;
    run(format!(
        "INSERT INTO {keyspace}.quiver_tiles (view_table, entity, feature, source, tiles) \
         VALUES ('user_activity_v1', 0x{}, 'actions_total', 'match-events/1', \
         {{0: '[9, 5, {{\"Count\": 9}}]'}})",
        blob(7)
    ))
    .await;
    run(format!(
        "UPDATE {keyspace}.quiver_tiles SET deleted_through = 1234 \
         WHERE view_table = 'user_activity_v1' AND entity = 0x{}",
        blob(8)
    ))
    .await;

    let store = store_in(keyspace.clone()).await;
    let entity = &registry.entities[0];
    let activity = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let mut moved = store
        .read_entity(entity, activity, &user(7))
        .await
        .expect("reads")
        .tiles;
    moved.tiles.sort_by_key(|tile| tile.start_micros);
    let summary: Vec<_> = moved
        .tiles
        .iter()
        .map(|tile| {
            (
                tile.feature.as_str(),
                tile.start_micros,
                tile.source.as_str(),
                tile.through_offset,
                tile.partial.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("actions_total", 0, "match-events/1", 9, Partial::Count(9)),
            ("actions_1h", recent, "match-events/0", 7, Partial::Count(3)),
        ],
        "both live tiles moved, the one past its window did not"
    );
    let marked = store
        .read_tiles(entity, activity, &user(8), None)
        .await
        .expect("reads");
    assert_eq!(marked.deleted_through_micros, Some(1234));
    let old_table = session
        .query_unpaged(
            // Unprepared (no bound values): the test Cassandra's small statement cache may
            // evict a statement prepared once.
            format!(
                "SELECT table_name FROM system_schema.tables \
                 WHERE keyspace_name = '{keyspace}' AND table_name = 'quiver_tiles'"
            ),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    assert_eq!(old_table, 0, "the old table is dropped");
    drop(store);
    store_in(keyspace).await;
}

/// A view table made before entities remembered their ties has no `_ties`: connecting adds it,
/// and the ingester's reads and writes of ties then work.
#[tokio::test]
async fn a_view_table_without_the_ties_column_gets_it_on_connect() {
    let (keyspace, registry) = keyspace_with_the_examples().await;
    let session = quiver_testkit::cql_session().await;
    session
        .query_unpaged(
            format!("ALTER TABLE {keyspace}.user_activity_v1 DROP \"_ties\""),
            (),
        )
        .await
        .expect("drops the column");

    let store = store_in(keyspace).await;
    let entity = &registry.entities[0];
    let activity = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let key = EntityKey::new(vec![KeyPart::Int64(3)]).unwrap();
    let ties = vec![quiver_core::ties::TiedEvent {
        event_time_micros: now_micros() / 1_000 * 1_000,
        tiebreak: quiver_core::ties::Tiebreak::Offset(12),
        slot: 0,
        features: [0].into(),
    }];
    let changes = TileChanges {
        ties: Some(ties.clone()),
        ..TileChanges::default()
    };
    store
        .write_tiles(entity, activity, &key, &changes)
        .await
        .expect("writes ties");
    let read = store
        .read_tiles(entity, activity, &key, None)
        .await
        .expect("reads ties");
    assert_eq!(read.ties, ties);
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Writes `document` as the stored registry, past the adapter's encoder.
async fn write_registry(keyspace: &str, document: &str) {
    let session = quiver_testkit::cql_session().await;
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.quiver_registry (id, revision, registry) \
                 VALUES ('current', 7, ?)"
            ),
            (document.trim_end(),),
        )
        .await
        .expect("writes the registry");
}

#[tokio::test]
async fn reads_the_golden_registry_of_every_format_and_refuses_a_newer_one() {
    use quiver_core::store::OnlineStore;
    use quiver_testkit::golden::{REGISTRY_UNVERSIONED, REGISTRY_V1, sample_registry};

    for document in [REGISTRY_V1, REGISTRY_UNVERSIONED] {
        let keyspace = fresh_keyspace().await;
        let store = store_in(keyspace.clone()).await;
        write_registry(&keyspace, document).await;
        let loaded = store.load_registry().await.expect("reads").expect("stored");
        assert_eq!(loaded, sample_registry());
    }
    let keyspace = fresh_keyspace().await;
    let store = store_in(keyspace.clone()).await;
    let newer = REGISTRY_V1.replacen(r#""format_version":1"#, r#""format_version":2"#, 1);
    write_registry(&keyspace, &newer).await;
    let error = store.load_registry().await.expect_err("a newer format");
    assert_eq!(error.kind, StoreErrorKind::Corrupt);
    assert!(
        error
            .message
            .contains("(revision 7) cannot be read: the stored registry is in storage format 2"),
        "{error}"
    );
}

#[tokio::test]
async fn reads_the_golden_tiles() {
    use quiver_core::store::OnlineStore;
    use quiver_testkit::golden::{TILES_V2, sample_tiles, sorted_tiles, tiled_entity};

    let keyspace = fresh_keyspace().await;
    let store = store_in(keyspace.clone()).await;
    let (entity, view, key) = tiled_entity();
    store
        .ensure_view_table(&entity, &view.view, view.version)
        .await
        .expect("creates the table");
    let session = quiver_testkit::cql_session().await;
    let table = view_table_name(&view.view.name, view.version);
    for (tile, cell) in sample_tiles().iter().zip(TILES_V2.lines()) {
        session
            .query_unpaged(
                format!(
                    "UPDATE {keyspace}.{table} SET \"_tiles\"[(?, ?, ?)] = ? WHERE user_id = 1"
                ),
                (tile.feature.as_str(), &tile.source, tile.start_micros, cell),
            )
            .await
            .expect("writes a tile");
    }
    let read = store
        .read_tiles(&entity, &view, &key, None)
        .await
        .expect("reads");
    assert_eq!(sorted_tiles(read.tiles), sorted_tiles(sample_tiles()));
}
