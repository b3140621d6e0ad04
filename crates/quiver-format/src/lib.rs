//! The storage format: what the online store adapters write for the registry, aggregate tiles,
//! applied event ids and feature values, as explicit types with a format version.
//!
//! The domain types of `quiver-core` are not serialized: each stored thing has its own type
//! here, converted to and from the domain, so that a change of the domain never silently
//! changes bytes already stored. Golden files in `golden/` pin the bytes of every format, and
//! each adapter reads them back. A reader refuses a format newer than it knows, naming both.
//!
//! | stored thing | encoding | format |
//! |---|---|---|
//! | registry | JSON object with `format_version` | [`REGISTRY_FORMAT`] |
//! | tile | JSON object with `format_version` | [`TILE_FORMAT`] |
//! | applied event id | bytes led by a format byte | [`APPLIED_FORMAT`] |
//! | an entity's remembered ties | JSON object with `format_version` | [`TIES_FORMAT`] |
//! | feature value (embedded store) | JSON, the shape the registry and tiles use | — |
//!
//! Registries and tiles written before the version was recorded have the shape of format 1
//! without the field (tiles of the ScyllaDB adapter as a JSON array), and read as format 1.

mod applied;
mod registry;
mod ties;
mod tile;
mod value;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

pub use applied::{APPLIED_FORMAT, applied_expiry, decode_applied, encode_applied};
pub use registry::{REGISTRY_FORMAT, decode_registry, encode_registry};
pub use ties::{TIES_FORMAT, decode_ties, encode_ties};
pub use tile::{TILE_FORMAT, decode_tile, encode_tile};
pub use value::{decode_value, encode_value};

/// Why stored bytes could not be read.
#[derive(Debug, Error)]
pub enum FormatError {
    #[error(
        "{what} is in storage format {found}, newer than format {supported}, the newest this \
         Quiver reads; read it with the Quiver release that wrote it, or a later one"
    )]
    Newer {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what} is not in storage format {supported}")]
    Malformed {
        what: &'static str,
        supported: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} holds {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl FormatError {
    /// The error and its causes in one line, for the store errors that carry it as text.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

/// The format of documents written before the version was recorded.
fn unversioned() -> u32 {
    1
}

/// Only the version of a JSON document, read when the whole document would not parse.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default = "unversioned")]
    format_version: u32,
}

/// Parses a JSON document of format `supported` (or older), whose version `version_of` tells.
/// A document that does not parse is reported as newer when its version says so, since a newer
/// format may have another shape.
fn decode_json<T: DeserializeOwned>(
    what: &'static str,
    supported: u32,
    bytes: &[u8],
    version_of: impl Fn(&T) -> u32,
) -> Result<T, FormatError> {
    let newer = |found| FormatError::Newer {
        what,
        found,
        supported,
    };
    match serde_json::from_slice::<T>(bytes) {
        Ok(document) if version_of(&document) > supported => Err(newer(version_of(&document))),
        Ok(document) => Ok(document),
        Err(source) => match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { format_version }) if format_version > supported => {
                Err(newer(format_version))
            }
            _ => Err(FormatError::Malformed {
                what,
                supported,
                source,
            }),
        },
    }
}

/// Serializes a storage type, whose fields are all representable in JSON.
fn to_json(document: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(document).expect("storage types have string keys and serialize to JSON")
}
