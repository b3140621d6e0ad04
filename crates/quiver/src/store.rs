//! The online store chosen on the command line: the embedded file (the default) or ScyllaDB,
//! behind the one port both adapters implement.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use quiver_core::aggregate::{EntityTiles, TileChanges};
use quiver_core::definition::{Entity, FeatureView, Registry, VersionedView};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::secret::Secret;
use quiver_core::store::{
    EntityRow, FeatureStore, FeatureWrite, OnlineStore, StoreError, StoredValue,
};
use quiver_embedded::EmbeddedStore;
use quiver_scylla::{CqlTls, Credentials, ScyllaConfig, ScyllaStore};
use scylla::statement::Consistency;

/// The file of the embedded store inside `--data-dir`.
pub(crate) const EMBEDDED_FILE: &str = "quiver.redb";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreKind {
    /// One local file in --data-dir, opened by one process at a time: a laptop, the quickstart,
    /// a single-node deployment.
    Embedded,
    /// A ScyllaDB (or Cassandra) cluster: --cql-nodes and --keyspace.
    Scylla,
}

/// Where the online store is.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Which online store to use.
    #[arg(long, env = "QUIVER_STORE", value_enum, default_value = "embedded")]
    pub(crate) store: StoreKind,
    /// The folder of the embedded store (created if missing).
    #[arg(long, env = "QUIVER_DATA_DIR", default_value = "quiver-data")]
    pub(crate) data_dir: PathBuf,
    /// CQL contact points of the ScyllaDB cluster, comma-separated host:port.
    #[arg(
        long,
        env = "QUIVER_CQL_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:9042"
    )]
    cql_nodes: Vec<String>,
    /// The keyspace holding Quiver's tables. It must exist: its replication is yours to choose.
    #[arg(long, env = "QUIVER_KEYSPACE", default_value = "quiver")]
    keyspace: String,
    /// Consistency level of reads and writes: one, local_one, quorum or local_quorum.
    #[arg(long, env = "QUIVER_CONSISTENCY", default_value = "local_quorum", value_parser = parse_consistency)]
    consistency: Consistency,
    /// The CQL user, for clusters with password authentication (with QUIVER_CQL_PASSWORD).
    #[arg(long, env = "QUIVER_CQL_USERNAME", requires = "cql_password")]
    cql_username: Option<String>,
    /// The CQL user's password; prefer the environment variable to the flag.
    #[arg(
        long,
        env = "QUIVER_CQL_PASSWORD",
        hide_env_values = true,
        requires = "cql_username"
    )]
    cql_password: Option<Secret>,
    /// Connect to the nodes over TLS (client-to-node encryption), verified with the system's
    /// trusted roots unless --cql-tls-ca-file is given.
    #[arg(long, env = "QUIVER_CQL_TLS")]
    cql_tls: bool,
    /// PEM file of the CA that signed the nodes' certificates.
    #[arg(long, env = "QUIVER_CQL_TLS_CA_FILE", requires = "cql_tls")]
    cql_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for clusters that require mutual TLS (with --cql-tls-key-file).
    #[arg(long, env = "QUIVER_CQL_TLS_CERT_FILE", requires_all = ["cql_tls", "cql_tls_key_file"])]
    cql_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --cql-tls-cert-file.
    #[arg(long, env = "QUIVER_CQL_TLS_KEY_FILE", requires_all = ["cql_tls", "cql_tls_cert_file"])]
    cql_tls_key_file: Option<PathBuf>,
    /// Seconds a single request to the store may take.
    #[arg(long, env = "QUIVER_CQL_TIMEOUT_SECS", default_value_t = 10)]
    cql_timeout_secs: u64,
    /// Create the keyspace if it is missing (plan does too), with one replica (SimpleStrategy). For a laptop or
    /// a test cluster only: in production, create it with the replication you need.
    #[arg(long)]
    create_keyspace: bool,
}

pub(crate) fn parse_consistency(text: &str) -> Result<Consistency, String> {
    match text.to_ascii_lowercase().as_str() {
        "one" => Ok(Consistency::One),
        "local_one" => Ok(Consistency::LocalOne),
        "quorum" => Ok(Consistency::Quorum),
        "local_quorum" => Ok(Consistency::LocalQuorum),
        _ => Err(format!(
            "`{text}` is not a consistency level; use one, local_one, quorum or local_quorum"
        )),
    }
}

impl StoreArgs {
    pub(crate) async fn connect(&self) -> anyhow::Result<Store> {
        match self.store {
            StoreKind::Embedded => {
                std::fs::create_dir_all(&self.data_dir).with_context(|| {
                    format!("cannot create the data folder {}", self.data_dir.display())
                })?;
                let store = EmbeddedStore::open(&self.data_dir.join(EMBEDDED_FILE))
                    .context("cannot open the online store")?;
                Ok(Store::Embedded(store))
            }
            StoreKind::Scylla => {
                let config = ScyllaConfig {
                    nodes: self.cql_nodes.clone(),
                    keyspace: self.keyspace.clone(),
                    consistency: self.consistency,
                    request_timeout: Duration::from_secs(self.cql_timeout_secs),
                    create_keyspace: self.create_keyspace,
                    credentials: self
                        .cql_username
                        .clone()
                        .zip(self.cql_password.clone())
                        .map(|(username, password)| Credentials { username, password }),
                    tls: self.cql_tls.then(|| CqlTls {
                        ca_file: self.cql_tls_ca_file.clone(),
                        cert_file: self.cql_tls_cert_file.clone(),
                        key_file: self.cql_tls_key_file.clone(),
                    }),
                };
                let store = ScyllaStore::connect(&config)
                    .await
                    .context("cannot open the online store")?;
                Ok(Store::Scylla(Box::new(store)))
            }
        }
    }
}

/// One of the adapters; every call goes to the one chosen.
#[derive(Debug)]
pub(crate) enum Store {
    Embedded(EmbeddedStore),
    Scylla(Box<ScyllaStore>),
}

impl OnlineStore for Store {
    async fn load_registry(&self) -> Result<Option<Registry>, StoreError> {
        match self {
            Store::Embedded(store) => store.load_registry().await,
            Store::Scylla(store) => store.load_registry().await,
        }
    }

    async fn publish_registry(
        &self,
        expected_revision: u64,
        registry: &Registry,
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(store) => store.publish_registry(expected_revision, registry).await,
            Store::Scylla(store) => store.publish_registry(expected_revision, registry).await,
        }
    }

    async fn ensure_view_table(
        &self,
        entity: &Entity,
        view: &FeatureView,
        version: u32,
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(store) => store.ensure_view_table(entity, view, version).await,
            Store::Scylla(store) => store.ensure_view_table(entity, view, version).await,
        }
    }
}

impl FeatureStore for Store {
    async fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(store) => store.write_features(entity, view, writes).await,
            Store::Scylla(store) => store.write_features(entity, view, writes).await,
        }
    }

    async fn delete_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        event_time_micros: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(store) => {
                store
                    .delete_entity(entity, view, key, event_time_micros)
                    .await
            }
            Store::Scylla(store) => {
                store
                    .delete_entity(entity, view, key, event_time_micros)
                    .await
            }
        }
    }

    async fn read_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        key: &EntityKey,
    ) -> Result<Vec<Option<StoredValue>>, StoreError> {
        match self {
            Store::Embedded(store) => store.read_features(entity, view, features, key).await,
            Store::Scylla(store) => store.read_features(entity, view, features, key).await,
        }
    }

    async fn read_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
    ) -> Result<EntityRow, StoreError> {
        match self {
            Store::Embedded(store) => store.read_entity(entity, view, key).await,
            Store::Scylla(store) => store.read_entity(entity, view, key).await,
        }
    }

    async fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        changes: &TileChanges,
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(store) => store.write_tiles(entity, view, key, changes).await,
            Store::Scylla(store) => store.write_tiles(entity, view, key, changes).await,
        }
    }

    async fn read_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> Result<EntityTiles, StoreError> {
        match self {
            Store::Embedded(store) => store.read_tiles(entity, view, key, feature).await,
            Store::Scylla(store) => store.read_tiles(entity, view, key, feature).await,
        }
    }
}
