//! The online store port: where the registry lives and where feature tables are created.
//!
//! Adapters implement [`OnlineStore`]: ScyllaDB in production (`quiver-scylla`), an embedded
//! store for the quickstart and tests. One contract suite (`quiver_testkit::contract`) runs
//! against every adapter. Later issues add the feature reads and writes to this port.

use std::fmt;
use std::future::Future;

use crate::definition::{Entity, FeatureView, Registry};

/// What kind of failure a store reported; callers branch on this, people read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A compare-and-set lost: someone else changed the registry first.
    Conflict,
    /// The store could not be reached or did not answer in time.
    Unavailable,
    /// Stored data could not be read back, such as a registry written by a newer Quiver.
    Corrupt,
    /// The store refused the request as malformed.
    Invalid,
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Conflict => "conflict",
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::Corrupt => "corrupt data in the store",
            StoreErrorKind::Invalid => "request refused by the store",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

/// The online store, as the rest of Quiver sees it.
pub trait OnlineStore: Send + Sync {
    /// The applied registry, or `None` before the first apply.
    fn load_registry(&self) -> impl Future<Output = Result<Option<Registry>, StoreError>> + Send;

    /// Stores `registry` if the stored one still has revision `expected_revision` (0: none is
    /// stored yet). Otherwise fails with [`StoreErrorKind::Conflict`] and changes nothing, so two
    /// racing applies can never interleave their registries.
    fn publish_registry(
        &self,
        expected_revision: u64,
        registry: &Registry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes sure the table for one version of a view exists with a column for every feature
    /// read from a field: creates it, or adds the columns of new features. Idempotent.
    fn ensure_view_table(
        &self,
        entity: &Entity,
        view: &FeatureView,
        version: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
