//! `quiver backfill`: a 7-day count added to a running view, then backfilled from the offline
//! log, serves what a view that had it from the start serves; also after the stream goes on,
//! with copies of events on both sides of the cut-over, and after a second backfill.

use std::path::{Path, PathBuf};
use std::process::Command;

use apache_avro::Writer;
use apache_avro::types::Value as Avro;
use quiver_core::aggregate::{aggregate_feature, evaluate};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::{FeatureStore, OnlineStore};
use quiver_embedded::EmbeddedStore;
use quiver_testkit::events::{SplitMix64, match_event, match_event_schema, with_field};

const USERS: i64 = 50;
const NEW_FEATURE: &str = "      - {name: passes_7d, type: int64, aggregate: {fn: count, where: {action: PASS}, window: 7d}}\n";

fn quiver(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .output()
        .expect("the quiver binary runs");
    assert!(
        output.status.success(),
        "quiver {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example definitions in `folder`, with the new 7-day count or without it.
fn definitions(folder: &Path, with_new_feature: bool) -> String {
    std::fs::create_dir_all(folder).expect("a folder");
    let schemas = repository().join("schemas").to_string_lossy().into_owned();
    for file in ["entities.yaml", "user_features.yaml"] {
        let text = std::fs::read_to_string(repository().join("examples/features").join(file))
            .expect("the examples")
            .replace("../../schemas", &schemas);
        let text = match with_new_feature {
            true => text.replace(
                "      - {name: actions_total, type: int64, aggregate: {fn: count}}\n",
                &format!("      - {{name: actions_total, type: int64, aggregate: {{fn: count}}}}\n{NEW_FEATURE}"),
            ),
            false => text,
        };
        std::fs::write(folder.join(file), text).expect("written");
    }
    folder.to_string_lossy().into_owned()
}

/// Match events `numbers` of `USERS` users over the three days before now, plus copies of
/// `resent` (same event ids, later in the file).
fn events_file(path: &Path, numbers: std::ops::Range<i64>, resent: &[i64]) -> String {
    let schema = match_event_schema();
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let event = |n: i64| {
        let mut random = SplitMix64(n as u64);
        let event = with_field(
            match_event(&schema, n),
            "user_id",
            Avro::Long(1 + random.below(USERS as u64) as i64),
        );
        let ago = random.below(3 * 86_400_000) as i64;
        with_field(
            event,
            "ts",
            Avro::TimestampMillis(now_millis - 60_000 - ago),
        )
    };
    let mut writer = Writer::new(&schema, Vec::new());
    for n in numbers.chain(resent.iter().copied()) {
        writer.append(event(n)).expect("appended");
    }
    std::fs::write(path, writer.into_inner().expect("encoded")).expect("written");
    path.to_string_lossy().into_owned()
}

/// Every user's `passes_7d` and `actions_total` now, from the embedded store in `data`.
async fn counts(data: &Path) -> Vec<(i64, Option<i64>, Option<i64>)> {
    let store = EmbeddedStore::open(&data.join("quiver.redb")).expect("the store opens");
    let registry = store.load_registry().await.expect("read").expect("applied");
    let view = registry
        .latest_view(&"user_activity".parse().expect("a name"))
        .expect("the view");
    let entity = registry.entity(&view.view.entity).expect("its entity");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64;
    let mut counts = Vec::new();
    for user in 1..=USERS {
        let key = EntityKey::new(vec![KeyPart::Int64(user)]).expect("a key");
        let tiles = store
            .read_tiles(entity, view, &key, None)
            .await
            .expect("read");
        let count = |name: &str| {
            let (feature, aggregate) =
                aggregate_feature(&view.view, &name.parse().expect("a name")).expect("declared");
            match evaluate(feature, aggregate, &tiles.tiles, now) {
                Some((quiver_core::value::Value::Int64(count), _)) => Some(count),
                _ => None,
            }
        };
        counts.push((user, count("passes_7d"), count("actions_total")));
    }
    counts
}

#[tokio::test]
async fn a_backfilled_count_serves_what_it_would_have_from_the_start() {
    let folder = tempfile::tempdir().expect("a folder");
    let root = folder.path();
    let (old, new) = (
        definitions(&root.join("old"), false),
        definitions(&root.join("new"), true),
    );
    let first = events_file(&root.join("a.avro"), 0..2_000, &[]);
    // Copies of events of the first file, after the cut-over.
    let second = events_file(
        &root.join("b.avro"),
        2_000..4_000,
        &[3, 5, 11, 17, 23, 1_999],
    );
    let third = events_file(&root.join("c.avro"), 4_000..5_000, &[2_001, 7]);
    let (live, reference) = (root.join("live"), root.join("reference"));
    let log = root.join("log").to_string_lossy().into_owned();
    let ingest = |data: &Path, file: &str| {
        let data = data.to_str().expect("UTF-8");
        quiver(&[
            "ingest",
            "--from-file",
            file,
            "--data-dir",
            data,
            "--offline-log",
            &log,
        ]);
    };
    let apply = |data: &Path, definitions: &str| {
        quiver(&[
            "apply",
            "--dir",
            definitions,
            "--data-dir",
            data.to_str().expect("UTF-8"),
        ]);
    };
    let reference_log = root.join("reference-log").to_string_lossy().into_owned();
    let ingest_reference = |file: &str| {
        let data = reference.to_str().expect("UTF-8");
        quiver(&[
            "ingest",
            "--from-file",
            file,
            "--data-dir",
            data,
            "--offline-log",
            &reference_log,
        ]);
    };

    // The reference has the count from the start.
    apply(&reference, &new);
    ingest_reference(&first);
    ingest_reference(&second);
    // The running system gets it between the two files, then backfills it.
    apply(&live, &old);
    ingest(&live, &first);
    apply(&live, &new);
    ingest(&live, &second);
    let before = counts(&live).await;
    let backfill = || {
        quiver(&[
            "backfill",
            "--view",
            "user_activity",
            "--feature",
            "passes_7d",
            "--data-dir",
            live.to_str().expect("UTF-8"),
            "--offline-log",
            &log,
        ])
    };
    let summary = backfill();
    assert!(summary.contains("tiles written"), "{summary}");
    let expected = counts(&reference).await;
    assert_ne!(
        before, expected,
        "before the backfill the new count misses the first file"
    );
    assert_eq!(counts(&live).await, expected, "after the backfill");
    assert!(
        expected
            .iter()
            .filter(|(_, passes, _)| *passes > Some(0))
            .count()
            > USERS as usize / 2,
        "most users passed someone: {expected:?}"
    );

    backfill();
    assert_eq!(counts(&live).await, expected, "after a second backfill");

    ingest(&live, &third);
    ingest_reference(&third);
    assert_eq!(
        counts(&live).await,
        counts(&reference).await,
        "after the stream went on past the cut-over"
    );
}
