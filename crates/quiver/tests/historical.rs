//! `quiver historical` on the quickstart's sample, ingested with an offline log, against a
//! brute force over the generator's own events: every feature of `ranker_v1`, at 10,000
//! (user, instant) rows before, among and long after the events.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use apache_avro::types::Value as Avro;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_testkit::events::StreamEvent;
use quiver_testkit::sample::{Profile, USERS, match_events, profile_updates};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const ROWS: usize = 10_000;

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

fn repository(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

/// One distinct match event, as the brute force reads it.
struct Match {
    user: i64,
    micros: i64,
    id: String,
    chat_seconds: f64,
    country: String,
}

fn field<'e>(event: &'e Avro, name: &str) -> &'e Avro {
    let Avro::Record(fields) = event else {
        panic!("a record")
    };
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value)
        .expect("the field is there")
}

fn distinct_matches(events: Vec<StreamEvent>) -> Vec<Match> {
    events
        .into_iter()
        .filter(|event| !event.resent)
        .map(|event| Match {
            user: event.user,
            micros: event.event_time_millis * 1_000,
            id: match field(&event.event, "event_id") {
                Avro::String(id) => id.clone(),
                Avro::Uuid(id) => id.to_string(),
                other => panic!("an id, not {other:?}"),
            },
            chat_seconds: match field(&event.event, "chat_seconds") {
                Avro::Double(seconds) => *seconds,
                other => panic!("a double, not {other:?}"),
            },
            country: event.country.to_owned(),
        })
        .collect()
}

/// What serving would have answered for one user at one instant, worked out from the events.
#[derive(Debug, PartialEq)]
struct Expected {
    actions_1h: Option<i64>,
    chat_seconds_24h: Option<f64>,
    last_country: Option<String>,
    profile: Option<(String, bool, Vec<f32>)>,
}

fn expected(matches: &[&Match], profiles: &[&Profile], user: i64, at: i64) -> Expected {
    let seen: Vec<&&Match> = matches.iter().filter(|event| event.micros <= at).collect();
    // A window's tiles run from the one holding `at - window` to the one holding `at`: 5
    // minutes for an hour, an hour for a day.
    let in_window = |event: &Match, window: i64, tile: i64| {
        event.micros.div_euclid(tile) >= (at - window).div_euclid(tile)
    };
    let held = !seen.is_empty();
    let newest = seen
        .iter()
        .max_by(|a, b| (a.micros, &a.id).cmp(&(b.micros, &b.id)))
        .filter(|event| event.micros + 7 * DAY > at);
    let profile = profiles
        .iter()
        .filter(|profile| profile.updated_at_millis * 1_000 <= at)
        .max_by_key(|profile| profile.updated_at_millis)
        .map(|profile| {
            let embedding = (0..32)
                .map(|i| ((user * 31 + i) % 97) as f32 / 97.0)
                .collect();
            (profile.country.clone(), profile.verified, embedding)
        });
    Expected {
        actions_1h: held.then(|| {
            seen.iter()
                .filter(|event| in_window(event, HOUR, 5 * MINUTE))
                .count() as i64
        }),
        chat_seconds_24h: held.then(|| {
            seen.iter()
                .filter(|event| in_window(event, DAY, HOUR))
                .map(|event| event.chat_seconds)
                .sum()
        }),
        last_country: newest.map(|event| event.country.clone()),
        profile,
    }
}

/// A deterministic spread of rows: a third among the events, a third in the two hours after
/// them, a third over the eight days after; one row in fifty of a user with no events.
fn rows(first: i64, last: i64) -> Vec<(i64, i64)> {
    let mut random = quiver_testkit::events::SplitMix64(7);
    (0..ROWS)
        .map(|row| {
            let user = if row % 50 == 0 {
                USERS + 1
            } else {
                1 + random.below(USERS as u64) as i64
            };
            let (from, span) = match row % 3 {
                0 => (first - MINUTE, last - first + 2 * MINUTE),
                1 => (last, 2 * HOUR),
                _ => (last, 8 * DAY),
            };
            (user, from + random.below(span as u64) as i64)
        })
        .collect()
}

/// Applies the examples to an embedded store in `folder/data` and ingests the named sample files
/// with an offline log in `folder/log`, whose path it returns.
fn ingest_with_log(folder: &Path, files: &[&str]) -> String {
    let data = folder.join("data").to_string_lossy().into_owned();
    let log = folder.join("log").to_string_lossy().into_owned();
    quiver(&[
        "apply",
        "--dir",
        &repository("examples/features"),
        "--data-dir",
        &data,
    ]);
    let mut ingest = vec!["ingest".to_owned()];
    for file in files {
        ingest.push("--from-file".to_owned());
        ingest.push(repository(&format!("examples/events/{file}")));
    }
    ingest.extend([
        "--data-dir".to_owned(),
        data,
        "--offline-log".to_owned(),
        log.clone(),
    ]);
    quiver(&ingest.iter().map(String::as_str).collect::<Vec<_>>());
    log
}

fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).expect("the output exists");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("Parquet")
        .build()
        .expect("a reader");
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader.map(|batch| batch.expect("a batch")).collect();
    arrow_select::concat::concat_batches(&schema, &batches).expect("one batch")
}

fn answered(batch: &RecordBatch, row: usize) -> Expected {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("a column {name}"))
    };
    let status_ok = |name: &str| {
        let status = column(&format!("{name}__status"))
            .as_string::<i32>()
            .value(row);
        let valid = column(name).is_valid(row);
        assert_eq!(
            status == "ok",
            valid,
            "{name} at row {row}: status {status}"
        );
        valid
    };
    let int =
        |name: &str| status_ok(name).then(|| column(name).as_primitive::<Int64Type>().value(row));
    let float =
        |name: &str| status_ok(name).then(|| column(name).as_primitive::<Float64Type>().value(row));
    let text =
        |name: &str| status_ok(name).then(|| column(name).as_string::<i32>().value(row).to_owned());
    let profile = text("user_profile:country").map(|country| {
        let verified = column("user_profile:verified").as_boolean().value(row);
        let embedding = column("user_profile:bio_embedding")
            .as_list::<i32>()
            .value(row);
        let embedding = embedding.as_primitive::<Float32Type>().values().to_vec();
        (country, verified, embedding)
    });
    Expected {
        actions_1h: int("user_activity:actions_1h"),
        chat_seconds_24h: float("user_activity:chat_seconds_24h"),
        last_country: text("user_activity:last_country"),
        profile,
    }
}

#[test]
fn historical_values_of_the_sample_match_a_brute_force() {
    let folder = tempfile::tempdir().expect("a folder");
    let log = ingest_with_log(folder.path(), &["match_events.avro", "user_profiles.avro"]);
    let log = log.as_str();

    let matches = distinct_matches(match_events());
    let updates = profile_updates();
    let first = matches
        .iter()
        .map(|event| event.micros)
        .min()
        .expect("events");
    let last = matches
        .iter()
        .map(|event| event.micros)
        .max()
        .expect("events");
    let rows = rows(first, last);
    let mut csv = String::from("user_id,timestamp\n");
    for (user, at) in &rows {
        let time = chrono::DateTime::from_timestamp_micros(*at).expect("a time");
        csv.push_str(&format!(
            "{user},{}\n",
            time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ));
    }
    let entities = folder.path().join("rows.csv");
    std::fs::write(&entities, csv).expect("written");
    let out = folder.path().join("training.parquet");
    let summary = quiver(&[
        "historical",
        "--service",
        "ranker_v1",
        "--entities",
        entities.to_str().expect("UTF-8"),
        "--out",
        out.to_str().expect("UTF-8"),
        "--offline-log",
        log,
    ]);
    assert!(summary.contains("10000 rows × 6 features"), "{summary}");

    let mut matches_of: HashMap<i64, Vec<&Match>> = HashMap::new();
    for event in &matches {
        matches_of.entry(event.user).or_default().push(event);
    }
    let mut profiles_of: HashMap<i64, Vec<&Profile>> = HashMap::new();
    for (user, profile) in &updates {
        profiles_of.entry(*user).or_default().push(profile);
    }
    let batch = read_parquet(&out);
    assert_eq!(batch.num_rows(), ROWS);
    let mut kinds = HashSet::new();
    for (row, (user, at)) in rows.iter().enumerate() {
        let truth = expected(
            matches_of.get(user).map_or(&[][..], Vec::as_slice),
            profiles_of.get(user).map_or(&[][..], Vec::as_slice),
            *user,
            *at,
        );
        let got = answered(&batch, row);
        let close = match (got.chat_seconds_24h, truth.chat_seconds_24h) {
            (Some(got), Some(truth)) => (got - truth).abs() <= 1e-9 * truth.abs().max(1.0),
            (got, truth) => got == truth,
        };
        assert!(
            close
                && got.actions_1h == truth.actions_1h
                && got.last_country == truth.last_country
                && got.profile == truth.profile,
            "user {user} at {at}: got {got:?}, expected {truth:?}"
        );
        kinds.insert((
            truth.actions_1h.map(|count| count > 0),
            truth.last_country.is_some(),
            truth.profile.is_some(),
        ));
    }
    // The rows reach every case: before any event, counting, windows passed, TTL passed.
    for kind in [
        (None, false, false),
        (Some(true), true, true),
        (Some(false), true, true),
        (Some(false), false, true),
    ] {
        assert!(kinds.contains(&kind), "no row of kind {kind:?}: {kinds:?}");
    }
}

/// Runs `quiver historical` expecting it to fail; returns its error output.
fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("historical")
        .args(args)
        .output()
        .expect("the quiver binary runs");
    assert_eq!(output.status.code(), Some(1), "quiver historical {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_rows_and_requests_are_refused_by_name() {
    let folder = tempfile::tempdir().expect("a folder");
    let log = folder.path().join("log");
    let log = log.to_str().expect("UTF-8");
    let out = folder.path().join("out.parquet");
    let out = out.to_str().expect("UTF-8");
    let rows = |name: &str, text: &str| {
        let path = folder.path().join(name);
        std::fs::write(&path, text).expect("written");
        path.to_string_lossy().into_owned()
    };
    let good = rows("good.csv", "user_id,timestamp\n1,2026-09-21T10:00:00Z\n");

    let error = refused(&[
        "--service",
        "ranker_v1",
        "--entities",
        &good,
        "--out",
        out,
        "--offline-log",
        log,
    ]);
    assert!(error.contains("holds no events yet"), "{error}");

    ingest_with_log(folder.path(), &["user_profiles.avro"]);
    let cases = [
        (
            vec!["--service", "nope"],
            good.clone(),
            "feature service `nope` is not in the registry",
        ),
        (
            vec!["--feature", "user_profile:nope"],
            good.clone(),
            "has no feature `nope`",
        ),
        (
            vec!["--service", "ranker_v1"],
            rows("no_key.csv", "member,timestamp\n1,2026-09-21T10:00:00Z\n"),
            "entity `user` is keyed by `user_id`, and the rows have no such column",
        ),
        (
            vec!["--service", "ranker_v1"],
            rows(
                "bad_key.csv",
                "user_id,timestamp\nabc,2026-09-21T10:00:00Z\n",
            ),
            "column `user_id` row 1: `abc`, not a key of type int64",
        ),
        (
            vec!["--service", "ranker_v1"],
            rows("bad_time.csv", "user_id,timestamp\n1,yesterday\n"),
            "column `timestamp` row 1: `yesterday` is not an RFC 3339 time",
        ),
        (
            vec!["--service", "ranker_v1"],
            rows("no_time.csv", "user_id,at\n1,2026-09-21T10:00:00Z\n"),
            "no column `timestamp`",
        ),
        (
            vec!["--service", "ranker_v1"],
            rows("rows.json", "{}"),
            "give a .parquet or a .csv file",
        ),
    ];
    for (request, entities, expected) in cases {
        let mut args = request.clone();
        args.extend(["--entities", &entities, "--out", out, "--offline-log", log]);
        let error = refused(&args);
        assert!(error.contains(expected), "{request:?} {entities}: {error}");
    }
    assert!(
        !std::path::Path::new(out).exists(),
        "nothing is written on an error"
    );
}
