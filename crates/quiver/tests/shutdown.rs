//! `quiver serve` stopped by SIGTERM while clients keep calling it: every call already sent is
//! answered, later ones are refused by the transport (so clients retry elsewhere), the drain
//! is logged from start to end, and the process exits cleanly. On the embedded store: this is
//! the server's own behaviour, not the database's.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_proto::v1 as pb;
use tonic::Code;

use common::served::{OnStore, Served};

const USERS: i64 = 1_000;
const CLIENTS: usize = 16;

fn profile_row(user: i64, now_micros: i64) -> pb::FeatureRow {
    let value = |kind| pb::Value { kind: Some(kind) };
    pb::FeatureRow {
        keys: [(
            "user_id".to_owned(),
            value(pb::value::Kind::Int64Value(user)),
        )]
        .into(),
        values: [(
            "country".to_owned(),
            value(pb::value::Kind::StringValue("SE".into())),
        )]
        .into(),
        event_time_micros: now_micros,
    }
}

fn read_all_users() -> pb::GetOnlineFeaturesRequest {
    let features = [
        "country",
        "birth_year",
        "languages",
        "photo_count",
        "verified",
    ]
    .iter()
    .map(|feature| format!("user_profile:{feature}"))
    .collect();
    pb::GetOnlineFeaturesRequest {
        features: Some(pb::get_online_features_request::Features::FeatureList(
            pb::FeatureList { features },
        )),
        entities: [(
            "user_id".to_owned(),
            pb::KeyColumn {
                values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                    values: (0..USERS).collect(),
                })),
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// One call of the load: when it was sent and answered, and its outcome.
struct Call {
    sent: Instant,
    answered: Instant,
    outcome: Result<(), tonic::Status>,
}

#[tokio::test]
async fn sigterm_under_load_answers_every_call_in_flight() {
    let mut server = Served::start(OnStore::Embedded, &["--no-cache"]).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let written = server
        .client
        .write_features(pb::WriteFeaturesRequest {
            feature_view: "user_profile".into(),
            rows: (0..USERS).map(|user| profile_row(user, now)).collect(),
        })
        .await
        .expect("pushed")
        .into_inner();
    assert_eq!(written.rows_written, USERS as u64);

    // Each client calls until it is refused, or for a while after the signal.
    let stop_by = Instant::now() + Duration::from_secs(20);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = server.client.clone();
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while Instant::now() < stop_by {
                    let sent = Instant::now();
                    let outcome = client.get_online_features(read_all_users()).await;
                    let refused = outcome.is_err();
                    calls.push(Call {
                        sent,
                        answered: Instant::now(),
                        outcome: outcome.map(|reply| {
                            assert_eq!(
                                reply.into_inner().features[0].statuses.len(),
                                USERS as usize
                            );
                        }),
                    });
                    if refused {
                        break;
                    }
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let signalled = Instant::now();
    let pid = server.process.child().id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut calls = Vec::new();
    for client in clients {
        calls.extend(client.await.unwrap());
    }
    let status = server.process.take().wait().expect("serve exits");
    let log = server.logged();
    assert_eq!(status.code(), Some(0), "{log}");

    let in_flight: Vec<&Call> = calls
        .iter()
        .filter(|call| call.sent < signalled && call.answered > signalled)
        .collect();
    assert!(
        !in_flight.is_empty(),
        "the signal came while calls were in flight"
    );
    let failed_before: Vec<String> = calls
        .iter()
        .filter(|call| call.sent < signalled)
        .filter_map(|call| call.outcome.as_ref().err())
        .map(|status| format!("{status:?}"))
        .collect();
    assert!(
        failed_before.is_empty(),
        "{} of {} calls sent before the signal failed: {failed_before:#?}",
        failed_before.len(),
        calls.iter().filter(|call| call.sent < signalled).count()
    );
    // A call sent after the signal may meet the closing connection: refused, never processed,
    // so a client retries it elsewhere. tonic says UNAVAILABLE when it cannot connect and
    // CANCELLED when the connection closed under a call it had not sent yet.
    for status in calls.iter().filter_map(|call| call.outcome.as_ref().err()) {
        let transport = std::error::Error::source(status)
            .is_some_and(|cause| cause.is::<tonic::transport::Error>());
        assert!(
            status.code() == Code::Unavailable || (status.code() == Code::Cancelled && transport),
            "a call sent after the signal is refused by the transport: {status:?}"
        );
    }
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("drained: every call answered"), "{log}");
}
