//! `quiver serve` against clients that send what no well-behaved client would: requests that
//! multiply their work, undecodable messages, huge names and values from the future. The
//! server refuses each with a clear code and message, keeps its memory, and keeps serving. The
//! reads that multiply their work go to the real Cassandra; the rest is the server's own logic,
//! checked on the embedded store.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BufMut;
use quiver_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use common::served::{OnStore, Served};

fn users(count: i64) -> std::collections::HashMap<String, pb::KeyColumn> {
    std::collections::HashMap::from([(
        "user_id".to_owned(),
        pb::KeyColumn {
            values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                values: (0..count).collect(),
            })),
        },
    )])
}

fn read_of(features: Vec<String>, entities: i64) -> pb::GetOnlineFeaturesRequest {
    pb::GetOnlineFeaturesRequest {
        features: Some(pb::get_online_features_request::Features::FeatureList(
            pb::FeatureList { features },
        )),
        entities: users(entities),
        ..Default::default()
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test]
async fn a_request_that_multiplies_its_work_is_refused_at_once_and_memory_stays_bounded() {
    // 1,000 cold reads at once: beyond the default per-read timeout on a busy test machine.
    let mut server = Served::start(
        OnStore::Cassandra,
        &["--max-cells", "5000", "--read-timeout-ms", "10000"],
    )
    .await;
    let before = server.rss_bytes();

    // The probe's request: one reference 2,000 times, 1,000 entities, 46 KB on the wire.
    let amplifying = read_of(vec!["user_profile:bio_embedding".to_owned(); 2_000], 1_000);
    assert!(prost::Message::encoded_len(&amplifying) > 40_000);
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (mut client, request) = (server.client.clone(), amplifying.clone());
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            (client.get_online_features(request).await, started.elapsed())
        }));
    }
    for call in calls {
        let (answer, took) = call.await.unwrap();
        let status = answer.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("--max-features"),
            "{}",
            status.message()
        );
        assert!(took < Duration::from_secs(2), "refused after {took:?}");
    }

    // Within the feature limit, the repeats are one column, read once.
    let repeated = read_of(vec!["user_profile:bio_embedding".to_owned(); 400], 1_000);
    let reply = server
        .client
        .get_online_features(repeated)
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(reply.features.len(), 1);
    assert_eq!(reply.features[0].name, "user_profile:bio_embedding");
    assert_eq!(reply.features[0].statuses.len(), 1_000);

    // Distinct features times entities over the cell limit.
    let all: Vec<String> = [
        "country",
        "birth_year",
        "languages",
        "photo_count",
        "verified",
        "bio_embedding",
    ]
    .iter()
    .map(|feature| format!("user_profile:{feature}"))
    .collect();
    let status = server
        .client
        .get_online_features(read_of(all, 1_000))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("6000 cells"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("--max-cells"),
        "{}",
        status.message()
    );

    let after = server.rss_bytes();
    assert!(
        after < before + 100 * 1024 * 1024,
        "the server grew from {} MB to {} MB",
        before / 1_000_000,
        after / 1_000_000
    );
}

/// Sends its bytes as they are and decodes nothing: a client with a broken encoder.
#[derive(Clone, Copy)]
struct RawBytes;

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, _buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        Ok(Some(()))
    }
}

#[tokio::test]
async fn undecodable_messages_and_huge_names_are_invalid_arguments_with_short_messages() {
    let mut server = Served::start(OnStore::Embedded, &[]).await;
    let channel = server.channel.clone();
    let path = "/quiver.v1.FeatureService/GetOnlineFeatures";
    // feature_list (field 2) holding one feature name (field 1) of bytes that are not UTF-8,
    // then a truncated varint.
    for bytes in [vec![0x12, 0x04, 0x0a, 0x02, 0xff, 0xfe], vec![0x12, 0xff]] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(bytes.clone()),
                path.parse().unwrap(),
                RawBytes,
            )
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bytes:x?}: {status:?}"
        );
        assert!(
            status.message().contains("GetOnlineFeaturesRequest"),
            "{}",
            status.message()
        );
    }

    let huge = "a".repeat(4_000_000);
    let status = server
        .client
        .get_online_features(read_of(vec![huge], 1))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().len() < 1_100,
        "a {} byte message",
        status.message().len()
    );
    assert!(
        status.message().contains("(4000000 bytes)"),
        "{}",
        status.message()
    );
    let status = server
        .client
        .get_online_features(pb::GetOnlineFeaturesRequest {
            features: Some(pb::get_online_features_request::Features::FeatureService(
                "s".repeat(3_000_000),
            )),
            entities: users(1),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().len() < 1_100,
        "a {} byte message",
        status.message().len()
    );

    // And it still serves.
    let reply = server
        .client
        .get_online_features(read_of(vec!["user_profile:country".into()], 3))
        .await
        .expect("answered");
    assert_eq!(reply.into_inner().features[0].statuses.len(), 3);
}

fn push(at: i64, country: &str) -> pb::WriteFeaturesRequest {
    pb::WriteFeaturesRequest {
        feature_view: "user_profile".into(),
        rows: vec![pb::FeatureRow {
            keys: [(
                "user_id".to_owned(),
                pb::Value {
                    kind: Some(pb::value::Kind::Int64Value(43)),
                },
            )]
            .into(),
            values: [(
                "country".to_owned(),
                pb::Value {
                    kind: Some(pb::value::Kind::StringValue(country.into())),
                },
            )]
            .into(),
            event_time_micros: at,
        }],
    }
}

#[tokio::test]
async fn pushes_from_the_future_are_refused_and_ignored_rows_are_reported() {
    let mut server = Served::start(OnStore::Embedded, &[]).await;
    let now = now_micros();
    let status = server
        .client
        .write_features(push(now + 59 * 60_000_000, "FUTURE"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("--max-push-future-ms"),
        "{}",
        status.message()
    );

    let written = server
        .client
        .write_features(push(now, "SE"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((written.rows_written, written.ignored_rows.len()), (1, 0));
    let older = server
        .client
        .write_features(push(now - 10_000_000, "NO"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(older.rows_written, 0);
    assert_eq!(older.ignored_rows.len(), 1);
    assert_eq!(
        (
            older.ignored_rows[0].row,
            older.ignored_rows[0].reason.as_str()
        ),
        (0, "older_than_stored")
    );
    let again = server
        .client
        .write_features(push(now, "SE"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.rows_written, 0, "a repeated push changes nothing");

    let mut read = read_of(vec!["user_profile:country".into()], 0);
    read.entities = [(
        "user_id".to_owned(),
        pb::KeyColumn {
            values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                values: vec![43],
            })),
        },
    )]
    .into();
    let reply = server
        .client
        .get_online_features(read)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.features[0].values[0].kind,
        Some(pb::value::Kind::StringValue("SE".into()))
    );
    assert_eq!(reply.features[0].event_time_micros[0], now);
}

#[tokio::test]
async fn a_call_given_up_by_its_client_stops_reading() {
    let server = Served::start(
        OnStore::Cassandra,
        &[
            "--no-cache",
            "--read-timeout-ms",
            "60000",
            "--max-entities",
            "10000",
        ],
    )
    .await;
    // 20,000 cold reads (two views, 10,000 users): seconds of work on this machine.
    let read = || {
        read_of(
            vec![
                "user_profile:country".into(),
                "user_activity:last_country".into(),
            ],
            10_000,
        )
    };
    let reads = || server.metric("quiver_serve_store_reads_total");

    // A deadline the client sets, which the server keeps as its own.
    let mut request = tonic::Request::new(read());
    request.set_timeout(Duration::from_millis(100));
    let status = server
        .client
        .clone()
        .get_online_features(request)
        .await
        .expect_err("past its deadline");
    // tonic's client gives up at the deadline too (CANCELLED), often before the server says so.
    assert!(
        [Code::DeadlineExceeded, Code::Cancelled].contains(&status.code()),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = reads();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reads(), settled, "reads went on after the deadline");
    assert!(
        settled < 20_000.0,
        "{settled} reads: the call finished its work"
    );

    // A client that goes away mid-call, with no deadline.
    let mut client = server.client.clone();
    let call = tokio::spawn(async move { client.get_online_features(read()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled_again = reads();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        reads(),
        settled_again,
        "reads went on after the client left"
    );
    assert!(
        settled_again - settled < 20_000.0,
        "{} reads: the call finished its work",
        settled_again - settled
    );
    assert_eq!(server.metric("quiver_serve_in_flight_requests"), 0.0);
}
