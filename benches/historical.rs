//! Point-in-time retrieval from the offline log: `quiver_offline::retrieve` for the examples'
//! `user_activity` view (4 stored features, 9 aggregates), at `rows` (user, instant) rows
//! against logs of `events` and of ten times as many events, each in a local folder; rows/s,
//! log events/s and the process's peak memory for each.
//!
//! Run: `cargo bench -p quiver-benches --bench historical` (`QUIVER_BENCH_EVENTS`, 100000 by
//! default, and `QUIVER_BENCH_ROWS`, 10000). Nothing to start: the log is a temporary folder.
//! Each size runs in a process of its own (the bench runs itself), so the peak memory is that
//! size's.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

use std::process::Command;
use std::time::Instant;

use apache_avro::types::Value as Avro;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use quiver_core::definition::Registry;
use quiver_core::plan::Plan;
use quiver_core::read::plan_features;
use quiver_offline::{EntityRows, LogColumns, LoggedEvent, OfflineLog, retrieve};
use quiver_testkit::events::{SplitMix64, match_event, match_event_schema, with_field};

const USERS: u64 = 10_000;
const BATCH: usize = 2_000;
/// The log's events are spread over a week.
const SPAN_MICROS: i64 = 7 * 86_400_000_000;
const START_MICROS: i64 = 1_790_000_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if let Ok(events) = std::env::var("QUIVER_BENCH_HISTORICAL_CHILD") {
        let events: usize = events.parse().expect("a count");
        measure(events, env("QUIVER_BENCH_ROWS", 10_000)).await;
        return;
    }
    let events = env("QUIVER_BENCH_EVENTS", 100_000);
    println!("| log events | rows | retrieval s | rows/s | log events/s | peak MiB |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for size in [events, events * 10] {
        let status = Command::new(std::env::current_exe().expect("the bench's path"))
            .env("QUIVER_BENCH_HISTORICAL_CHILD", size.to_string())
            .status()
            .expect("the bench runs itself");
        assert!(status.success(), "the run of {size} events failed");
    }
}

/// One size: writes the log, then times one retrieval and reports the peak memory.
async fn measure(events: usize, rows: usize) {
    let registry = registry();
    let folder = tempfile::tempdir().expect("a folder");
    let log = OfflineLog::open(folder.path().to_str().expect("a UTF-8 path")).expect("a log");
    write_log(&log, &registry, events).await;
    let plan = plan_features(
        &registry,
        registry.feature_views[0]
            .view
            .features
            .iter()
            .map(|feature| format!("user_activity:{}", feature.name))
            .collect(),
    )
    .expect("a plan");
    let entity_rows = entity_rows(rows);
    let started = Instant::now();
    let retrieval = retrieve(&log, &plan, &entity_rows)
        .await
        .expect("retrieves");
    let took = started.elapsed().as_secs_f64();
    println!(
        "| {events} | {rows} | {took:.2} | {:.0} | {:.0} | {:.0} |",
        rows as f64 / took,
        events as f64 / took,
        peak_mib()
    );
    assert_eq!(retrieval.batch.num_rows(), rows);
}

fn registry() -> Registry {
    let mut definitions = quiver_testkit::contract::example_definitions();
    definitions
        .feature_views
        .retain(|view| view.name.as_str() == "user_activity");
    definitions.feature_services.clear();
    Plan::between(&Registry::default(), &definitions)
        .apply(&Registry::default(), &definitions, false)
        .expect("the examples apply")
}

/// `count` match events of `USERS` users over a week, logged in batches of four partitions.
async fn write_log(log: &OfflineLog, registry: &Registry, count: usize) {
    let schema = match_event_schema();
    let columns = LogColumns::of_schema(&schema).expect("columns");
    let view = &registry.feature_views[0];
    let mut random = SplitMix64(1);
    let mut offsets = [0_i64; 4];
    for batch_start in (0..count).step_by(BATCH) {
        let partition = (batch_start / BATCH) % offsets.len();
        let batch: Vec<LoggedEvent> = (batch_start..count.min(batch_start + BATCH))
            .map(|n| {
                let user = 1 + random.below(USERS) as i64;
                let micros = START_MICROS + random.below(SPAN_MICROS as u64) as i64;
                let event = with_field(match_event(&schema, n as i64), "user_id", Avro::Long(user));
                let event = with_field(event, "ts", Avro::TimestampMillis(micros / 1_000));
                let offset = offsets[partition];
                offsets[partition] += 1;
                LoggedEvent {
                    event,
                    event_time_micros: micros / 1_000 * 1_000,
                    ingest_time_micros: START_MICROS + SPAN_MICROS,
                    source: format!("match-events/{partition}"),
                    offset,
                }
            })
            .collect();
        log.append(&view.view.name, view.version, &columns, &[], &batch)
            .await
            .expect("logged");
    }
    log.record_registry(registry).await.expect("recorded");
}

/// `rows` rows of random users at random instants of the week.
fn entity_rows(rows: usize) -> EntityRows {
    let mut random = SplitMix64(2);
    let users: Int64Array = (0..rows)
        .map(|_| Some(1 + random.below(USERS) as i64))
        .collect();
    let times: TimestampMicrosecondArray = (0..rows)
        .map(|_| Some(START_MICROS + random.below(SPAN_MICROS as u64) as i64))
        .collect();
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![std::sync::Arc::new(users), std::sync::Arc::new(times)];
    let batch = RecordBatch::try_new(std::sync::Arc::new(schema), columns).expect("a batch");
    EntityRows::of_batch(batch, "timestamp").expect("rows")
}

/// The process's peak resident memory, from /proc.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
