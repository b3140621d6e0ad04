//! The log on a local folder: files per source and date named by their batch, replays that
//! rewrite instead of adding, and events read back once each.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_core::name::Name;
use quiver_offline::{LogColumns, LoggedEvent, OfflineLog};

const SCHEMA: &str = r#"{"type": "record", "name": "E", "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}
]}"#;
const DAY_MICROS: i64 = 86_400_000_000;
const START: i64 = 1_790_000_000_000_000;

fn event(source: &str, offset: i64, event_time_micros: i64) -> LoggedEvent {
    LoggedEvent {
        event: Avro::Record(vec![
            ("user_id".into(), Avro::Long(offset % 3)),
            (
                "ts".into(),
                Avro::TimestampMillis(event_time_micros / 1_000),
            ),
        ]),
        event_time_micros,
        ingest_time_micros: event_time_micros + 1,
        source: source.to_owned(),
        offset,
    }
}

fn columns() -> LogColumns {
    LogColumns::of_schema(&Schema::parse_str(SCHEMA).expect("a schema")).expect("columns")
}

fn view() -> Name {
    "activity".parse().expect("a name")
}

fn offsets(events: &[LoggedEvent]) -> Vec<(String, i64)> {
    let mut offsets: Vec<(String, i64)> = events
        .iter()
        .map(|event| (event.source.clone(), event.offset))
        .collect();
    offsets.sort();
    offsets
}

#[tokio::test]
async fn a_replay_cut_differently_rewrites_the_files_it_repeats() {
    let folder = tempfile::tempdir().expect("a folder");
    let location = folder.path().to_str().expect("a UTF-8 path");
    let events: Vec<LoggedEvent> = (0..10)
        .map(|offset| event("events/0", offset, START))
        .collect();

    let first = OfflineLog::open(location).expect("a log");
    first
        .append(&view(), 1, &columns(), &[], &events)
        .await
        .expect("logged");

    // A restart after a crash before the commit: the same events again, in two batches.
    let again = OfflineLog::open(location).expect("a log");
    again
        .append(&view(), 1, &columns(), &[], &events[..4])
        .await
        .expect("logged");
    again
        .append(&view(), 1, &columns(), &[], &events[4..])
        .await
        .expect("logged");

    let files = again.files(&view(), 1).await.expect("listed");
    let ranges: Vec<(i64, i64)> = files
        .iter()
        .map(|file| (file.range.first_offset, file.range.last_offset))
        .collect();
    assert_eq!(ranges, [(0, 3), (4, 9)]);
    let read = again.events(&view(), 1).await.expect("read");
    assert_eq!(offsets(&read), offsets(&events));
    assert_eq!(read[0].event, events[0].event);
}

#[tokio::test]
async fn events_are_split_by_source_and_date() {
    let folder = tempfile::tempdir().expect("a folder");
    let log = OfflineLog::open(folder.path().to_str().expect("a UTF-8 path")).expect("a log");
    let events = vec![
        event("events/0", 0, START),
        event("events/1", 0, START),
        event("events/0", 1, START + DAY_MICROS),
    ];
    let written = log
        .append(&view(), 2, &columns(), &[], &events)
        .await
        .expect("logged");
    assert_eq!(written, 3);
    let paths: Vec<String> = log
        .files(&view(), 2)
        .await
        .expect("listed")
        .into_iter()
        .map(|file| file.path)
        .collect();
    assert_eq!(
        paths,
        [
            "view=activity/version=2/date=2026-09-21/events@2F0+00000000000000000000-00000000000000000001.parquet",
            "view=activity/version=2/date=2026-09-21/events@2F1+00000000000000000000-00000000000000000000.parquet",
            "view=activity/version=2/date=2026-09-22/events@2F0+00000000000000000000-00000000000000000001.parquet",
        ]
    );
    // The two files of one batch share its range, and each keeps its events.
    let read = log.events(&view(), 2).await.expect("read");
    assert_eq!(offsets(&read), offsets(&events));
    assert!(
        log.events(&"other".parse().expect("a name"), 1)
            .await
            .expect("read")
            .is_empty()
    );
}

#[test]
fn a_remote_location_is_refused_by_name() {
    let error = OfflineLog::open("s3://bucket/log").expect_err("no S3 in this build");
    assert!(error.to_string().contains("s3://bucket/log"), "{error}");
}

#[tokio::test]
async fn files_that_overlap_give_each_event_once() {
    let folder = tempfile::tempdir().expect("a folder");
    let location = folder.path().to_str().expect("a UTF-8 path");
    let events: Vec<LoggedEvent> = (0..15)
        .map(|offset| event("events/0", offset, START))
        .collect();
    // Two owners of a partition during a rebalance: the second starts inside the first's file.
    let first = OfflineLog::open(location).expect("a log");
    first
        .append(&view(), 1, &columns(), &[], &events[..10])
        .await
        .expect("logged");
    let second = OfflineLog::open(location).expect("a log");
    second
        .append(&view(), 1, &columns(), &[], &events[5..])
        .await
        .expect("logged");

    assert_eq!(second.files(&view(), 1).await.expect("listed").len(), 2);
    let read = second.events(&view(), 1).await.expect("read");
    assert_eq!(offsets(&read), offsets(&events));
}
