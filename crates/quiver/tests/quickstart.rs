//! `quiver quickstart` end to end, with no Kafka and no ScyllaDB: on a fresh data folder it
//! applies the examples, ingests the sample files and serves them; what it serves equals the
//! sample generator's ground truth; rows pushed through `WriteFeatures` are served; Ctrl-C stops
//! it cleanly; a restart serves the same values and event times without ingesting again.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, free_port};
use quiver_client::{Entities, PushedRow, QuiverClient, Selection, Table};
use quiver_core::read::Status;
use quiver_core::value::Value;
use quiver_testkit::sample::{USERS, latest_activity, latest_profiles};

const FEATURES: [&str; 6] = [
    "user_profile:country",
    "user_profile:photo_count",
    "user_profile:verified",
    "user_activity:last_country",
    "user_activity:actions_total",
    "user_activity:actions_1h",
];
/// A user id the sample does not have.
const STRANGER: i64 = 1_000_000;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn start(data_dir: &Path, port: u16, log: &Path) -> KillOnDrop {
    let log_file = std::fs::File::create(log).unwrap();
    KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_quiver"))
            .current_dir(repository())
            .args(["quickstart", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("the quiver binary starts"),
    ))
}

/// Every 7th user and a stranger, read once the server answers.
async fn served(port: u16, process: &mut KillOnDrop, log: &Path) -> (Vec<i64>, Table) {
    let users: Vec<i64> = (1..=USERS).step_by(7).chain([STRANGER]).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        process.assert_running(log);
        if let Ok(mut client) = QuiverClient::connect(&format!("http://127.0.0.1:{port}")).await
            && let Ok(table) = client
                .get(
                    Selection::Features(FEATURES.map(String::from).to_vec()),
                    Entities::new().int64("user_id", users.clone()),
                )
                .await
        {
            return (users, table);
        }
        assert!(Instant::now() < deadline, "the quickstart never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends SIGINT, as Ctrl-C does, and expects a clean exit.
async fn interrupt(mut process: KillOnDrop, log: &Path) {
    let mut child = process.take();
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{status}: {}",
                std::fs::read_to_string(log).unwrap()
            );
            return;
        }
        assert!(Instant::now() < deadline, "Ctrl-C did not stop it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ok(value: Value, cell: &quiver_client::Cell) {
    assert_eq!(cell.status, Status::Ok, "{cell:?}");
    assert_eq!(cell.value, Some(value));
}

#[tokio::test]
async fn the_quickstart_serves_the_sample_and_keeps_it_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("quiver-data");
    let log = data.path().join("quickstart.log");
    let port = free_port();

    let mut first = start(&data_dir, port, &log);
    let (users, table) = served(port, &mut first, &log).await;
    let profiles = latest_profiles();
    let activity = latest_activity();
    let column = |name: &str| &table.columns[FEATURES.iter().position(|f| *f == name).unwrap()];
    let mut shifts = Vec::new();
    for (row, user) in users.iter().enumerate() {
        let country = &column("user_profile:country").cells[row];
        let last_country = &column("user_activity:last_country").cells[row];
        let counts = ["user_activity:actions_total", "user_activity:actions_1h"];
        if *user == STRANGER {
            for feature in FEATURES {
                // Aggregates too: an unknown id is not a user who did nothing.
                assert_eq!(column(feature).cells[row].status, Status::NotFound);
            }
            continue;
        }
        let profile = &profiles[user];
        ok(Value::String(profile.country.clone()), country);
        ok(
            Value::Int32(profile.photo_count),
            &column("user_profile:photo_count").cells[row],
        );
        ok(
            Value::Bool(profile.verified),
            &column("user_profile:verified").cells[row],
        );
        shifts.push(country.event_time_micros - profile.updated_at_millis * 1_000);
        match activity.get(user) {
            Some(latest) => ok(Value::String(latest.country.clone()), last_country),
            None => assert_eq!(last_country.status, Status::NotFound, "user {user}"),
        }
        // The sample's events all fall within the last hour once rebased.
        for feature in counts {
            let cell = &column(feature).cells[row];
            match activity.get(user) {
                Some(latest) => ok(Value::Int64(latest.actions), cell),
                None => assert_eq!(cell.status, Status::NotFound, "user {user}: no activity"),
            }
        }
    }
    shifts.dedup();
    assert_eq!(
        shifts.len(),
        1,
        "every event time moved by the same amount: {shifts:?}"
    );
    // The push API writes into the same embedded store; a bad row is refused whole.
    let mut client = QuiverClient::connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let row = |country: Value| PushedRow {
        keys: vec![("user_id".into(), Value::Int64(999))],
        values: vec![("country".into(), country)],
        event_time_micros: 1_790_000_000_000_000,
    };
    let refused = client
        .write(
            "user_profile",
            vec![row(Value::String("IS".into())), row(Value::Int64(1))],
        )
        .await
        .expect_err("a wrongly typed value is refused");
    assert!(
        refused
            .to_string()
            .contains("row 1: feature `user_profile:country`"),
        "{refused}"
    );
    assert_eq!(
        client
            .write("user_profile", vec![row(Value::String("IS".into()))])
            .await
            .expect("writes"),
        1
    );
    let pushed = client
        .get(
            Selection::Features(vec!["user_profile:country".into()]),
            Entities::new().int64("user_id", [999]),
        )
        .await
        .unwrap();
    ok(Value::String("IS".into()), &pushed.columns[0].cells[0]);
    assert_eq!(
        pushed.columns[0].cells[0].event_time_micros,
        1_790_000_000_000_000
    );
    drop(client);

    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("Ingested the sample events"), "{output}");
    assert!(output.contains("One lookup, user 42"), "{output}");
    assert!(output.contains("grpcurl -plaintext"), "{output}");
    interrupt(first, &log).await;

    let mut second = start(&data_dir, port, &log);
    let (_, again) = served(port, &mut second, &log).await;
    assert_eq!(
        again, table,
        "the restarted quickstart serves what was stored"
    );
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("ingested by an earlier run"), "{output}");
    interrupt(second, &log).await;
}
