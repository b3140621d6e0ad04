//! Quiver's offline log and training data: every event the ingester accepts, per view version,
//! as a Hive-partitioned Parquet dataset, and point-in-time correct feature values from it.
//!
//! - [`columns`]: an event's Avro fields as Arrow columns, and events rebuilt from them.
//! - [`layout`]: the dataset's folders and file names.
//! - [`log`]: [`OfflineLog`], appending to and reading the dataset in an object store.
//! - [`backfill`]: the tiles of aggregates from events logged before they were counted live.
//! - [`consistency`]: a sample of online values against the same values recomputed from the log.
//! - [`historical`]: point-in-time feature values for rows of entity keys and timestamps.
//! - [`rows`]: those rows, read from Parquet or CSV, and the Parquet file of the answer.

pub mod backfill;
pub mod columns;
pub mod consistency;
pub mod historical;
pub mod layout;
pub mod log;
mod pushes;
pub mod rows;
mod values;

pub use backfill::{BackfillError, BackfillSummary, backfill};
pub use columns::{LogColumns, LoggedEvent};
pub use historical::{Retrieval, retrieve};
pub use log::{Encoded, LogFile, OfflineLog};
pub use rows::{EntityRows, write_parquet};

/// Why the offline log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offline log location {0}")]
    Location(String),
    #[error("{0}")]
    Schema(String),
    #[error("offline log storage failed")]
    Store(#[from] object_store::Error),
    #[error("Arrow data is malformed")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("Parquet data is malformed")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("the log's registry.json cannot be read")]
    Registry(#[from] quiver_format::FormatError),
    #[error("entity rows: {0}")]
    Rows(String),
    #[error(
        "the event logged at {source_name}@{offset} no longer projects onto view `{view}`: {detail}"
    )]
    Projection {
        source_name: String,
        offset: i64,
        view: String,
        detail: String,
    },
    #[error("{path}")]
    InFile {
        path: String,
        #[source]
        source: Box<LogError>,
    },
}

impl LogError {
    /// A logged event that the view's projection refuses now.
    pub(crate) fn unprojectable(
        logged: &LoggedEvent,
        view: &quiver_core::name::Name,
        rejection: quiver_avro::project::Rejection,
    ) -> LogError {
        LogError::Projection {
            source_name: logged.source.clone(),
            offset: logged.offset,
            view: view.to_string(),
            detail: rejection.to_string(),
        }
    }

    fn in_file(self, path: &str) -> LogError {
        LogError::InFile {
            path: path.to_owned(),
            source: Box::new(self),
        }
    }
}
