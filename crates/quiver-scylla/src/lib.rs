//! The ScyllaDB adapter of the online store port, speaking CQL that Cassandra accepts too.
//!
//! The registry is one row of `quiver_registry`, holding the registry as JSON and its revision;
//! it is replaced with a lightweight transaction (`IF revision = ?`), so concurrent applies cannot
//! interleave. Each view version has a table `<view>_v<version>`, partitioned by the entity key,
//! with one typed column per feature read from a field. Feature writes carry the event time as
//! `USING TIMESTAMP` and the rest of the view's TTL as `USING TTL`; reads take `WRITETIME` back
//! as the event time.
//!
//! Aggregate tiles of every view live in one table, `quiver_tiles`, partitioned by view table
//! and encoded entity key, with a row per feature and source holding the tiles as a map from
//! tile start to the tile as JSON: one query reads all tiles of an entity, or of one of its
//! features, and a 30-day window is one row of 30 cells rather than 30 rows. A tile is one map
//! cell, rewritten whole each time it changes (never a CQL counter, whose increments a replay
//! would repeat), with its own TTL that ends when its window has passed it.

mod values;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
use quiver_core::aggregate::{EntityTiles, Partial, Tile};
use quiver_core::definition::{
    Derivation, Entity, FeatureView, Registry, VersionedView, view_table_name,
};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::read::stored_features;
use quiver_core::secret::Secret;
use quiver_core::store::{
    DELETION_MARK_TTL_SECS, FeatureStore, FeatureWrite, OnlineStore, StoreError, StoreErrorKind,
    StoredValue, check_key, check_write, feature_types, live_tiles, remaining_ttl_secs,
};
use quiver_core::value::{ScalarType, Value, ValueType};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::{OpenSsl010Config, Session};
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace holding Quiver's tables; it must exist, since its replication is the
    /// operator's choice.
    pub keyspace: String,
    /// LOCAL_QUORUM in production; ONE on a one-node test cluster.
    pub consistency: Consistency,
    /// The longest a single request may take.
    pub request_timeout: Duration,
    /// Create a missing keyspace with SimpleStrategy and one replica (the CLI's
    /// `--create-keyspace`): for a laptop or a test cluster, never production.
    pub create_keyspace: bool,
    /// A user and password for clusters with password authentication.
    pub credentials: Option<Credentials>,
    /// TLS to every node, when the cluster requires client-to-node encryption.
    pub tls: Option<CqlTls>,
}

/// A CQL user and password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Client-to-node TLS. Nodes' certificates are verified against `ca_file`, or the system's
/// trusted roots without one; a client certificate and key make it mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct CqlTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl CqlTls {
    /// The driver's TLS context; an unreadable or malformed file is named.
    fn context(&self) -> Result<OpenSsl010Config, StoreError> {
        let invalid = |what: &str, path: &Path, error: &dyn std::fmt::Display| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!("{what} {}: {error}", path.display()),
            )
        };
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|error| StoreError::new(StoreErrorKind::Invalid, format!("TLS: {error}")))?;
        if let Some(path) = &self.ca_file {
            builder
                .set_ca_file(path)
                .map_err(|error| invalid("CQL TLS CA file", path, &error))?;
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                builder
                    .set_certificate_chain_file(cert)
                    .map_err(|error| invalid("CQL TLS certificate file", cert, &error))?;
                builder
                    .set_private_key_file(key, SslFiletype::PEM)
                    .map_err(|error| invalid("CQL TLS key file", key, &error))?;
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::new(
                    StoreErrorKind::Invalid,
                    "a CQL TLS client certificate needs its key, and a key its certificate",
                ));
            }
        }
        Ok(OpenSsl010Config::new(builder))
    }
}

impl ScyllaConfig {
    /// For a one-node cluster, such as a laptop or the test servers: consistency ONE, 30 s
    /// requests, and an existing keyspace.
    pub fn one_node(nodes: Vec<String>, keyspace: String) -> Self {
        ScyllaConfig {
            nodes,
            keyspace,
            consistency: Consistency::One,
            request_timeout: Duration::from_secs(30),
            create_keyspace: false,
            credentials: None,
            tls: None,
        }
    }
}

/// The online store on ScyllaDB (or Cassandra).
#[derive(Debug)]
pub struct ScyllaStore {
    session: Session,
    keyspace: Name,
    load_registry: PreparedStatement,
    insert_registry: PreparedStatement,
    update_registry: PreparedStatement,
    insert_tile: PreparedStatement,
    select_tiles: PreparedStatement,
    select_feature_tiles: PreparedStatement,
    delete_tiles: PreparedStatement,
    mark_deleted: PreparedStatement,
    /// Feature statements, prepared once per table and column set.
    statements: Mutex<HashMap<String, PreparedStatement>>,
    /// The read of each feature view, as of the version and features it last read: the
    /// serving path reads the same column set again and again, and finds it here without
    /// building the statement's text or looking up the features' types. (Reads of another
    /// version or column set rebuild the entry from `statements`, without a round trip.)
    reads: Mutex<HashMap<Name, Arc<FeatureRead>>>,
}

/// A prepared read of some features of one view version, with their types in read order.
#[derive(Debug)]
struct FeatureRead {
    version: u32,
    features: Vec<Name>,
    types: Vec<ValueType>,
    prepared: PreparedStatement,
}

/// Writes of one call in flight at once: enough to hide round trips, few enough to be polite.
const MAX_WRITES_IN_FLIGHT: usize = 64;

/// The most rows of one partition sent as one unlogged batch; batches stay small, as ScyllaDB
/// and Cassandra warn about large ones.
const MAX_BATCH_ROWS: usize = 16;

const REGISTRY_ROW: &str = "current";

/// A read whose replies leave out the result metadata, decoded with the metadata the driver
/// kept from preparing it: a smaller reply to send and parse on every read. Safe because every
/// read names its columns, so a column added later cannot change a reply's shape, and a new
/// feature gets a new statement. ScyllaDB does this by itself; Cassandra needs asking.
fn with_cached_result_metadata(mut statement: PreparedStatement) -> PreparedStatement {
    statement.set_use_cached_result_metadata(true);
    statement
}

fn unavailable(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, format!("{context}: {error}"))
}

impl ScyllaStore {
    /// Connects, checks the keyspace, and creates the registry table if it is missing.
    pub async fn connect(config: &ScyllaConfig) -> Result<Self, StoreError> {
        let keyspace: Name = config.keyspace.parse().map_err(|error| {
            StoreError::new(StoreErrorKind::Invalid, format!("keyspace: {error}"))
        })?;
        let profile = ExecutionProfile::builder()
            .consistency(config.consistency)
            .request_timeout(Some(config.request_timeout))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.request_timeout)
            .default_execution_profile_handle(profile.into_handle());
        if let Some(credentials) = &config.credentials {
            builder = builder.user(&credentials.username, credentials.password.expose());
        }
        if let Some(tls) = &config.tls {
            builder = builder.tls_context(Some(tls.context()?));
        }
        let session = builder
            .build()
            .await
            .map_err(|error| unavailable(&format!("connecting to {:?}", config.nodes), error))?;

        // With values, an unpaged query is prepared by the driver first: evictable too.
        let exists = retry_evicted(|| {
            session.query_unpaged(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (keyspace.as_str(),),
            )
        })
        .await
        .map_err(|error| unavailable("reading the schema", error))?
        .into_rows_result()
        .map_err(|error| unavailable("reading the schema", error))?
        .rows_num()
            > 0;
        if !exists && config.create_keyspace {
            session
                .query_unpaged(
                    format!(
                        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                         {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
                    ),
                    (),
                )
                .await
                .map_err(|error| unavailable("creating the keyspace", error))?;
        } else if !exists {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "keyspace `{keyspace}` does not exist; create it with the replication you \
                     want, for example: CREATE KEYSPACE {keyspace} WITH replication = \
                     {{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}}; on a \
                     laptop or test cluster, --create-keyspace creates it with one replica"
                ),
            ));
        }
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {keyspace}.quiver_registry \
                     (id text PRIMARY KEY, revision bigint, registry text)"
                ),
                (),
            )
            .await
            .map_err(|error| unavailable("creating the registry table", error))?;
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {keyspace}.quiver_tiles \
                     (view_table text, entity blob, feature text, source text, \
                     tiles map<bigint, text>, deleted_through bigint static, \
                     PRIMARY KEY ((view_table, entity), feature, source))"
                ),
                (),
            )
            .await
            .map_err(|error| unavailable("creating the tiles table", error))?;
        add_deletion_mark(&session, &keyspace).await?;

        let prepare = |statement: String| {
            let session = &session;
            async move {
                session
                    .prepare(statement)
                    .await
                    .map_err(|error| unavailable("preparing a statement", error))
            }
        };
        let load_registry = prepare(format!(
            "SELECT revision, registry FROM {keyspace}.quiver_registry WHERE id = '{REGISTRY_ROW}'"
        ))
        .await?;
        let insert_registry = prepare(format!(
            "INSERT INTO {keyspace}.quiver_registry (id, revision, registry) \
             VALUES ('{REGISTRY_ROW}', ?, ?) IF NOT EXISTS"
        ))
        .await?;
        let update_registry = prepare(format!(
            "UPDATE {keyspace}.quiver_registry SET revision = ?, registry = ? \
             WHERE id = '{REGISTRY_ROW}' IF revision = ?"
        ))
        .await?;
        let insert_tile = prepare(format!(
            "UPDATE {keyspace}.quiver_tiles USING TTL ? SET tiles[?] = ? \
             WHERE view_table = ? AND entity = ? AND feature = ? AND source = ?"
        ))
        .await?;
        let select_tiles = with_cached_result_metadata(
            prepare(format!(
                "SELECT feature, source, tiles, deleted_through FROM {keyspace}.quiver_tiles \
                 WHERE view_table = ? AND entity = ?"
            ))
            .await?,
        );
        let select_feature_tiles = with_cached_result_metadata(
            prepare(format!(
                "SELECT feature, source, tiles, deleted_through FROM {keyspace}.quiver_tiles \
                 WHERE view_table = ? AND entity = ? AND feature = ?"
            ))
            .await?,
        );
        // A range deletion of every row, not a partition deletion: the static deletion mark
        // written beside it must survive it.
        let delete_tiles = prepare(format!(
            "DELETE FROM {keyspace}.quiver_tiles \
             WHERE view_table = ? AND entity = ? AND feature >= ''"
        ))
        .await?;
        let mark_deleted = prepare(format!(
            "UPDATE {keyspace}.quiver_tiles USING TTL {DELETION_MARK_TTL_SECS} \
             SET deleted_through = ? WHERE view_table = ? AND entity = ?"
        ))
        .await?;
        Ok(ScyllaStore {
            session,
            keyspace,
            load_registry,
            insert_registry,
            update_registry,
            insert_tile,
            select_tiles,
            select_feature_tiles,
            delete_tiles,
            mark_deleted,
            statements: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
        })
    }

    async fn prepared(&self, statement: String) -> Result<PreparedStatement, StoreError> {
        if let Some(prepared) = self
            .statements
            .lock()
            .expect("not poisoned")
            .get(&statement)
        {
            return Ok(prepared.clone());
        }
        let prepared = self
            .session
            .prepare(statement.as_str())
            .await
            .map_err(|error| unavailable("preparing a feature statement", error))?;
        let mut statements = self.statements.lock().expect("not poisoned");
        // Column sets are subsets of a view's features, so a client could make many; past the
        // bound the statements are forgotten and prepared again as they come back.
        if statements.len() >= MAX_REMEMBERED_STATEMENTS {
            statements.clear();
        }
        statements.insert(statement, prepared.clone());
        Ok(prepared)
    }

    /// The prepared read of `features` (and their write times) of one entity in `view`.
    async fn read_statement(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
    ) -> Result<Arc<FeatureRead>, StoreError> {
        if let Some(read) = self
            .reads
            .lock()
            .expect("not poisoned")
            .get(&view.view.name)
            && read.version == view.version
            && read.features.as_slice() == features
        {
            return Ok(read.clone());
        }
        let types = feature_types(&view.view, features)?;
        let selected: Vec<String> = quoted(features)
            .into_iter()
            .map(|column| format!("{column}, WRITETIME({column})"))
            .collect();
        let statement = format!(
            "SELECT {} FROM {} WHERE {}",
            selected.join(", "),
            self.table(view),
            key_conditions(entity).join(" AND ")
        );
        let read = Arc::new(FeatureRead {
            version: view.version,
            features: features.to_vec(),
            types,
            prepared: with_cached_result_metadata(self.prepared(statement).await?),
        });
        self.reads
            .lock()
            .expect("not poisoned")
            .insert(view.view.name.clone(), read.clone());
        Ok(read)
    }

    fn table(&self, view: &VersionedView) -> String {
        format!(
            "{}.\"{}\"",
            self.keyspace,
            view_table_name(&view.view.name, view.version)
        )
    }

    /// Names of the columns a table has now.
    async fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let rows = retry_evicted(|| {
            self.session.query_unpaged(
                "SELECT column_name FROM system_schema.columns \
                 WHERE keyspace_name = ? AND table_name = ?",
                (self.keyspace.as_str(), table),
            )
        })
        .await
        .map_err(|error| unavailable("reading table columns", error))?
        .into_rows_result()
        .map_err(|error| unavailable("reading table columns", error))?;
        rows.rows::<(String,)>()
            .map_err(|error| unavailable("reading table columns", error))?
            .map(|row| {
                row.map(|(name,)| name)
                    .map_err(|error| unavailable("reading table columns", error))
            })
            .collect()
    }

    async fn run(&self, context: &str, statement: String) -> Result<(), StoreError> {
        self.session
            .query_unpaged(statement, ())
            .await
            .map(|_| ())
            .map_err(|error| unavailable(context, error))
    }
}

/// The CQL type that stores a feature type. Timestamps are microseconds in a bigint, like the
/// write timestamps; embeddings are float lists (the `vector` type is not in every ScyllaDB).
/// Lists are frozen: one cell with one write timestamp, replaced whole, as a feature value is.
pub fn cql_type(value_type: ValueType) -> String {
    fn scalar(scalar: ScalarType) -> &'static str {
        match scalar {
            ScalarType::Bool => "boolean",
            ScalarType::Int32 => "int",
            ScalarType::Int64 | ScalarType::Timestamp => "bigint",
            ScalarType::Float32 => "float",
            ScalarType::Float64 => "double",
            ScalarType::String => "text",
            ScalarType::Bytes => "blob",
        }
    }
    match value_type {
        ValueType::Scalar(s) => scalar(s).to_owned(),
        ValueType::List(s) => format!("frozen<list<{}>>", scalar(s)),
        ValueType::Embedding { .. } => "frozen<list<float>>".to_owned(),
    }
}

impl OnlineStore for ScyllaStore {
    async fn load_registry(&self) -> Result<Option<Registry>, StoreError> {
        let rows = retry_evicted(|| self.session.execute_unpaged(&self.load_registry, ()))
            .await
            .map_err(|error| unavailable("loading the registry", error))?
            .into_rows_result()
            .map_err(|error| unavailable("loading the registry", error))?;
        let Some((revision, json)) = rows
            .maybe_first_row::<(i64, String)>()
            .map_err(|error| unavailable("loading the registry", error))?
        else {
            return Ok(None);
        };
        let registry: Registry = serde_json::from_str(&json).map_err(|error| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("the stored registry (revision {revision}) cannot be read: {error}"),
            )
        })?;
        Ok(Some(registry))
    }

    async fn publish_registry(
        &self,
        expected_revision: u64,
        registry: &Registry,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(registry)
            .map_err(|error| StoreError::new(StoreErrorKind::Invalid, error.to_string()))?;
        let revision = i64::try_from(registry.revision)
            .map_err(|_| StoreError::new(StoreErrorKind::Invalid, "revision out of range"))?;
        let result = if expected_revision == 0 {
            retry_evicted(|| {
                self.session
                    .execute_unpaged(&self.insert_registry, (revision, &json))
            })
            .await
        } else {
            let expected = i64::try_from(expected_revision)
                .map_err(|_| StoreError::new(StoreErrorKind::Invalid, "revision out of range"))?;
            retry_evicted(|| {
                self.session
                    .execute_unpaged(&self.update_registry, (revision, &json, expected))
            })
            .await
        }
        .map_err(|error| unavailable("publishing the registry", error))?;
        let row: Row = result
            .into_rows_result()
            .map_err(|error| unavailable("publishing the registry", error))?
            .first_row()
            .map_err(|error| unavailable("publishing the registry", error))?;
        match row.columns.first() {
            Some(Some(CqlValue::Boolean(true))) => Ok(()),
            Some(Some(CqlValue::Boolean(false))) => Err(StoreError::new(
                StoreErrorKind::Conflict,
                format!("the registry is no longer at revision {expected_revision}"),
            )),
            other => Err(unavailable(
                "publishing the registry",
                format!("unexpected lightweight transaction result {other:?}"),
            )),
        }
    }

    async fn ensure_view_table(
        &self,
        entity: &Entity,
        view: &FeatureView,
        version: u32,
    ) -> Result<(), StoreError> {
        let table = view_table_name(&view.name, version);
        let keyspace = &self.keyspace;
        let key_columns: Vec<String> = entity
            .keys
            .iter()
            .map(|key| {
                format!(
                    "\"{}\" {}",
                    key.name,
                    cql_type(ValueType::Scalar(key.key_type))
                )
            })
            .collect();
        let feature_columns: Vec<(String, String)> = view
            .features
            .iter()
            .filter(|feature| matches!(feature.derivation, Derivation::Field(_)))
            .map(|feature| (feature.name.to_string(), cql_type(feature.value_type)))
            .collect();
        let partition_key: Vec<String> = entity
            .keys
            .iter()
            .map(|key| format!("\"{}\"", key.name))
            .collect();
        let mut columns = key_columns;
        columns.extend(
            feature_columns
                .iter()
                .map(|(name, cql)| format!("\"{name}\" {cql}")),
        );
        self.run(
            "creating a view table",
            format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.\"{table}\" ({}, PRIMARY KEY (({})))",
                columns.join(", "),
                partition_key.join(", ")
            ),
        )
        .await?;
        let existing = self.columns(&table).await?;
        for (name, cql) in feature_columns {
            if !existing.contains(&name) {
                self.run(
                    "adding a feature column",
                    format!("ALTER TABLE {keyspace}.\"{table}\" ADD \"{name}\" {cql}"),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn quoted(names: impl IntoIterator<Item = impl std::fmt::Display>) -> Vec<String> {
    names
        .into_iter()
        .map(|name| format!("\"{name}\""))
        .collect()
}

/// The insert of one row's `features`, stamped with the event time and the rest of the TTL.
fn insert_statement(table: &str, entity: &Entity, features: &[&Name]) -> String {
    let mut columns = quoted(entity.keys.iter().map(|key| &key.name));
    columns.extend(quoted(features));
    let markers = vec!["?"; columns.len()].join(", ");
    format!(
        "INSERT INTO {table} ({}) VALUES ({markers}) USING TIMESTAMP ? AND TTL ?",
        columns.join(", ")
    )
}

/// A write's values sorted by feature name: rows naming the same features in another order
/// (a push's values are a protobuf map, in no order) share one statement, so a call of many
/// rows prepares once, not once per ordering, and the node's statement cache is not flooded.
fn by_name(values: &[(Name, Value)]) -> Vec<&(Name, Value)> {
    let mut sorted: Vec<&(Name, Value)> = values.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
}

/// `"<key field>" = ?` for each key field of `entity`, in key order.
fn key_conditions(entity: &Entity) -> Vec<String> {
    quoted(entity.keys.iter().map(|key| &key.name))
        .into_iter()
        .map(|column| format!("{column} = ?"))
        .collect()
}

impl FeatureStore for ScyllaStore {
    async fn write_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writes: &[FeatureWrite],
    ) -> Result<(), StoreError> {
        for write in writes {
            check_write(entity, &view.view, write)?;
        }
        let now_micros = now_micros();
        let table = self.table(view);
        // Writes of one call nearly always carry the same features: each distinct column set is
        // looked up (or prepared) once per call, not once per row.
        let mut prepared: HashMap<Vec<&Name>, PreparedStatement> = HashMap::new();
        let mut by_partition: HashMap<&EntityKey, Vec<(PreparedStatement, Vec<CqlValue>)>> =
            HashMap::new();
        for write in writes.iter().filter(|write| !write.values.is_empty()) {
            let ttl_secs = match view.view.ttl {
                None => 0,
                Some(ttl) => match remaining_ttl_secs(ttl, write.event_time_micros, now_micros) {
                    Some(remaining) => i32::try_from(remaining).unwrap_or(i32::MAX),
                    None => continue,
                },
            };
            let named = by_name(&write.values);
            let features: Vec<&Name> = named.iter().map(|(name, _)| name).collect();
            let statement = match prepared.get(&features) {
                Some(statement) => statement.clone(),
                None => {
                    let statement = self
                        .prepared(insert_statement(&table, entity, &features))
                        .await?;
                    prepared.insert(features, statement.clone());
                    statement
                }
            };
            let mut bound: Vec<CqlValue> = write.key.parts().iter().map(values::key_part).collect();
            bound.extend(named.iter().map(|(_, value)| values::to_cql(value)));
            bound.push(CqlValue::BigInt(write.event_time_micros));
            bound.push(CqlValue::Int(ttl_secs));
            match by_partition.get_mut(&write.key) {
                Some(rows) => rows.push((statement, bound)),
                None => {
                    by_partition.insert(&write.key, vec![(statement, bound)]);
                }
            }
        }
        // One request per partition (an unlogged batch when it has several rows, which is what
        // `benches/ingest.rs` found fastest), many partitions in flight.
        let requests = by_partition.into_values().flat_map(|rows| {
            let mut rows = rows.into_iter();
            std::iter::from_fn(move || {
                let chunk: Vec<_> = rows.by_ref().take(MAX_BATCH_ROWS).collect();
                (!chunk.is_empty()).then_some(chunk)
            })
        });
        futures::stream::iter(requests)
            .map(|mut rows| async move {
                let result = if rows.len() == 1 {
                    let (statement, bound) = rows.remove(0);
                    retry_evicted(|| self.session.execute_unpaged(&statement, &bound))
                        .await
                        .map(|_| ())
                } else {
                    let mut batch = Batch::new(BatchType::Unlogged);
                    let mut values = Vec::with_capacity(rows.len());
                    for (statement, bound) in rows {
                        batch.append_statement(statement);
                        values.push(bound);
                    }
                    retry_evicted(|| self.session.batch(&batch, &values))
                        .await
                        .map(|_| ())
                };
                result.map_err(|error| unavailable("writing features", error))
            })
            .buffer_unordered(MAX_WRITES_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn delete_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        event_time_micros: i64,
    ) -> Result<(), StoreError> {
        check_key(entity, key)?;
        // Everything stored goes, whatever its event time: the deletion holds as of the newest
        // event time it removes (a value from a clock running fast included), so a partition
        // tombstone at that time hides every cell stored now, and older ones written later.
        let stored = self
            .read_features(entity, view, &stored_features(view), key)
            .await?;
        let tiles = self.read_tiles(entity, view, key, None).await?;
        let effective = stored
            .iter()
            .flatten()
            .map(|value| value.event_time_micros)
            .chain(tiles.tiles.iter().map(|tile| tile.newest_event_micros))
            .chain(tiles.deleted_through_micros)
            .fold(event_time_micros, i64::max);
        let statement = format!(
            "DELETE FROM {} USING TIMESTAMP ? WHERE {}",
            self.table(view),
            key_conditions(entity).join(" AND ")
        );
        let prepared = self.prepared(statement).await?;
        let mut bound: Vec<CqlValue> = vec![CqlValue::BigInt(effective)];
        bound.extend(key.parts().iter().map(values::key_part));
        retry_evicted(|| self.session.execute_unpaged(&prepared, &bound))
            .await
            .map_err(|error| unavailable("deleting an entity", error))?;
        // Tiles are rewritten with the current time as their timestamp, so their deletion
        // carries the current time too: it removes every tile written before it. The mark
        // keeps events at or before the deletion out of the tiles written after it.
        let partition = tile_partition(view, key);
        retry_evicted(|| self.session.execute_unpaged(&self.delete_tiles, &partition))
            .await
            .map_err(|error| unavailable("deleting an entity's tiles", error))?;
        retry_evicted(|| {
            self.session
                .execute_unpaged(&self.mark_deleted, (effective, &partition.0, &partition.1))
        })
        .await
        .map_err(|error| unavailable("marking an entity deleted", error))?;
        Ok(())
    }

    async fn read_features(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        key: &EntityKey,
    ) -> Result<Vec<Option<StoredValue>>, StoreError> {
        if features.is_empty() {
            return Ok(Vec::new());
        }
        let read = self.read_statement(entity, view, features).await?;
        let bound: Vec<CqlValue> = key.parts().iter().map(values::key_part).collect();
        let row: Option<Row> =
            retry_evicted(|| self.session.execute_unpaged(&read.prepared, &bound))
                .await
                .map_err(|error| unavailable("reading features", error))?
                .into_rows_result()
                .map_err(|error| unavailable("reading features", error))?
                .maybe_first_row()
                .map_err(|error| unavailable("reading features", error))?;
        let Some(row) = row else {
            return Ok(vec![None; features.len()]);
        };
        let mut columns = row.columns.into_iter();
        let mut stored = Vec::with_capacity(features.len());
        for (name, &value_type) in features.iter().zip(&read.types) {
            let (value, written) = (columns.next().flatten(), columns.next().flatten());
            stored.push(match (value, written) {
                (Some(cql), Some(CqlValue::BigInt(event_time_micros))) => {
                    let value = values::from_cql(value_type, cql).ok_or_else(|| {
                        StoreError::new(
                            StoreErrorKind::Corrupt,
                            format!(
                                "{}:{name} holds a value that is not a {value_type}",
                                view.view.name
                            ),
                        )
                    })?;
                    Some(StoredValue {
                        value,
                        event_time_micros,
                    })
                }
                _ => None,
            });
        }
        Ok(stored)
    }

    async fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        tiles: &[Tile],
    ) -> Result<(), StoreError> {
        let now_micros = now_micros();
        let live = live_tiles(entity, &view.view, key, tiles, now_micros)?;
        let mut rows = Vec::with_capacity(live.len());
        for (tile, expires) in live {
            let ttl_secs = match expires {
                None => 0,
                Some(expires) => {
                    i32::try_from((expires - now_micros + 999_999) / 1_000_000).unwrap_or(i32::MAX)
                }
            };
            let cell = serde_json::to_string(&(
                tile.through_offset,
                tile.newest_event_micros,
                &tile.partial,
            ))
            .map_err(|error| {
                StoreError::new(StoreErrorKind::Invalid, format!("encoding a tile: {error}"))
            })?;
            let (view_table, entity_key) = tile_partition(view, key);
            rows.push((
                ttl_secs,
                tile.start_micros,
                cell,
                view_table,
                entity_key,
                tile.feature.to_string(),
                tile.source.clone(),
            ));
        }
        // All tiles of an entity share its partition: small unlogged batches of them.
        let chunks: Vec<Vec<_>> = rows.chunks(MAX_BATCH_ROWS).map(<[_]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|chunk| async move {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in &chunk {
                    batch.append_statement(self.insert_tile.clone());
                }
                retry_evicted(|| self.session.batch(&batch, &chunk))
                    .await
                    .map(|_| ())
                    .map_err(|error| unavailable("writing tiles", error))
            })
            .buffer_unordered(MAX_WRITES_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn read_tiles(
        &self,
        _entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> Result<EntityTiles, StoreError> {
        let (view_table, entity_key) = tile_partition(view, key);
        let read = match feature {
            None => {
                retry_evicted(|| {
                    self.session
                        .execute_unpaged(&self.select_tiles, (&view_table, &entity_key))
                })
                .await
            }
            Some(feature) => {
                retry_evicted(|| {
                    self.session.execute_unpaged(
                        &self.select_feature_tiles,
                        (&view_table, &entity_key, feature.as_str()),
                    )
                })
                .await
            }
        };
        let result = read
            .map_err(|error| unavailable("reading tiles", error))?
            .into_rows_result()
            .map_err(|error| unavailable("reading tiles", error))?;
        let unreadable = |error: &dyn std::fmt::Display| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "a tile of {key} in {} is unreadable: {error}",
                    view.view.name
                ),
            )
        };
        let mut stored = EntityTiles::default();
        for row in result
            .rows::<TileRow>()
            .map_err(|error| unreadable(&error))?
        {
            let (feature, source, cells, deleted_through) =
                row.map_err(|error| unreadable(&error))?;
            // Static: the same on every row, and alone on a row without tiles.
            stored.deleted_through_micros = deleted_through;
            let (Some(feature), Some(source)) = (feature, source) else {
                continue;
            };
            let feature: Name = feature.parse().map_err(|error| unreadable(&error))?;
            for (start_micros, cell) in cells.unwrap_or_default() {
                let (through_offset, newest_event_micros, partial): TileCell =
                    serde_json::from_str(&cell).map_err(|error| unreadable(&error))?;
                stored.tiles.push(Tile {
                    feature: feature.clone(),
                    start_micros,
                    source: source.clone(),
                    through_offset,
                    newest_event_micros,
                    partial,
                });
            }
        }
        Ok(stored)
    }
}

/// A row of `quiver_tiles` as read: feature, source, tiles and the entity's deletion mark;
/// feature and source are null on a partition that holds only the mark.
type TileRow = (
    Option<String>,
    Option<String>,
    Option<std::collections::BTreeMap<i64, String>>,
    Option<i64>,
);

/// One tile as a map cell, keyed by its start in the row of its feature and source: a JSON
/// array of its through offset, newest event time and partial.
type TileCell = (i64, i64, Partial);

/// Adds the deletion mark to a tiles table made before it existed.
async fn add_deletion_mark(session: &Session, keyspace: &Name) -> Result<(), StoreError> {
    let columns = retry_evicted(|| {
        session.query_unpaged(
            "SELECT column_name FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = 'quiver_tiles'",
            (keyspace.as_str(),),
        )
    })
    .await
    .map_err(|error| unavailable("reading the tiles table", error))?
    .into_rows_result()
    .map_err(|error| unavailable("reading the tiles table", error))?;
    let has_mark = columns
        .rows::<(String,)>()
        .map_err(|error| unavailable("reading the tiles table", error))?
        .any(|row| row.is_ok_and(|(name,)| name == "deleted_through"));
    if !has_mark {
        session
            .query_unpaged(
                format!("ALTER TABLE {keyspace}.quiver_tiles ADD deleted_through bigint static"),
                (),
            )
            .await
            .map_err(|error| unavailable("adding the deletion mark to the tiles table", error))?;
    }
    Ok(())
}

/// Runs a request again when the node answers that it no longer has the statement prepared
/// and the driver's own re-prepare did not cure it: Cassandra and ScyllaDB evict prepared
/// statements under memory pressure, on schema changes and on restarts. Each attempt
/// re-prepares. One is not enough: Cassandra's statement cache admits a new statement only
/// once it has been asked for more often than the one it would evict, so on a full cache a
/// freshly prepared statement is dropped again at once, for several tries in a row.
async fn retry_evicted<T, F>(mut attempt: impl FnMut() -> F) -> Result<T, ExecutionError>
where
    F: Future<Output = Result<T, ExecutionError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(error) if tries < EVICTED_STATEMENT_TRIES && is_unprepared(&error) => {
                tracing::debug!(%error, tries, "prepared statement evicted; retrying");
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Prepared feature statements kept by one store.
const MAX_REMEMBERED_STATEMENTS: usize = 1_024;

/// Tries of one request whose prepared statement the node keeps evicting: on a full test
/// Cassandra a new statement took up to five.
const EVICTED_STATEMENT_TRIES: u32 = 10;

/// Whether the node said it does not have the statement prepared.
fn is_unprepared(error: &ExecutionError) -> bool {
    matches!(
        error,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unprepared { .. },
            _
        ))
    )
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64)
}

/// The partition key of an entity's tiles in one view version.
fn tile_partition(view: &VersionedView, key: &EntityKey) -> (String, Vec<u8>) {
    (view_table_name(&view.view.name, view.version), key.encode())
}
