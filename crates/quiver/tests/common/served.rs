//! A `quiver serve` process with the example definitions applied, on the real Cassandra or on
//! the embedded store, logging to a file, with a client connected to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use tonic::transport::Channel;

use super::{KillOnDrop, free_port};

/// Where the served values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnStore {
    /// A fresh keyspace of the test Cassandra.
    Cassandra,
    /// A fresh embedded store in a temporary folder.
    Embedded,
}

pub(crate) struct Served {
    pub(crate) process: KillOnDrop,
    pub(crate) port: u16,
    pub(crate) metrics_port: u16,
    pub(crate) channel: Channel,
    pub(crate) client: FeatureServiceClient<Channel>,
    /// The server's stderr.
    pub(crate) log: PathBuf,
    store: StoreSettings,
    _folder: tempfile::TempDir,
}

/// How every `quiver` command of one test reaches its store.
#[derive(Debug, Clone)]
enum StoreSettings {
    Cassandra { keyspace: String },
    Embedded { data_dir: PathBuf },
}

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Served {
    /// Applies `examples/features`, then starts `quiver serve` with `extra_args` and waits until
    /// it listens.
    pub(crate) async fn start(on: OnStore, extra_args: &[&str]) -> Served {
        Self::start_with(on, &repo().join("examples/features"), extra_args).await
    }

    /// Applies the definitions in `definitions`, then starts `quiver serve` as [`Self::start`].
    pub(crate) async fn start_with(on: OnStore, definitions: &Path, extra_args: &[&str]) -> Served {
        let folder = tempfile::tempdir().unwrap();
        let store = match on {
            OnStore::Cassandra => {
                let session = quiver_testkit::cql_session().await;
                let keyspace = quiver_testkit::create_keyspace(&session, "served").await;
                StoreSettings::Cassandra { keyspace }
            }
            OnStore::Embedded => StoreSettings::Embedded {
                data_dir: folder.path().join("data"),
            },
        };
        super::apply(quiver_on(&store), definitions);
        let (port, metrics_port) = (free_port(), free_port());
        let log = folder.path().join("serve.log");
        let process = KillOnDrop(Some(
            quiver_on(&store)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
                .args(extra_args)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("serve starts"),
        ));
        let channel = connect(port).await;
        let client =
            FeatureServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
        Served {
            process,
            port,
            metrics_port,
            channel,
            client,
            log,
            store,
            _folder: folder,
        }
    }

    /// A `quiver` command set to reach this server's store.
    pub(crate) fn quiver(&self) -> Command {
        quiver_on(&self.store)
    }

    /// The keyspace, on Cassandra.
    pub(crate) fn keyspace(&self) -> Option<&str> {
        match &self.store {
            StoreSettings::Cassandra { keyspace } => Some(keyspace),
            StoreSettings::Embedded { .. } => None,
        }
    }

    pub(crate) fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's resident memory in bytes.
    pub(crate) fn rss_bytes(&mut self) -> u64 {
        let pid = self.process.child().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// The sum of a metric's samples (all its label sets) on the server's `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> f64 {
        super::http_get(self.metrics_port, "/metrics")
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// What the server has logged so far.
    pub(crate) fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn quiver_on(store: &StoreSettings) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command.env("QUIVER_KAFKA_BROKERS", quiver_testkit::kafka_brokers());
    match store {
        StoreSettings::Cassandra { keyspace } => command
            .env("QUIVER_STORE", "scylla")
            .env("QUIVER_CQL_NODES", quiver_testkit::cql_nodes().join(","))
            .env("QUIVER_KEYSPACE", keyspace)
            .env("QUIVER_CONSISTENCY", "one"),
        StoreSettings::Embedded { data_dir } => command
            .env("QUIVER_STORE", "embedded")
            .env("QUIVER_DATA_DIR", data_dir),
    };
    command
}

async fn connect(port: u16) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        assert!(Instant::now() < deadline, "the server never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
