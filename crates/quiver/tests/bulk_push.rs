//! A bulk push as a batch job sends it: 100,000 rows of 20 features through `WriteFeatures`
//! into the real Cassandra, every value read back through `GetOnlineFeatures`. A push's values
//! are a protobuf map, so each row names its features in another order; the store must not
//! prepare a statement per ordering, which flooded the node's statement cache until every
//! write failed (the test Cassandra's cache is 1 MiB).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use quiver_proto::v1 as pb;

use common::served::{OnStore, Served, repo};

const ROWS: i64 = 100_000;
const FEATURES_PER_TYPE: usize = 10;
const ROWS_PER_PUSH: usize = 1_000;
const PUSHES_AT_ONCE: usize = 4;
const ENTITIES_PER_READ: usize = 1_000;

/// A view of 10 float64 and 10 int64 features, besides the examples' entities.
fn definitions(folder: &std::path::Path) {
    std::fs::copy(
        repo().join("examples/features/entities.yaml"),
        folder.join("entities.yaml"),
    )
    .unwrap();
    let mut features = String::new();
    for n in 0..FEATURES_PER_TYPE {
        features += &format!("      - {{name: f{n}, type: float64, from: chat_seconds}}\n");
        features += &format!("      - {{name: i{n}, type: int64, from: candidate_id}}\n");
    }
    let schema = repo().join("schemas/match_event.avsc");
    let views = format!(
        "feature_views:\n  - name: wide\n    entity: user\n    source:\n      topic: wide-events\n      \
         schema: {}\n      key_fields: [user_id]\n      event_time: ts\n    features:\n{features}",
        schema.display()
    );
    std::fs::write(folder.join("wide.yaml"), views).unwrap();
}

fn value(kind: pb::value::Kind) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

fn float_of(user: i64, n: usize) -> f64 {
    user as f64 + n as f64 / 10.0
}

fn int_of(user: i64, n: usize) -> i64 {
    user * 100 + n as i64
}

fn row(user: i64, event_time_micros: i64) -> pb::FeatureRow {
    let mut values = std::collections::HashMap::new();
    for n in 0..FEATURES_PER_TYPE {
        values.insert(
            format!("f{n}"),
            value(pb::value::Kind::Float64Value(float_of(user, n))),
        );
        values.insert(
            format!("i{n}"),
            value(pb::value::Kind::Int64Value(int_of(user, n))),
        );
    }
    pb::FeatureRow {
        keys: [(
            "user_id".to_owned(),
            value(pb::value::Kind::Int64Value(user)),
        )]
        .into(),
        values,
        event_time_micros,
    }
}

#[tokio::test]
async fn a_hundred_thousand_rows_of_twenty_features_pushed_read_back_whole() {
    let folder = tempfile::tempdir().unwrap();
    definitions(folder.path());
    let server = Served::start_with(
        OnStore::Cassandra,
        folder.path(),
        &["--read-timeout-ms", "20000"],
    )
    .await;

    let event_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - 1_000_000;
    let users: Vec<i64> = (0..ROWS).collect();
    for pushes in users.chunks(ROWS_PER_PUSH * PUSHES_AT_ONCE) {
        let calls: Vec<_> = pushes
            .chunks(ROWS_PER_PUSH)
            .map(|chunk| {
                let mut client = server.client.clone();
                let request = pb::WriteFeaturesRequest {
                    feature_view: "wide".into(),
                    rows: chunk.iter().map(|&user| row(user, event_time)).collect(),
                };
                tokio::spawn(async move { client.write_features(request).await })
            })
            .collect();
        for (call, chunk) in calls.into_iter().zip(pushes.chunks(ROWS_PER_PUSH)) {
            let written = call
                .await
                .unwrap()
                .expect("the push is stored")
                .into_inner();
            assert_eq!(written.rows_written, chunk.len() as u64);
            assert!(
                written.ignored_rows.is_empty(),
                "{:?}",
                written.ignored_rows
            );
        }
    }

    let features: Vec<String> = (0..FEATURES_PER_TYPE)
        .flat_map(|n| [format!("wide:f{n}"), format!("wide:i{n}")])
        .collect();
    let mut client = server.client.clone();
    let mut checked = 0;
    for read in users.chunks(ENTITIES_PER_READ) {
        let reply = client
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: Some(pb::get_online_features_request::Features::FeatureList(
                    pb::FeatureList {
                        features: features.clone(),
                    },
                )),
                entities: [(
                    "user_id".to_owned(),
                    pb::KeyColumn {
                        values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                            values: read.to_vec(),
                        })),
                    },
                )]
                .into(),
                ..Default::default()
            })
            .await
            .expect("read back")
            .into_inner();
        for column in &reply.features {
            let (kind, n) = column.name.split_at("wide:f".len());
            let n: usize = n.parse().unwrap();
            for (row, &user) in read.iter().enumerate() {
                let expected = if kind == "wide:f" {
                    pb::value::Kind::Float64Value(float_of(user, n))
                } else {
                    pb::value::Kind::Int64Value(int_of(user, n))
                };
                assert_eq!(
                    column.values[row].kind.as_ref(),
                    Some(&expected),
                    "{} of user {user}",
                    column.name
                );
                assert_eq!(column.event_time_micros[row], event_time);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, ROWS as usize * FEATURES_PER_TYPE * 2);
}
