//! The contract every online store adapter must keep, written once and run against each one.
//!
//! An adapter's test file calls [`online_store_contract!`](crate::online_store_contract) with an
//! async function that returns a fresh, empty store; every check then runs as its own test.

use quiver_core::aggregate::{AppliedEvent, Partial, Tile, TileChanges};
use quiver_core::apply::{ApplyError, apply};
use quiver_core::definition::{Definitions, Registry};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_core::definition::{Entity, VersionedView};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::{FeatureStore, FeatureWrite, OnlineStore, StoreErrorKind, StoredValue};
use quiver_core::ties::{Tiebreak, TiedEvent};
use quiver_core::value::Value;
use quiver_core::value::{ScalarType, ValueType};

/// The example definitions shipped in `examples/features`.
pub fn example_definitions() -> Definitions {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/features");
    quiver_definitions::load_dir(&dir).unwrap_or_else(|errors| panic!("{errors}"))
}

/// Applies [`example_definitions`] to `store` and returns the registry it published.
pub async fn apply_examples(store: &impl OnlineStore) -> Registry {
    apply(store, &example_definitions(), false)
        .await
        .expect("applies the example definitions")
        .registry
}

/// The examples' `user_activity` view alone, reading `topic`, with no TTL so that the sample
/// events (from 2026) are kept whatever today is.
pub fn user_activity_on(topic: &str) -> Definitions {
    let mut definitions = example_definitions();
    definitions
        .feature_views
        .retain(|view| view.name.as_str() == "user_activity");
    definitions.feature_services.clear();
    definitions.feature_views[0].source.topic = topic.to_owned();
    definitions.feature_views[0].ttl = None;
    definitions
}

/// The examples with `user_profile:photo_count` widened from int32 to int64: a breaking change.
pub fn examples_with_breaking_change() -> Definitions {
    let mut definitions = example_definitions();
    let profile = definitions
        .feature_views
        .iter_mut()
        .find(|view| view.name.as_str() == "user_profile")
        .expect("the examples have user_profile");
    let photo_count = profile
        .features
        .iter_mut()
        .find(|feature| feature.name.as_str() == "photo_count")
        .expect("user_profile has photo_count");
    photo_count.value_type = ValueType::Scalar(ScalarType::Int64);
    definitions
}

/// Runs every contract check as a `#[tokio::test]`; `$fresh_store` is an async fn returning a
/// new, empty store.
#[macro_export]
macro_rules! online_store_contract {
    ($fresh_store:path) => {
        #[tokio::test]
        async fn contract_an_empty_store_has_no_registry() {
            $crate::contract::an_empty_store_has_no_registry(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_a_published_registry_reads_back() {
            $crate::contract::a_published_registry_reads_back(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_a_stale_revision_conflicts_and_changes_nothing() {
            $crate::contract::a_stale_revision_conflicts_and_changes_nothing(&$fresh_store().await)
                .await;
        }
        #[tokio::test]
        async fn contract_of_two_racing_publishes_one_wins() {
            $crate::contract::of_two_racing_publishes_one_wins(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_applying_twice_changes_nothing() {
            $crate::contract::applying_twice_changes_nothing(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_breaking_changes_need_a_new_version() {
            $crate::contract::breaking_changes_need_a_new_version(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_features_read_back_with_their_event_times() {
            $crate::contract::features_read_back_with_their_event_times(&$fresh_store().await)
                .await;
        }
        #[tokio::test]
        async fn contract_each_view_version_and_column_set_reads_its_own() {
            $crate::contract::each_view_version_and_column_set_reads_its_own(&$fresh_store().await)
                .await;
        }
        #[tokio::test]
        async fn contract_the_newest_event_wins_in_any_order() {
            $crate::contract::the_newest_event_wins_in_any_order(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_values_expire_with_the_view_ttl() {
            $crate::contract::values_expire_with_the_view_ttl(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_a_deletion_removes_values_from_the_future_and_holds_as_of_them() {
            $crate::contract::a_deletion_removes_values_from_the_future_and_holds_as_of_them(
                &$fresh_store().await,
            )
            .await;
        }
        #[tokio::test]
        async fn contract_a_deletion_removes_older_values_only() {
            $crate::contract::a_deletion_removes_older_values_only(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_tiles_read_back_and_replace_by_feature_start_and_source() {
            $crate::contract::tiles_read_back_and_replace_by_feature_start_and_source(
                &$fresh_store().await,
            )
            .await;
        }
        #[tokio::test]
        async fn contract_remembered_ties_read_back_and_go_with_their_entity() {
            $crate::contract::remembered_ties_read_back_and_go_with_their_entity(
                &$fresh_store().await,
            )
            .await;
        }

        #[tokio::test]
        async fn contract_event_ids_read_back_until_they_expire_and_go_with_their_entity() {
            $crate::contract::event_ids_read_back_until_they_expire_and_go_with_their_entity(
                &$fresh_store().await,
            )
            .await;
        }
        #[tokio::test]
        async fn contract_tiles_go_once_their_window_has_passed() {
            $crate::contract::tiles_go_once_their_window_has_passed(&$fresh_store().await).await;
        }
        #[tokio::test]
        async fn contract_a_deletion_removes_every_tile_and_a_bad_tile_writes_nothing() {
            $crate::contract::a_deletion_removes_every_tile_and_a_bad_tile_writes_nothing(
                &$fresh_store().await,
            )
            .await;
        }
        #[tokio::test]
        async fn contract_an_entity_reads_whole_as_its_values_and_its_tiles() {
            $crate::contract::an_entity_reads_whole_as_its_values_and_its_tiles(
                &$fresh_store().await,
            )
            .await;
        }
        #[tokio::test]
        async fn contract_a_bad_write_is_refused_and_nothing_is_written() {
            $crate::contract::a_bad_write_is_refused_and_nothing_is_written(&$fresh_store().await)
                .await;
        }
    };
}

pub async fn an_empty_store_has_no_registry(store: &impl OnlineStore) {
    assert_eq!(store.load_registry().await.expect("loads"), None);
}

fn registry_at(revision: u64) -> Registry {
    let definitions = example_definitions();
    Registry {
        revision,
        entities: definitions.entities,
        feature_views: Vec::new(),
        feature_services: Vec::new(),
    }
}

pub async fn a_published_registry_reads_back(store: &impl OnlineStore) {
    let first = registry_at(1);
    store.publish_registry(0, &first).await.expect("publishes");
    assert_eq!(store.load_registry().await.expect("loads"), Some(first));
    let second = registry_at(2);
    store.publish_registry(1, &second).await.expect("publishes");
    assert_eq!(store.load_registry().await.expect("loads"), Some(second));
}

pub async fn a_stale_revision_conflicts_and_changes_nothing(store: &impl OnlineStore) {
    store
        .publish_registry(0, &registry_at(1))
        .await
        .expect("publishes");
    store
        .publish_registry(1, &registry_at(2))
        .await
        .expect("publishes");

    for stale in [0, 1, 7] {
        let error = store
            .publish_registry(stale, &registry_at(3))
            .await
            .expect_err("a stale revision must not win");
        assert_eq!(error.kind, StoreErrorKind::Conflict, "{error}");
    }
    assert_eq!(
        store.load_registry().await.expect("loads"),
        Some(registry_at(2))
    );
}

pub async fn of_two_racing_publishes_one_wins(store: &impl OnlineStore) {
    store
        .publish_registry(0, &registry_at(1))
        .await
        .expect("publishes");
    let mut left = registry_at(2);
    left.entities[0].description = "left".into();
    let mut right = registry_at(2);
    right.entities[0].description = "right".into();
    let (left_result, right_result) = tokio::join!(
        store.publish_registry(1, &left),
        store.publish_registry(1, &right)
    );
    let stored = store
        .load_registry()
        .await
        .expect("loads")
        .expect("a registry");
    match (left_result, right_result) {
        (Ok(()), Err(error)) => {
            assert_eq!(error.kind, StoreErrorKind::Conflict);
            assert_eq!(stored, left);
        }
        (Err(error), Ok(())) => {
            assert_eq!(error.kind, StoreErrorKind::Conflict);
            assert_eq!(stored, right);
        }
        other => panic!("exactly one publish must win, got {other:?}"),
    }
}

pub async fn applying_twice_changes_nothing(store: &impl OnlineStore) {
    let definitions = example_definitions();
    let first = apply(store, &definitions, false)
        .await
        .expect("the first apply");
    assert_eq!(first.registry.revision, 1);
    assert!(!first.plan.is_empty());
    let second = apply(store, &definitions, false)
        .await
        .expect("the second apply");
    assert!(second.plan.is_empty(), "{}", second.plan);
    assert_eq!(
        store.load_registry().await.expect("loads"),
        Some(first.registry)
    );
}

pub async fn breaking_changes_need_a_new_version(store: &impl OnlineStore) {
    let applied = apply(store, &example_definitions(), false)
        .await
        .expect("applies");
    let breaking = examples_with_breaking_change();

    let refused = apply(store, &breaking, false).await.expect_err("refused");
    assert!(matches!(refused, ApplyError::Refused(_)), "{refused}");
    assert_eq!(
        store.load_registry().await.expect("loads"),
        Some(applied.registry),
        "a refused apply changes nothing"
    );

    let versioned = apply(store, &breaking, true)
        .await
        .expect("applies as a new version");
    let stored = store
        .load_registry()
        .await
        .expect("loads")
        .expect("a registry");
    assert_eq!(stored, versioned.registry);
    let profile_versions: Vec<u32> = stored
        .feature_views
        .iter()
        .filter(|v| v.view.name.as_str() == "user_profile")
        .map(|v| v.version)
        .collect();
    assert_eq!(
        profile_versions,
        [1, 2],
        "the old version stays in the registry"
    );
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as i64
}

fn name(text: &str) -> Name {
    text.parse().expect("a valid name")
}

fn user(id: i64) -> EntityKey {
    EntityKey::new(vec![KeyPart::Int64(id)]).expect("one key part")
}

/// Applies the examples and returns the `user` entity with version 1 of `view`.
async fn applied_view(
    store: &(impl OnlineStore + FeatureStore),
    view: &str,
) -> (Entity, VersionedView) {
    let applied = apply(store, &example_definitions(), false)
        .await
        .expect("applies");
    let entity = applied.registry.entities[0].clone();
    let view = applied
        .registry
        .latest_view(&name(view))
        .expect("the view is applied")
        .clone();
    (entity, view)
}

fn write(id: i64, event_time_micros: i64, values: &[(&str, Value)]) -> FeatureWrite {
    FeatureWrite {
        key: user(id),
        event_time_micros,
        values: values.iter().map(|(n, v)| (name(n), v.clone())).collect(),
    }
}

pub async fn features_read_back_with_their_event_times(store: &(impl OnlineStore + FeatureStore)) {
    let (entity, profile) = applied_view(store, "user_profile").await;
    let at = now_micros();
    let embedding = Value::Float32List((0..32).map(|i| i as f32 / 32.0).collect());
    let values = [
        ("country", Value::String("SE".into())),
        (
            "languages",
            Value::StringList(vec!["sv".into(), "en".into()]),
        ),
        ("verified", Value::Bool(true)),
        ("bio_embedding", embedding.clone()),
    ];
    store
        .write_features(&entity, &profile, &[write(42, at, &values)])
        .await
        .expect("writes");
    let names: Vec<Name> = [
        "country",
        "languages",
        "verified",
        "bio_embedding",
        "photo_count",
    ]
    .into_iter()
    .map(name)
    .collect();
    let read = store
        .read_features(&entity, &profile, &names, &user(42))
        .await
        .expect("reads");
    let got: Vec<Option<(Value, i64)>> = read
        .into_iter()
        .map(|stored| stored.map(|s| (s.value, s.event_time_micros)))
        .collect();
    let mut expected: Vec<Option<(Value, i64)>> =
        values.iter().map(|(_, v)| Some((v.clone(), at))).collect();
    expected.push(None);
    assert_eq!(
        got, expected,
        "values come back in request order; unwritten ones are None"
    );

    let absent = store
        .read_features(&entity, &profile, &names, &user(7))
        .await
        .expect("reads");
    assert_eq!(absent, vec![None; names.len()]);
}

/// Reads alternate between two versions of a view and between column sets of one version; each
/// read gets its own version's values, in the order it asked for them.
pub async fn each_view_version_and_column_set_reads_its_own(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, first) = applied_view(store, "user_profile").await;
    let versioned = apply(store, &examples_with_breaking_change(), true)
        .await
        .expect("applies as a new version");
    let second = versioned
        .registry
        .latest_view(&name("user_profile"))
        .expect("the view is applied")
        .clone();
    assert_eq!((first.version, second.version), (1, 2));
    let at = now_micros();
    store
        .write_features(
            &entity,
            &first,
            &[write(42, at, &[("country", Value::String("SE".into()))])],
        )
        .await
        .expect("writes version 1");
    store
        .write_features(
            &entity,
            &second,
            &[write(
                42,
                at,
                &[
                    ("country", Value::String("NO".into())),
                    ("photo_count", Value::Int64(3)),
                ],
            )],
        )
        .await
        .expect("writes version 2");

    let read = |view: &VersionedView, features: &[&str]| {
        let (entity, view) = (entity.clone(), view.clone());
        let names: Vec<Name> = features.iter().copied().map(name).collect();
        async move {
            store
                .read_features(&entity, &view, &names, &user(42))
                .await
                .expect("reads")
                .into_iter()
                .map(|stored| stored.map(|stored| stored.value))
                .collect::<Vec<_>>()
        }
    };
    let country = |text: &str| Some(Value::String(text.into()));
    for _ in 0..2 {
        assert_eq!(read(&first, &["country"]).await, [country("SE")]);
        assert_eq!(
            read(&second, &["country", "photo_count"]).await,
            [country("NO"), Some(Value::Int64(3))]
        );
        assert_eq!(
            read(&second, &["photo_count", "country"]).await,
            [Some(Value::Int64(3)), country("NO")]
        );
        assert_eq!(
            read(&first, &["photo_count", "country"]).await,
            [None, country("SE")],
            "version 1 has no photo count written"
        );
    }
}

pub async fn the_newest_event_wins_in_any_order(store: &(impl OnlineStore + FeatureStore)) {
    let (entity, profile) = applied_view(store, "user_profile").await;
    let now = now_micros();
    let (older, newer) = (now - 2_000_000, now - 1_000_000);
    let country = |c: &str| [("country", Value::String(c.into()))];
    for batch in [
        vec![
            write(1, newer, &country("SE")),
            write(1, older, &country("NO")),
        ],
        vec![write(1, older, &country("NO"))],
        vec![write(1, newer, &country("SE"))],
    ] {
        store
            .write_features(&entity, &profile, &batch)
            .await
            .expect("writes");
    }
    // Another feature of the same entity, from an older event, keeps its own event time.
    store
        .write_features(
            &entity,
            &profile,
            &[write(
                1,
                older - 5_000_000,
                &[("photo_count", Value::Int32(4))],
            )],
        )
        .await
        .expect("writes");
    let read = store
        .read_features(
            &entity,
            &profile,
            &[name("country"), name("photo_count")],
            &user(1),
        )
        .await
        .expect("reads");
    let got: Vec<(Value, i64)> = read
        .into_iter()
        .map(|stored| {
            stored
                .map(|s| (s.value, s.event_time_micros))
                .expect("stored")
        })
        .collect();
    assert_eq!(
        got,
        [
            (Value::String("SE".into()), newer),
            (Value::Int32(4), older - 5_000_000)
        ]
    );
}

pub async fn a_deletion_removes_older_values_only(store: &(impl OnlineStore + FeatureStore)) {
    let (entity, profile) = applied_view(store, "user_profile").await;
    let now = now_micros();
    let (before, deleted_at, after) = (now - 3_000_000, now - 2_000_000, now - 1_000_000);
    let country = |c: &str| [("country", Value::String(c.into()))];
    let read = |id: i64| {
        let (entity, profile) = (&entity, &profile);
        async move {
            store
                .read_features(
                    entity,
                    profile,
                    &[name("country"), name("verified")],
                    &user(id),
                )
                .await
                .expect("reads")
                .into_iter()
                .map(|stored| stored.map(|s| (s.value, s.event_time_micros)))
                .collect::<Vec<_>>()
        }
    };
    store
        .write_features(
            &entity,
            &profile,
            &[
                write(
                    1,
                    before,
                    &[
                        ("country", Value::String("SE".into())),
                        ("verified", Value::Bool(true)),
                    ],
                ),
                write(2, before, &country("NO")),
            ],
        )
        .await
        .expect("writes");
    store
        .delete_entity(&entity, &profile, &user(1), deleted_at)
        .await
        .expect("deletes");
    assert_eq!(
        read(1).await,
        [None, None],
        "every feature of the entity is gone"
    );
    assert_eq!(
        read(2).await,
        [Some((Value::String("NO".into()), before)), None],
        "other entities keep their values"
    );

    // A replayed event from before the deletion stays deleted; a newer one is stored.
    store
        .write_features(&entity, &profile, &[write(1, before, &country("SE"))])
        .await
        .expect("writes");
    assert_eq!(read(1).await, [None, None]);
    store
        .write_features(&entity, &profile, &[write(1, after, &country("FI"))])
        .await
        .expect("writes");
    assert_eq!(
        read(1).await,
        [Some((Value::String("FI".into()), after)), None]
    );

    let wrong_key = EntityKey::new(vec![KeyPart::String("1".into())]).expect("one part");
    let refused = store
        .delete_entity(&entity, &profile, &wrong_key, after)
        .await
        .expect_err("a key of the wrong type is refused");
    assert_eq!(refused.kind, StoreErrorKind::Invalid);
}

/// A value stamped ahead of the deletion (a clock running fast) goes too, and the deletion then
/// holds as of the newest event time it removed, for values and for the tiles written after it.
pub async fn a_deletion_removes_values_from_the_future_and_holds_as_of_them(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, activity) = applied_view(store, "user_activity").await;
    let now = now_micros();
    let minutes = |m: i64| now + m * 60_000_000;
    let country = |c: &str| [("last_country", Value::String(c.into()))];
    store
        .write_features(
            &entity,
            &activity,
            &[write(43, minutes(50), &country("SE"))],
        )
        .await
        .expect("writes");
    let future_tile = Tile {
        newest_event_micros: minutes(55),
        ..tile("actions_total", 0, "match-events/0", 1)
    };
    store
        .write_tiles(
            &entity,
            &activity,
            &user(43),
            &tiles_only(vec![future_tile]),
        )
        .await
        .expect("writes tiles");
    store
        .delete_entity(&entity, &activity, &user(43), now)
        .await
        .expect("deletes");
    let read = || async {
        store
            .read_features(&entity, &activity, &[name("last_country")], &user(43))
            .await
            .expect("reads")
    };
    assert_eq!(read().await, [None], "the future value is gone");
    let stored = store
        .read_tiles(&entity, &activity, &user(43), None)
        .await
        .expect("reads tiles");
    assert!(stored.tiles.is_empty(), "{:?}", stored.tiles);
    assert_eq!(
        stored.deleted_through_micros,
        Some(minutes(55)),
        "the deletion holds as of the newest event it removed"
    );
    for (at, c) in [(now - 60_000_000, "OLD"), (minutes(54), "EARLY")] {
        store
            .write_features(&entity, &activity, &[write(43, at, &country(c))])
            .await
            .expect("writes");
        assert_eq!(
            read().await,
            [None],
            "{c} is not after what the deletion removed"
        );
    }
    store
        .write_features(
            &entity,
            &activity,
            &[write(43, minutes(56), &country("FI"))],
        )
        .await
        .expect("writes");
    assert_eq!(
        read().await,
        [Some(StoredValue {
            value: Value::String("FI".into()),
            event_time_micros: minutes(56)
        })]
    );
}

pub async fn values_expire_with_the_view_ttl(store: &(impl OnlineStore + FeatureStore)) {
    // user_activity keeps values for 7 days after their event time.
    let (entity, activity) = applied_view(store, "user_activity").await;
    let week_micros = 7 * 86_400 * 1_000_000;
    let now = now_micros();
    let country = [("last_country", Value::String("SE".into()))];
    store
        .write_features(
            &entity,
            &activity,
            &[
                write(1, now - week_micros - 60_000_000, &country),
                write(2, now - week_micros + 3_000_000, &country),
            ],
        )
        .await
        .expect("writes");
    let read = |id| {
        let (entity, activity) = (&entity, &activity);
        async move {
            store
                .read_features(entity, activity, &[name("last_country")], &user(id))
                .await
                .expect("reads")
                .remove(0)
        }
    };
    assert_eq!(
        read(1).await,
        None,
        "an event older than the TTL is never stored"
    );
    assert!(read(2).await.is_some(), "an event inside the TTL is stored");
    let deadline = Instant::now() + Duration::from_secs(15);
    while read(2).await.is_some() {
        assert!(Instant::now() < deadline, "the value outlived its TTL");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn a_bad_write_is_refused_and_nothing_is_written(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, profile) = applied_view(store, "user_profile").await;
    let now = now_micros();
    let good = write(5, now, &[("country", Value::String("SE".into()))]);
    let cases = [
        (
            write(6, now, &[("country", Value::Int64(46))]),
            "expected a value of type string, got int64",
        ),
        (
            write(
                6,
                now,
                &[("favourite_colour", Value::String("blue".into()))],
            ),
            "has no feature `favourite_colour`",
        ),
        (
            FeatureWrite {
                key: EntityKey::new(vec![KeyPart::String("5".into())]).unwrap(),
                event_time_micros: now,
                values: Vec::new(),
            },
            "key field `user_id` of entity `user` is int64, got string",
        ),
    ];
    for (bad, message) in cases {
        let error = store
            .write_features(&entity, &profile, &[good.clone(), bad])
            .await
            .expect_err("the batch is refused");
        assert_eq!(error.kind, StoreErrorKind::Invalid, "{error}");
        assert!(error.to_string().contains(message), "{error}");
    }
    let read = store
        .read_features(&entity, &profile, &[name("country")], &user(5))
        .await
        .expect("reads");
    assert_eq!(
        read,
        [None],
        "the good write of a refused batch is not stored either"
    );
}

fn tile(feature: &str, start_micros: i64, source: &str, count: u64) -> Tile {
    Tile {
        feature: name(feature),
        start_micros,
        source: source.to_owned(),
        through_offset: count as i64,
        newest_event_micros: start_micros + 1,
        partial: Partial::Count(count),
    }
}

/// Changes of `tiles` alone.
fn tiles_only(tiles: Vec<Tile>) -> TileChanges {
    TileChanges::of_tiles(tiles)
}

/// Writes `tiles` for each user of `ids`.
async fn write_tiles_of(
    store: &(impl OnlineStore + FeatureStore),
    entity: &Entity,
    view: &VersionedView,
    ids: &[i64],
    tiles: &[Tile],
) {
    for &id in ids {
        store
            .write_tiles(entity, view, &user(id), &tiles_only(tiles.to_vec()))
            .await
            .expect("writes tiles");
    }
}

async fn sorted_tiles(
    store: &(impl OnlineStore + FeatureStore),
    entity: &Entity,
    view: &VersionedView,
    id: i64,
) -> Vec<Tile> {
    let mut tiles = store
        .read_tiles(entity, view, &user(id), None)
        .await
        .expect("reads tiles")
        .tiles;
    tiles.sort_by(|a, b| {
        (&a.feature, a.start_micros, &a.source).cmp(&(&b.feature, b.start_micros, &b.source))
    });
    tiles
}

pub async fn tiles_read_back_and_replace_by_feature_start_and_source(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, activity) = applied_view(store, "user_activity").await;
    // `actions_1h` has 5-minute tiles, each read until an hour after its end: both of these
    // stay well inside their window whatever the time of day.
    let tile_size = 300_000_000;
    let recent = now_micros() / tile_size * tile_size;
    let earlier = recent - 2 * tile_size;
    let distinct = {
        let mut sketch = quiver_core::aggregate::HyperLogLog::default();
        sketch.insert(&Value::Int64(5));
        Partial::Distinct(sketch)
    };
    // In the order `sorted_tiles` gives: feature, start, source.
    let mut written = vec![
        tile("actions_1h", earlier, "match-events/0", 1),
        tile("actions_1h", recent, "match-events/0", 3),
        tile("actions_1h", recent, "match-events/1", 4),
        tile("actions_total", 0, "match-events/0", 8),
        Tile {
            partial: distinct,
            ..tile("distinct_candidates_30d", recent, "match-events/0", 1)
        },
    ];
    store
        .write_tiles(&entity, &activity, &user(7), &tiles_only(written.clone()))
        .await
        .expect("writes tiles");
    assert_eq!(sorted_tiles(store, &entity, &activity, 7).await, written);
    assert!(
        sorted_tiles(store, &entity, &activity, 8).await.is_empty(),
        "another entity has no tiles"
    );
    let mut one_feature = store
        .read_tiles(&entity, &activity, &user(7), Some(&name("actions_1h")))
        .await
        .expect("reads one feature's tiles")
        .tiles;
    one_feature.sort_by_key(|tile| (tile.start_micros, tile.source.clone()));
    assert_eq!(
        one_feature,
        written[..3],
        "only the tiles of the feature asked for"
    );

    let replacement = tile("actions_1h", recent, "match-events/1", 9);
    store
        .write_tiles(
            &entity,
            &activity,
            &user(7),
            &tiles_only(vec![replacement.clone()]),
        )
        .await
        .expect("rewrites a tile");
    written[2] = replacement;
    assert_eq!(
        sorted_tiles(store, &entity, &activity, 7).await,
        written,
        "a tile is replaced whole, the others stay"
    );
}

pub async fn event_ids_read_back_until_they_expire_and_go_with_their_entity(
    store: &(impl OnlineStore + FeatureStore),
) {
    // `user_activity` declares `event_id` and `dedup`.
    let (entity, activity) = applied_view(store, "user_activity").await;
    let now = now_micros();
    let applied = |event_id: &str, offset, expires_micros| AppliedEvent {
        event_id: event_id.to_owned(),
        source: "match-events/2".to_owned(),
        offset,
        expires_micros,
    };
    let kept = [
        applied("3f1c-0001", 11, now + 3_600_000_000),
        applied("3f1c-0002", 12, now + 7 * 86_400_000_000),
    ];
    let changes = TileChanges {
        tiles: vec![tile("actions_total", 0, "match-events/2", 12)],
        applied: vec![
            kept[0].clone(),
            applied("3f1c-0000", 10, now - 1_000_000),
            kept[1].clone(),
        ],
        ties: None,
    };
    store
        .write_tiles(&entity, &activity, &user(5), &changes)
        .await
        .expect("writes tiles and event ids");
    let (entity, activity) = (&entity, &activity);
    let read = |id| async move {
        let mut stored = store
            .read_tiles(entity, activity, &user(id), None)
            .await
            .expect("reads tiles");
        stored.applied.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        stored
    };
    let stored = read(5).await;
    assert_eq!(stored.applied, kept, "an expired id is not kept");
    assert_eq!(stored.tiles, changes.tiles);
    assert!(read(6).await.applied.is_empty(), "another entity has none");
    let served = store
        .read_entity(entity, activity, &user(5))
        .await
        .expect("reads the entity");
    assert!(
        served.tiles.applied.is_empty(),
        "serving reads do not carry the event ids"
    );

    store
        .delete_entity(entity, activity, &user(5), now)
        .await
        .expect("deletes");
    assert!(
        read(5).await.applied.is_empty(),
        "the ids go with the entity"
    );

    let (_, profile) = applied_view(store, "user_profile").await;
    let refused = store
        .write_tiles(
            entity,
            &profile,
            &user(5),
            &TileChanges {
                tiles: Vec::new(),
                applied: kept.to_vec(),
                ties: None,
            },
        )
        .await
        .expect_err("user_profile declares no event id");
    assert_eq!(refused.kind, StoreErrorKind::Invalid);
    assert!(
        refused.message.contains("declares no event id"),
        "{refused}"
    );
}

/// An entity's remembered ties read back with its tiles, are replaced whole, are left alone by
/// changes that carry none, stay out of serving reads, and go with their entity.
pub async fn remembered_ties_read_back_and_go_with_their_entity(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, activity) = applied_view(store, "user_profile").await;
    let (entity, activity) = (&entity, &activity);
    let tied = |id: &str, slot| TiedEvent {
        event_time_micros: now_micros() / 1_000 * 1_000,
        tiebreak: Tiebreak::EventId(id.to_owned()),
        slot,
        features: [0, 2].into(),
    };
    let write = |ties: Option<Vec<TiedEvent>>| async move {
        let changes = TileChanges {
            tiles: Vec::new(),
            applied: Vec::new(),
            ties,
        };
        store
            .write_tiles(entity, activity, &user(4), &changes)
            .await
            .expect("writes the ties");
    };
    let read = || async move {
        store
            .read_tiles(entity, activity, &user(4), None)
            .await
            .expect("reads the ties")
            .ties
    };
    let first = vec![tied("e-2", 0), tied("e-1", 1)];
    write(Some(first.clone())).await;
    assert_eq!(read().await, first);
    write(None).await;
    assert_eq!(read().await, first, "changes without ties keep them");
    let second = vec![tied("e-3", 0)];
    write(Some(second.clone())).await;
    assert_eq!(read().await, second, "ties are replaced whole");
    let served = store
        .read_entity(entity, activity, &user(4))
        .await
        .expect("reads the entity");
    assert!(served.tiles.ties.is_empty(), "serving reads leave them out");
    store
        .delete_entity(entity, activity, &user(4), now_micros())
        .await
        .expect("deletes");
    assert!(read().await.is_empty(), "the ties go with the entity");
}

pub async fn tiles_go_once_their_window_has_passed(store: &(impl OnlineStore + FeatureStore)) {
    let (entity, activity) = applied_view(store, "user_activity").await;
    // `actions_1h` has 5-minute tiles: a tile is read until an hour after its end.
    let read_for = (3_600 + 300) * 1_000_000;
    let now = now_micros();
    let passed = tile(
        "actions_1h",
        now - read_for - 1_000_000,
        "match-events/0",
        1,
    );
    let passing = tile(
        "actions_1h",
        now - read_for + 2_000_000,
        "match-events/0",
        2,
    );
    let lifetime = tile("actions_total", 0, "match-events/0", 3);
    store
        .write_tiles(
            &entity,
            &activity,
            &user(9),
            &tiles_only(vec![passed, passing.clone(), lifetime.clone()]),
        )
        .await
        .expect("writes tiles");
    assert_eq!(
        sorted_tiles(store, &entity, &activity, 9).await,
        vec![passing, lifetime.clone()],
        "a tile already past its window is not kept"
    );
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        sorted_tiles(store, &entity, &activity, 9).await,
        vec![lifetime],
        "a tile goes once its window has passed it; a lifetime tile stays"
    );
}

/// What [`FeatureStore::read_entity`] gives, in one read, is what reading the values and the
/// tiles apart gives: for an entity with both, one with values only, one never written, and one
/// deleted (whose deletion mark comes back with it).
pub async fn an_entity_reads_whole_as_its_values_and_its_tiles(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, activity) = applied_view(store, "user_activity").await;
    let stored = quiver_core::read::stored_features(&activity);
    assert!(!stored.is_empty(), "the activity view has stored features");
    let now = now_micros();
    let country = [("last_country", Value::String("SE".into()))];
    store
        .write_features(
            &entity,
            &activity,
            &[
                write(1, now, &country),
                write(2, now, &country),
                write(4, now, &country),
            ],
        )
        .await
        .expect("writes");
    let tiles = [
        tile("actions_1h", now, "match-events/0", 1),
        tile("actions_total", 0, "match-events/0", 2),
        tile("actions_total", 0, "match-events/1", 5),
    ];
    write_tiles_of(store, &entity, &activity, &[1, 4], &tiles).await;
    store
        .delete_entity(&entity, &activity, &user(4), now)
        .await
        .expect("deletes");
    for id in [1, 2, 3, 4] {
        let mut whole = store
            .read_entity(&entity, &activity, &user(id))
            .await
            .expect("reads the entity");
        whole.tiles.tiles.sort_by(|a, b| {
            (&a.feature, a.start_micros, &a.source).cmp(&(&b.feature, b.start_micros, &b.source))
        });
        let values = store
            .read_features(&entity, &activity, &stored, &user(id))
            .await
            .expect("reads features");
        let apart = store
            .read_tiles(&entity, &activity, &user(id), None)
            .await
            .expect("reads tiles");
        assert_eq!(whole.values, values, "values of user {id}");
        assert_eq!(
            whole.tiles.tiles,
            sorted_tiles(store, &entity, &activity, id).await
        );
        assert_eq!(
            whole.tiles.deleted_through_micros, apart.deleted_through_micros,
            "deletion mark of user {id}"
        );
    }
    let first = store
        .read_entity(&entity, &activity, &user(1))
        .await
        .expect("reads the entity");
    assert_eq!(first.tiles.tiles.len(), 3, "user 1 has every tile written");
    assert!(first.values.iter().any(Option::is_some), "and its country");
    let never = store
        .read_entity(&entity, &activity, &user(3))
        .await
        .expect("reads the entity");
    assert_eq!(
        never.values,
        vec![None; stored.len()],
        "one slot per stored feature"
    );
    assert_eq!(never.tiles, Default::default(), "no tiles and no mark");
    let deleted = store
        .read_entity(&entity, &activity, &user(4))
        .await
        .expect("reads the entity");
    assert!(deleted.values.iter().all(Option::is_none) && deleted.tiles.tiles.is_empty());
    assert_eq!(
        deleted.tiles.deleted_through_micros,
        Some(now + 1),
        "as of the newest event it removed: the 1h tile's, a microsecond after now"
    );
}

pub async fn a_deletion_removes_every_tile_and_a_bad_tile_writes_nothing(
    store: &(impl OnlineStore + FeatureStore),
) {
    let (entity, activity) = applied_view(store, "user_activity").await;
    let now = now_micros();
    let tiles = [
        tile("actions_1h", now, "match-events/0", 1),
        tile("actions_total", 0, "match-events/0", 2),
    ];
    write_tiles_of(store, &entity, &activity, &[1, 2], &tiles).await;
    store
        .delete_entity(&entity, &activity, &user(1), now)
        .await
        .expect("deletes");
    assert!(sorted_tiles(store, &entity, &activity, 1).await.is_empty());
    assert_eq!(
        sorted_tiles(store, &entity, &activity, 2).await.len(),
        2,
        "other entities keep their tiles"
    );

    let refused = store
        .write_tiles(
            &entity,
            &activity,
            &user(3),
            &tiles_only(vec![
                tile("actions_total", 0, "match-events/0", 1),
                tile("last_country", 0, "match-events/0", 1),
            ]),
        )
        .await
        .expect_err("last_country is not an aggregate");
    assert_eq!(refused.kind, StoreErrorKind::Invalid);
    assert!(
        refused
            .message
            .contains("no aggregate feature `last_country`"),
        "{refused}"
    );
    assert!(
        sorted_tiles(store, &entity, &activity, 3).await.is_empty(),
        "nothing of a refused write is stored"
    );
}
