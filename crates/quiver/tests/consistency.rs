//! `quiver consistency` on the quickstart's sample: every feature matches on an idle system,
//! and one corrupted online tile is found and named.

use std::path::Path;
use std::process::{Command, Output};

use quiver_core::aggregate::{Partial, TileChanges};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, OnlineStore};
use quiver_embedded::EmbeddedStore;

fn quiver(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .output()
        .expect("the quiver binary runs")
}

fn repository(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn succeeded(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every feature of both example views.
const FEATURES: [&str; 19] = [
    "user_activity:last_country",
    "user_activity:last_platform",
    "user_activity:last_action",
    "user_activity:last_liked_candidate",
    "user_activity:actions_1h",
    "user_activity:chat_seconds_24h",
    "user_activity:best_rank_7d",
    "user_activity:recent_candidates",
    "user_activity:distinct_candidates_30d",
    "user_activity:actions_total",
    "user_activity:likes_1h",
    "user_activity:long_chats_7d",
    "user_activity:ranked_actions_24h",
    "user_profile:country",
    "user_profile:birth_year",
    "user_profile:languages",
    "user_profile:photo_count",
    "user_profile:verified",
    "user_profile:bio_embedding",
];

#[tokio::test]
async fn every_feature_matches_until_a_tile_is_corrupted() {
    let folder = tempfile::tempdir().expect("a folder");
    let data = folder.path().join("data");
    let log = folder.path().join("log");
    let (data, log) = (data.to_str().expect("UTF-8"), log.to_str().expect("UTF-8"));
    succeeded(quiver(&[
        "apply",
        "--dir",
        &repository("examples/features"),
        "--data-dir",
        data,
    ]));
    succeeded(quiver(&[
        "ingest",
        "--from-file",
        &repository("examples/events/match_events.avro"),
        "--from-file",
        &repository("examples/events/user_profiles.avro"),
        "--rebase-event-times",
        "--data-dir",
        data,
        "--offline-log",
        log,
    ]));
    let mut check = vec![
        "consistency",
        "--sample",
        "1000",
        "--data-dir",
        data,
        "--offline-log",
        log,
    ];
    for feature in FEATURES {
        check.extend(["--feature", feature]);
    }
    let report = succeeded(quiver(&check));
    assert_eq!(
        report.matches("100.00%").count(),
        FEATURES.len(),
        "every feature matches: {report}"
    );
    assert!(
        report.contains("user_activity:actions_total  500  500"),
        "{report}"
    );

    // Five more actions in user 42's lifetime count, behind the ingester's back.
    let store = EmbeddedStore::open(&Path::new(data).join("quiver.redb")).expect("opens");
    let registry = store.load_registry().await.expect("read").expect("applied");
    let view = registry
        .latest_view(&"user_activity".parse().expect("a name"))
        .expect("the view");
    let entity = registry.entity(&view.view.entity).expect("its entity");
    let key = EntityKey::new(vec![KeyPart::Int64(42)]).expect("a key");
    let total = "actions_total".parse().expect("a name");
    let mut tiles = store
        .read_tiles(entity, view, &key, Some(&total))
        .await
        .expect("read")
        .tiles;
    let Partial::Count(count) = &mut tiles[0].partial else {
        panic!("a count tile: {:?}", tiles[0]);
    };
    *count += 5;
    store
        .write_tiles(entity, view, &key, &TileChanges::of_tiles(tiles))
        .await
        .expect("written");
    drop(store);

    let output = quiver(&check);
    assert_eq!(output.status.code(), Some(3), "a mismatch exits with 3");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("user_activity:actions_total  500  499  99.80%"),
        "{report}"
    );
    assert!(report.contains("mismatch at user 42"), "{report}");
    assert_eq!(
        report.matches("100.00%").count(),
        FEATURES.len() - 1,
        "{report}"
    );
}
