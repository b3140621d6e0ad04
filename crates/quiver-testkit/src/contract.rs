//! The contract every online store adapter must keep, written once and run against each one.
//!
//! An adapter's test file calls [`online_store_contract!`](crate::online_store_contract) with an
//! async function that returns a fresh, empty store; every check then runs as its own test.

use quiver_core::apply::{ApplyError, apply};
use quiver_core::definition::{Definitions, Registry};
use quiver_core::store::{OnlineStore, StoreErrorKind};
use quiver_core::value::{ScalarType, ValueType};

/// The example definitions shipped in `examples/features`.
pub fn example_definitions() -> Definitions {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/features");
    quiver_definitions::load_dir(&dir).unwrap_or_else(|errors| panic!("{errors}"))
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
