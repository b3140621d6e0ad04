//! A client of `quiver.v1.FeatureService`: ask for a feature service or `view:feature`
//! references for a batch of entities, get typed values with their status and event time back.
//!
//! ```no_run
//! # async fn example() -> Result<(), quiver_client::ClientError> {
//! use quiver_client::{Entities, QuiverClient, Selection};
//! let mut client = QuiverClient::connect("http://127.0.0.1:50051").await?;
//! let table = client
//!     .get(
//!         Selection::Service("ranker_v1".into()),
//!         Entities::new().int64("user_id", [42, 7]),
//!     )
//!     .await?;
//! for column in &table.columns {
//!     println!("{}: {:?}", column.name, column.cells[0]);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;

use quiver_core::read::Status;
use quiver_core::value::Value;
use quiver_proto::v1 as pb;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::feature_service_server::SERVICE_NAME as FEATURE_SERVICE;
use quiver_proto::v1::key_column::Values;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{url}` is not a server address such as http://127.0.0.1:50051: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    /// The server refused the call; the status carries the gRPC code and the server's words.
    /// Not a `source`: its own text is the status again, which a report of the cause chain
    /// (`{:#}`) would print a second time.
    #[error("{}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The server's reply does not hold together, such as a typed column of the wrong length.
    #[error("the server's column `{column}` cannot be read: {source}")]
    Malformed {
        column: String,
        source: quiver_proto::columns::ColumnError,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Refused(status)
    }
}

/// Which features to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// A feature service by name.
    Service(String),
    /// `view:feature` references.
    Features(Vec<String>),
}

/// The entity rows of a request, as key columns of equal length.
#[derive(Debug, Clone, Default)]
pub struct Entities {
    columns: HashMap<String, pb::KeyColumn>,
}

impl Entities {
    pub fn new() -> Self {
        Entities::default()
    }

    /// Adds an int64 key column, such as `user_id`.
    pub fn int64(self, key: &str, values: impl IntoIterator<Item = i64>) -> Self {
        self.column(
            key,
            Values::Int64Values(pb::Int64List {
                values: values.into_iter().collect(),
            }),
        )
    }

    /// Adds a string key column.
    pub fn string(self, key: &str, values: impl IntoIterator<Item = String>) -> Self {
        self.column(
            key,
            Values::StringValues(pb::StringList {
                values: values.into_iter().collect(),
            }),
        )
    }

    fn column(mut self, key: &str, values: Values) -> Self {
        self.columns.insert(
            key.to_owned(),
            pb::KeyColumn {
                values: Some(values),
            },
        );
        self
    }
}

/// What was served for one entity row of one feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub status: Status,
    /// Set when the status is [`Status::Ok`] or [`Status::Stale`].
    pub value: Option<Value>,
    /// Microseconds since the Unix epoch; 0 unless a value is set.
    pub event_time_micros: i64,
}

/// One requested feature, with a cell per entity row in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// `view:feature`.
    pub name: String,
    pub cells: Vec<Cell>,
}

/// A reply: one column per requested feature, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
}

/// One row to push: an entity's key fields and feature values at one event time.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedRow {
    /// Key field name to value (`Value::Int64`, `Int32`, `String` or `Bytes`, as declared).
    pub keys: Vec<(String, Value)>,
    /// Feature name to value; features left out keep their stored values.
    pub values: Vec<(String, Value)>,
    /// Microseconds since the Unix epoch, UTC.
    pub event_time_micros: i64,
}

/// A connection to a Quiver server.
#[derive(Debug, Clone)]
pub struct QuiverClient {
    inner: FeatureServiceClient<Channel>,
    /// The same connection, for the health checking protocol.
    channel: Channel,
}

impl QuiverClient {
    /// Connects to `url`, such as `http://127.0.0.1:50051`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let channel = Channel::from_shared(url.to_owned())
            .map_err(|error| ClientError::Url {
                url: url.to_owned(),
                reason: error.to_string(),
            })?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(QuiverClient {
            inner: FeatureServiceClient::new(channel.clone()),
            channel,
        })
    }

    /// Whether the server reports `quiver.v1.FeatureService` as serving, by the gRPC health
    /// checking protocol (what Kubernetes probes ask).
    pub async fn is_serving(&self) -> Result<bool, ClientError> {
        let reply = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: FEATURE_SERVICE.to_owned(),
            })
            .await?
            .into_inner();
        Ok(reply.status() == ServingStatus::Serving)
    }

    /// Reads `selection` for every row of `entities`.
    pub async fn get(
        &mut self,
        selection: Selection,
        entities: Entities,
    ) -> Result<Table, ClientError> {
        use quiver_proto::v1::get_online_features_request::Features;
        let features = match selection {
            Selection::Service(name) => Features::FeatureService(name),
            Selection::Features(features) => Features::FeatureList(pb::FeatureList { features }),
        };
        let reply = self
            .inner
            .get_online_features(pb::GetOnlineFeaturesRequest {
                features: Some(features),
                entities: entities.columns,
                value_format: pb::ValueFormat::Typed.into(),
            })
            .await?
            .into_inner();
        let columns = reply
            .features
            .into_iter()
            .map(column_of_reply)
            .collect::<Result<_, _>>()?;
        Ok(Table { columns })
    }

    /// Pushes `rows` of `view` (`"view"` or `"view@2"`) and returns how many were written. If
    /// any row is bad the server refuses the whole call (INVALID_ARGUMENT naming the row) and
    /// writes nothing.
    pub async fn write(&mut self, view: &str, rows: Vec<PushedRow>) -> Result<u64, ClientError> {
        let wire = |pairs: Vec<(String, Value)>| {
            pairs
                .into_iter()
                .map(|(name, value)| (name, quiver_proto::values::to_wire(&value)))
                .collect()
        };
        let reply = self
            .inner
            .write_features(pb::WriteFeaturesRequest {
                feature_view: view.to_owned(),
                rows: rows
                    .into_iter()
                    .map(|row| pb::FeatureRow {
                        keys: wire(row.keys),
                        values: wire(row.values),
                        event_time_micros: row.event_time_micros,
                    })
                    .collect(),
            })
            .await?
            .into_inner();
        Ok(reply.rows_written)
    }
}

/// A reply column as cells: from its typed array, or from its `Value`s where the server
/// answered in that format (a server from before typed columns does).
fn column_of_reply(column: pb::FeatureColumn) -> Result<Column, ClientError> {
    let rows = column.statuses.len();
    let values: Vec<Option<Value>> = match column.typed {
        Some(typed) => quiver_proto::columns::typed_rows(typed, rows)
            .map_err(|source| ClientError::Malformed {
                column: column.name.clone(),
                source,
            })?
            .into_iter()
            .map(Some)
            .collect(),
        None => column
            .values
            .into_iter()
            .map(quiver_proto::values::from_wire)
            .collect(),
    };
    let cells = values
        .into_iter()
        .zip(column.statuses)
        .zip(column.event_time_micros)
        .map(|((value, status), event_time_micros)| {
            let status = match pb::FeatureStatus::try_from(status) {
                Ok(pb::FeatureStatus::Ok) => Status::Ok,
                Ok(pb::FeatureStatus::Expired) => Status::Expired,
                Ok(pb::FeatureStatus::Stale) => Status::Stale,
                _ => Status::NotFound,
            };
            Cell {
                // A typed column holds a zero where a row has no value.
                value: value.filter(|_| matches!(status, Status::Ok | Status::Stale)),
                status,
                event_time_micros,
            }
        })
        .collect();
    Ok(Column {
        name: column.name,
        cells,
    })
}
