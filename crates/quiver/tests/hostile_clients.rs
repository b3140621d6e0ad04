//! `quiver serve` against clients that send what no well-behaved client would: requests that
//! multiply their work, undecodable messages, huge names and values from the future. The
//! server refuses each with a clear code and message, keeps its memory, and keeps serving.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BufMut;
use quiver_proto::v1 as pb;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

use common::{KillOnDrop, free_port};

/// A `quiver serve` on the real Cassandra with the example definitions applied, and a client.
struct Server {
    process: KillOnDrop,
    channel: Channel,
    client: FeatureServiceClient<Channel>,
}

impl Server {
    async fn start(extra_args: &[&str]) -> Server {
        let session = quiver_testkit::cql_session().await;
        let keyspace = quiver_testkit::create_keyspace(&session, "hostile").await;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let quiver = || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
            command
                .env("QUIVER_STORE", "scylla")
                .env("QUIVER_CQL_NODES", quiver_testkit::cql_nodes().join(","))
                .env("QUIVER_KEYSPACE", &keyspace)
                .env("QUIVER_CONSISTENCY", "one");
            command
        };
        let applied = quiver()
            .args(["apply", "--dir"])
            .arg(repo.join("examples/features"))
            .output()
            .unwrap();
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let port = free_port();
        let process = KillOnDrop(Some(
            quiver()
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
                .args(extra_args)
                .stderr(Stdio::null())
                .spawn()
                .expect("serve starts"),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
            if let Ok(channel) = endpoint.connect().await {
                break channel;
            }
            assert!(Instant::now() < deadline, "the server never listened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let client =
            FeatureServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
        Server {
            process,
            channel,
            client,
        }
    }

    /// The server's resident memory in bytes.
    fn rss_bytes(&mut self) -> u64 {
        let pid = self.process.child().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }
}

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
    let mut server = Server::start(&["--max-cells", "5000", "--read-timeout-ms", "10000"]).await;
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
    let mut server = Server::start(&[]).await;
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
    let mut server = Server::start(&[]).await;
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
