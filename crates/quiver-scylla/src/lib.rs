//! The ScyllaDB adapter of the online store port, speaking CQL that Cassandra accepts too.
//!
//! The registry is one row of `quiver_registry`, holding the registry as JSON and its revision;
//! it is replaced with a lightweight transaction (`IF revision = ?`), so concurrent applies cannot
//! interleave. Each view version has a table `<view>_v<version>`, partitioned by the entity key,
//! with one typed column per feature read from a field. Feature writes carry the event time as
//! `USING TIMESTAMP` and the rest of the view's TTL as `USING TTL`; reads take `WRITETIME` back
//! as the event time.
//!
//! Aggregate tiles live in the same row as the entity's values, so that one read of one
//! partition gives serving everything of an entity in a view ([`tiles`] has the layout). Names
//! are lower case, so the tile columns' quoted names, which start with an underscore, never
//! clash with a feature's. Keyspaces from before kept tiles in a table of their own; [`migrate`]
//! moves them over when a store connects.

mod migrate;
mod tiles;
mod values;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
use quiver_core::aggregate::{EntityTiles, TileChanges};
use quiver_core::definition::{
    Derivation, Entity, FeatureView, Registry, VersionedView, view_table_name,
};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::read::stored_features;
use quiver_core::secret::Secret;
use quiver_core::store::{
    EntityRow, FeatureStore, FeatureWrite, OnlineStore, StoreError, StoreErrorKind, StoredValue,
    check_key, check_write, feature_types, live_applied, live_tiles, remaining_ttl_secs,
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
    /// Feature statements, prepared once per table and column set.
    statements: Mutex<HashMap<String, PreparedStatement>>,
    /// The read of each feature view, per kind of read, as of the version and features it
    /// last read: the serving path reads the same column set again and again, and finds it
    /// here without building the statement's text or looking up the features' types. (Reads of
    /// another version or column set rebuild the entry from `statements`, without a round
    /// trip.) Per kind, so that an ingester's tile reads and a server's entity reads in one
    /// process do not keep replacing each other's entry.
    reads: Mutex<HashMap<(Name, ReadKind), Arc<FeatureRead>>>,
}

/// What a prepared read selects of an entity's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReadKind {
    /// Some features, with their write times.
    Features,
    /// Every stored feature, then the tiles and the deletion mark.
    Entity,
    /// The tiles, the deletion mark and the remembered ties: what the ingester folds into.
    Tiles,
    /// The same and the ids of the events counted, for a view that deduplicates.
    TilesAndApplied,
}

impl ReadKind {
    fn selects_tiles(self) -> bool {
        match self {
            ReadKind::Features => false,
            ReadKind::Entity | ReadKind::Tiles | ReadKind::TilesAndApplied => true,
        }
    }

    fn selects_ties(self) -> bool {
        match self {
            ReadKind::Features | ReadKind::Entity => false,
            ReadKind::Tiles | ReadKind::TilesAndApplied => true,
        }
    }

    fn selects_applied(self) -> bool {
        match self {
            ReadKind::Features | ReadKind::Entity | ReadKind::Tiles => false,
            ReadKind::TilesAndApplied => true,
        }
    }
}

/// A prepared read of some features of one view version, with their types in read order, and
/// the entity's tiles after them for the kinds of read that select them.
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
        let store = ScyllaStore {
            session,
            keyspace,
            load_registry,
            insert_registry,
            update_registry,
            statements: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
        };
        migrate::tiles_into_view_tables(&store).await?;
        migrate::columns_of_every_view(&store).await?;
        Ok(store)
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

    /// The prepared read of `features` (and their write times) of one entity in `view`, and of
    /// its tiles and deletion mark after them when `kind` selects them.
    async fn read_statement(
        &self,
        entity: &Entity,
        view: &VersionedView,
        features: &[Name],
        kind: ReadKind,
    ) -> Result<Arc<FeatureRead>, StoreError> {
        let remembered = (view.view.name.clone(), kind);
        if let Some(read) = self.reads.lock().expect("not poisoned").get(&remembered)
            && read.version == view.version
            && read.features.as_slice() == features
        {
            return Ok(read.clone());
        }
        let types = feature_types(&view.view, features)?;
        let mut selected: Vec<String> = quoted(features)
            .into_iter()
            .map(|column| format!("{column}, WRITETIME({column})"))
            .collect();
        if kind.selects_tiles() {
            selected.push(format!("{}, {}", tiles::TILES, tiles::DELETED_THROUGH));
        }
        if kind.selects_ties() {
            selected.push(tiles::TIES.to_owned());
        }
        if kind.selects_applied() {
            selected.push(tiles::APPLIED.to_owned());
        }
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
            .insert(remembered, read.clone());
        Ok(read)
    }

    /// The row of one entity that `read` selects, if there is one.
    async fn read_row(
        &self,
        read: &FeatureRead,
        key: &EntityKey,
        context: &str,
    ) -> Result<Option<Row>, StoreError> {
        let bound: Vec<CqlValue> = key.parts().iter().map(values::key_part).collect();
        retry_evicted(|| self.session.execute_unpaged(&read.prepared, &bound))
            .await
            .map_err(|error| unavailable(context, error))?
            .into_rows_result()
            .map_err(|error| unavailable(context, error))?
            .maybe_first_row()
            .map_err(|error| unavailable(context, error))
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
        let registry = quiver_format::decode_registry(json.as_bytes()).map_err(|error| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "the stored registry (revision {revision}) cannot be read: {}",
                    error.with_causes()
                ),
            )
        })?;
        Ok(Some(registry))
    }

    async fn publish_registry(
        &self,
        expected_revision: u64,
        registry: &Registry,
    ) -> Result<(), StoreError> {
        let json = String::from_utf8(quiver_format::encode_registry(registry))
            .expect("the registry's storage format is JSON, which is UTF-8");
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
            .chain(
                tiles::COLUMNS
                    .iter()
                    .map(|(name, cql)| ((*name).to_owned(), (*cql).to_owned())),
            )
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
            if existing.contains(&name) {
                continue;
            }
            let added = self
                .run(
                    "adding a column",
                    format!("ALTER TABLE {keyspace}.\"{table}\" ADD \"{name}\" {cql}"),
                )
                .await;
            // Processes connecting at once may race to add the same column: one wins.
            if let Err(error) = added
                && !self.columns(&table).await?.contains(&name)
            {
                return Err(error);
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
        let EntityRow { values, tiles } = self.read_entity(entity, view, key).await?;
        let effective = values
            .iter()
            .flatten()
            .map(|value| value.event_time_micros)
            .chain(tiles.tiles.iter().map(|tile| tile.newest_event_micros))
            .chain(tiles.deleted_through_micros)
            .fold(event_time_micros, i64::max);
        let table = self.table(view);
        let conditions = key_conditions(entity).join(" AND ");
        // One partition, so one batch, applied as one mutation. The row tombstone at the
        // effective time hides every value stored now and older ones written later. Tiles are
        // rewritten with the current time as their timestamp, so their deletion carries the
        // current time: it removes every tile written before it. The mark, stamped after both,
        // keeps events at or before the deletion out of the tiles written after it.
        // The event ids and the remembered ties, like the tiles, are written at the current
        // time; only a view that deduplicates has event ids.
        let rewritten = match view.view.dedup {
            Some(_) => format!("{}, {}, {}", tiles::TILES, tiles::TIES, tiles::APPLIED),
            None => format!("{}, {}", tiles::TILES, tiles::TIES),
        };
        let statements = [
            format!("DELETE FROM {table} USING TIMESTAMP ? WHERE {conditions}"),
            format!("DELETE {rewritten} FROM {table} WHERE {conditions}"),
            tiles::mark_statement(&table, entity),
        ];
        let key_values: Vec<CqlValue> = key.parts().iter().map(values::key_part).collect();
        let with_key = |mut leading: Vec<CqlValue>| {
            leading.extend(key_values.iter().cloned());
            leading
        };
        let bound = [
            with_key(vec![CqlValue::BigInt(effective)]),
            with_key(Vec::new()),
            with_key(tiles::mark_values(effective, now_micros())),
        ];
        let mut batch = Batch::new(BatchType::Unlogged);
        for statement in statements {
            batch.append_statement(self.prepared(statement).await?);
        }
        retry_evicted(|| self.session.batch(&batch, &bound[..]))
            .await
            .map_err(|error| unavailable("deleting an entity", error))?;
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
        let read = self
            .read_statement(entity, view, features, ReadKind::Features)
            .await?;
        match self.read_row(&read, key, "reading features").await? {
            None => Ok(vec![None; features.len()]),
            Some(row) => stored_values(view, &read, &mut row.columns.into_iter()),
        }
    }

    async fn read_entity(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
    ) -> Result<EntityRow, StoreError> {
        let read = self
            .read_statement(entity, view, &stored_features(view), ReadKind::Entity)
            .await?;
        let Some(row) = self.read_row(&read, key, "reading an entity").await? else {
            return Ok(EntityRow {
                values: vec![None; read.features.len()],
                tiles: EntityTiles::default(),
            });
        };
        let mut columns = row.columns.into_iter();
        let values = stored_values(view, &read, &mut columns)?;
        let tiles = tiles::from_columns(view, key, None, &mut columns)?;
        Ok(EntityRow { values, tiles })
    }

    async fn write_tiles(
        &self,
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        changes: &TileChanges,
    ) -> Result<(), StoreError> {
        let now_micros = now_micros();
        let live = live_tiles(entity, &view.view, key, &changes.tiles, now_micros)?;
        let applied = live_applied(&view.view, &changes.applied, now_micros)?;
        let table = self.table(view);
        let tile_statement = self
            .prepared(tiles::insert_statement(&table, entity))
            .await?;
        let applied_statement = if applied.is_empty() {
            None
        } else {
            Some(
                self.prepared(tiles::applied_statement(&table, entity))
                    .await?,
            )
        };
        let key_values: Vec<CqlValue> = key.parts().iter().map(values::key_part).collect();
        let mut rows: Vec<_> = live
            .into_iter()
            .map(|(tile, expires)| {
                let bound = tiles::insert_values(tile, expires, now_micros, &key_values);
                (tile_statement.clone(), bound)
            })
            .collect();
        if let Some(ties) = &changes.ties {
            let statement = self.prepared(tiles::ties_statement(&table, entity)).await?;
            rows.push((statement, tiles::ties_values(ties, &key_values)));
        }
        rows.extend(
            applied
                .into_iter()
                .zip(applied_statement.iter().cycle())
                .map(|(applied, statement)| {
                    let bound = tiles::applied_values(applied, now_micros, &key_values);
                    (statement.clone(), bound)
                }),
        );
        // All of an entity's tiles and event ids share its partition: small unlogged batches.
        // Owned, since a borrowed chunk would make the write's future not `Send`.
        let chunks: Vec<Vec<(PreparedStatement, Vec<CqlValue>)>> =
            rows.chunks(MAX_BATCH_ROWS).map(<[_]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|chunk| async move {
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut bound = Vec::with_capacity(chunk.len());
                for (statement, values) in chunk {
                    batch.append_statement(statement);
                    bound.push(values);
                }
                retry_evicted(|| self.session.batch(&batch, &bound))
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
        entity: &Entity,
        view: &VersionedView,
        key: &EntityKey,
        feature: Option<&Name>,
    ) -> Result<EntityTiles, StoreError> {
        let kind = match view.view.dedup {
            Some(_) => ReadKind::TilesAndApplied,
            None => ReadKind::Tiles,
        };
        let read = self.read_statement(entity, view, &[], kind).await?;
        let Some(row) = self.read_row(&read, key, "reading tiles").await? else {
            return Ok(EntityTiles::default());
        };
        let mut columns = row.columns.into_iter();
        let tiles = tiles::from_columns(view, key, feature, &mut columns)?;
        let ties = tiles::ties_from_column(view, key, columns.next().flatten())?;
        let applied = match kind.selects_applied() {
            true => tiles::applied_from_column(view, key, columns.next().flatten())?,
            false => Vec::new(),
        };
        Ok(EntityTiles {
            applied,
            ties,
            ..tiles
        })
    }
}

/// The stored values that `read` selected, taken from the front of a row's `columns`: each
/// feature's value and write time.
fn stored_values(
    view: &VersionedView,
    read: &FeatureRead,
    columns: &mut impl Iterator<Item = Option<CqlValue>>,
) -> Result<Vec<Option<StoredValue>>, StoreError> {
    let mut stored = Vec::with_capacity(read.features.len());
    for (name, &value_type) in read.features.iter().zip(&read.types) {
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
