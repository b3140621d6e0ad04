//! Avro object container files as a source, into the embedded store: good records are written,
//! unusable ones are counted by reason with the first described, and a file no view reads or a
//! corrupt one is an error naming it.

use apache_avro::types::Value as Avro;
use apache_avro::{Schema, Writer};
use quiver_core::apply::apply;
use quiver_core::definition::Registry;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::store::FeatureStore;
use quiver_core::value::Value;
use quiver_embedded::EmbeddedStore;
use quiver_ingest::IngestError;
use quiver_ingest::file::{FileOptions, FileSummary, ingest_file};
use quiver_testkit::events::{match_event, match_event_schema, with_field};

const OPTIONS: FileOptions = FileOptions {
    topic: None,
    rebase_event_times: false,
    batch_size: 2,
    offline_log: None,
};

async fn applied_store() -> (tempfile::TempDir, EmbeddedStore, Registry) {
    let folder = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&folder.path().join("quiver.redb")).unwrap();
    let registry = quiver_testkit::contract::apply_examples(&store).await;
    (folder, store, registry)
}

fn write_file(
    folder: &tempfile::TempDir,
    name: &str,
    schema: &Schema,
    records: Vec<Avro>,
) -> std::path::PathBuf {
    let mut writer = Writer::new(schema, Vec::new());
    for record in records {
        writer.append(record).unwrap();
    }
    let path = folder.path().join(name);
    std::fs::write(&path, writer.into_inner().unwrap()).unwrap();
    path
}

async fn ingest(
    path: &std::path::Path,
    registry: &Registry,
    store: &EmbeddedStore,
) -> Result<FileSummary, IngestError> {
    ingest_file(path, &OPTIONS, registry, store, &|_| {}).await
}

#[tokio::test]
async fn good_records_are_written_and_bad_ones_counted_by_reason() {
    let (folder, store, registry) = applied_store().await;
    let schema = match_event_schema();
    // Events 0..5 are users 0..4 (user n % 5), a second apart; two more are from the year 3000.
    let mut records: Vec<Avro> = (0..5).map(|n| match_event(&schema, n)).collect();
    for n in [5, 6] {
        records.push(with_field(
            match_event(&schema, n),
            "ts",
            Avro::TimestampMillis(32_503_680_000_000),
        ));
    }
    let path = write_file(&folder, "events.avro", &schema, records);
    let read_progress = std::sync::atomic::AtomicU64::new(0);
    // Rebased, so that the sample events (from 2026-09) are inside the view's 7-day TTL.
    let options = FileOptions {
        rebase_event_times: true,
        ..OPTIONS
    };
    let summary = ingest_file(&path, &options, &registry, &store, &|read| {
        read_progress.store(read, std::sync::atomic::Ordering::Relaxed)
    })
    .await
    .expect("ingests");
    assert_eq!(summary.records, 7);
    assert_eq!(summary.rows_written, 5);
    assert_eq!(
        summary.rejected.into_iter().collect::<Vec<_>>(),
        [("absurd_event_time", 2)]
    );
    assert_eq!(
        summary.first_rejections[0].0, 5,
        "the record number is given"
    );
    assert_eq!(
        read_progress.into_inner(),
        std::fs::metadata(&path).unwrap().len(),
        "progress reaches the file's size"
    );
    let activity = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let stored = store
        .read_features(
            &registry.entities[0],
            activity,
            &["last_country".parse().unwrap()],
            &EntityKey::new(vec![KeyPart::Int64(3)]).unwrap(),
        )
        .await
        .expect("reads");
    let stored = stored[0].as_ref().expect("stored");
    assert_eq!(stored.value, Value::String("SE".into()));
    let newest_to_user_3 = 1_000_000; // event 4 is the newest, a second after event 3
    let age = now_micros() - stored.event_time_micros;
    assert!(
        (newest_to_user_3..newest_to_user_3 + 60_000_000).contains(&age),
        "rebased: the newest event happened now, event 3 a second before it ({age} µs ago)"
    );
}

/// What `feature` of `user_activity` serves for `user` now, from the stored tiles.
async fn served(store: &EmbeddedStore, registry: &Registry, user: i64, feature: &str) -> Value {
    let view = registry
        .latest_view(&"user_activity".parse().unwrap())
        .unwrap();
    let key = EntityKey::new(vec![KeyPart::Int64(user)]).unwrap();
    let tiles = store
        .read_tiles(&registry.entities[0], view, &key, None)
        .await
        .expect("reads tiles")
        .tiles;
    let (feature, aggregate) =
        quiver_core::aggregate::aggregate_feature(&view.view, &feature.parse().unwrap())
            .expect("an aggregate");
    quiver_core::aggregate::evaluate(feature, aggregate, &tiles, now_micros())
        .expect("a value")
        .0
}

#[tokio::test]
async fn a_resent_event_counts_once_in_whichever_file_and_at_whichever_position_it_comes() {
    let (folder, store, registry) = applied_store().await;
    let schema = match_event_schema();
    let now_millis = now_micros() / 1_000;
    // Ten events of users 0..4 (user n % 5) over the last ten seconds, each with its own id.
    let event = |n: i64| {
        with_field(
            match_event(&schema, n),
            "ts",
            Avro::TimestampMillis(now_millis - n * 1_000),
        )
    };
    let mut first: Vec<Avro> = (0..10).map(event).collect();
    // Resent at once, and again three records later: batches of two put them in other batches.
    first.extend([event(2), event(7), event(4), event(2)]);
    let first = write_file(&folder, "first.avro", &schema, first);
    let again = write_file(
        &folder,
        "again.avro",
        &schema,
        (0..10).rev().map(event).collect(),
    );
    // User u has events u and u + 5, on candidates 1000 + n; event u is the newer.
    let expected = |user: i64| {
        (
            Value::Int64(2),
            Value::Int64List(vec![1_000 + user, 1_005 + user]),
        )
    };
    for (path, what) in [
        (&first, "with its own resends"),
        (&first, "the same file again, a replay"),
        (&again, "another file of the same events"),
    ] {
        ingest(path, &registry, &store).await.expect("ingests");
        for user in 0..5 {
            let (count, recent) = expected(user);
            assert_eq!(
                served(&store, &registry, user, "actions_total").await,
                count,
                "user {user}, {what}"
            );
            assert_eq!(
                served(&store, &registry, user, "recent_candidates").await,
                recent,
                "user {user}, {what}: no candidate twice"
            );
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test]
async fn a_file_no_view_reads_and_a_corrupt_file_are_errors_naming_them() {
    let (folder, store, registry) = applied_store().await;
    let other = Schema::parse_str(
        r#"{"type": "record", "name": "Click", "namespace": "dev.example", "fields": [{"name": "id", "type": "long"}]}"#,
    )
    .unwrap();
    let clicks = write_file(
        &folder,
        "clicks.avro",
        &other,
        vec![Avro::Record(vec![("id".into(), Avro::Long(1))])],
    );
    let error = ingest(&clicks, &registry, &store)
        .await
        .expect_err("no view reads it");
    let message = error.to_string();
    assert!(message.contains("clicks.avro"), "{message}");
    assert!(
        message.contains("no applied feature view reads events of schema `dev.example.Click`"),
        "{message}"
    );
    assert!(
        message.contains("user_activity (topic match-events)"),
        "{message}"
    );

    let schema = match_event_schema();
    let events = write_file(
        &folder,
        "events.avro",
        &schema,
        vec![match_event(&schema, 0)],
    );
    let unknown_topic = FileOptions {
        topic: Some("nope".into()),
        ..OPTIONS
    };
    let error = ingest_file(&events, &unknown_topic, &registry, &store, &|_| {})
        .await
        .expect_err("no view reads that topic");
    assert!(
        error
            .to_string()
            .contains("no applied feature view reads topic `nope`"),
        "{error}"
    );

    let good = write_file(
        &folder,
        "events.avro",
        &schema,
        (0..50).map(|n| match_event(&schema, n)).collect(),
    );
    let mut bytes = std::fs::read(&good).unwrap();
    let cut = bytes.len() - 40;
    bytes.truncate(cut);
    let corrupt = folder.path().join("cut.avro");
    std::fs::write(&corrupt, bytes).unwrap();
    let error = ingest(&corrupt, &registry, &store)
        .await
        .expect_err("corrupt");
    let message = error.to_string();
    assert!(message.contains("cut.avro"), "{message}");
    assert!(message.contains("cannot be decoded"), "{message}");
}

#[tokio::test]
async fn a_generated_stream_gives_exact_aggregates_sent_once_and_sent_again() {
    use quiver_testkit::stream::{StreamShape, compare_with_truth, generate, to_avro};
    let folder = tempfile::tempdir().unwrap();
    quiver_testkit::stream::write_definitions(folder.path(), "stream");
    let definitions =
        quiver_definitions::load_dir(folder.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let store = EmbeddedStore::open(&folder.path().join("quiver.redb")).unwrap();
    let registry = apply(&store, &definitions, false)
        .await
        .expect("applies")
        .registry;
    let request_micros = now_micros() + 30 * 60 * 1_000_000;
    let shape = StreamShape {
        events: 10_000,
        users: 100,
        spread_millis: 2 * 3_600_000,
        resent_percent: 5,
        tied_users: 50,
    };
    let stream = generate(shape, request_micros / 1_000);
    let schema = match_event_schema();
    let records = || {
        stream
            .produced
            .iter()
            .map(|e| to_avro(&schema, e))
            .collect()
    };
    let first = write_file(&folder, "first.avro", &schema, records());
    let again = write_file(&folder, "again.avro", &schema, records());
    let options = FileOptions {
        batch_size: 500,
        ..OPTIONS
    };
    for (path, what) in [
        (&first, "sent once"),
        (&again, "sent again in another file"),
    ] {
        ingest_file(path, &options, &registry, &store, &|_| {})
            .await
            .expect("ingests");
        let comparison =
            compare_with_truth(&store, &registry, &stream.distinct, request_micros).await;
        assert_eq!(comparison.compared, 100 * 18, "every user, every feature");
        comparison.assert_exact(what);
    }
}
