//! Aggregate tiles as stored: the tile's through offset, newest event time and partial, in one
//! JSON document. The feature, source and start are the adapter's key.
//!
//! Format 2 added the tiebreak of the values `first`, `last` and `last_k` keep (`tie`); format 1
//! tiles read with none.

use quiver_core::aggregate::{HyperLogLog, Partial, Stamped, Tile};
use quiver_core::name::Name;
use quiver_core::ties::Tiebreak;
use serde::{Deserialize, Serialize};

use crate::value::StoredValue;
use crate::{FormatError, decode_json, to_json, unversioned};

/// The tile format this Quiver writes, and the newest it reads.
pub const TILE_FORMAT: u32 = 2;

const WHAT: &str = "a stored tile";

/// A tile; written before the version was recorded, the embedded store's also held the key's
/// feature, source and start, which are ignored.
#[derive(Serialize, Deserialize)]
struct TileDocument {
    #[serde(default = "unversioned")]
    format_version: u32,
    through_offset: i64,
    newest_event_micros: i64,
    partial: StoredPartial,
}

/// A tile of the ScyllaDB adapter written before the version was recorded: a JSON array of the
/// through offset, newest event time and partial.
type UnversionedCell = (i64, i64, StoredPartial);

#[derive(Serialize, Deserialize)]
enum StoredPartial {
    Count(u64),
    IntSum(i64),
    FloatSum(f64),
    Min(StoredValue),
    Max(StoredValue),
    Avg { sum: f64, count: u64 },
    First(StoredStamped),
    Last(StoredStamped),
    LastK { k: u32, newest: Vec<StoredStamped> },
    Distinct(StoredSketch),
}

#[derive(Serialize, Deserialize)]
struct StoredStamped {
    event_time_micros: i64,
    /// Absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tie: Option<StoredTiebreak>,
    value: StoredValue,
}

/// The order of an event among those of the same time; shared with the remembered ties.
#[derive(Serialize, Deserialize)]
pub(crate) enum StoredTiebreak {
    Offset(i64),
    EventId(String),
}

impl From<&Tiebreak> for StoredTiebreak {
    fn from(tiebreak: &Tiebreak) -> Self {
        match tiebreak {
            Tiebreak::Offset(offset) => StoredTiebreak::Offset(*offset),
            Tiebreak::EventId(id) => StoredTiebreak::EventId(id.clone()),
        }
    }
}

impl From<StoredTiebreak> for Tiebreak {
    fn from(stored: StoredTiebreak) -> Self {
        match stored {
            StoredTiebreak::Offset(offset) => Tiebreak::Offset(offset),
            StoredTiebreak::EventId(id) => Tiebreak::EventId(id),
        }
    }
}

/// A HyperLogLog sketch: `(register, rank)` pairs while sparse, every rank once dense.
#[derive(Serialize, Deserialize)]
struct StoredSketch {
    sparse: Vec<(u16, u8)>,
    dense: Vec<u8>,
}

/// The stored form of `tile`, without its key.
pub fn encode_tile(tile: &Tile) -> Vec<u8> {
    to_json(&TileDocument {
        format_version: TILE_FORMAT,
        through_offset: tile.through_offset,
        newest_event_micros: tile.newest_event_micros,
        partial: stored_partial(&tile.partial),
    })
}

/// The tile stored as `bytes` under its feature, source and start.
pub fn decode_tile(
    feature: Name,
    source: String,
    start_micros: i64,
    bytes: &[u8],
) -> Result<Tile, FormatError> {
    let unversioned_array = bytes.trim_ascii_start().first() == Some(&b'[');
    let (through_offset, newest_event_micros, partial) = if unversioned_array {
        decode_json(WHAT, TILE_FORMAT, bytes, |_: &UnversionedCell| 1)?
    } else {
        let document = decode_json(WHAT, TILE_FORMAT, bytes, |document: &TileDocument| {
            document.format_version
        })?;
        (
            document.through_offset,
            document.newest_event_micros,
            document.partial,
        )
    };
    Ok(Tile {
        feature,
        start_micros,
        source,
        through_offset,
        newest_event_micros,
        partial: partial_of(partial)?,
    })
}

fn stored_stamped(stamped: &Stamped) -> StoredStamped {
    StoredStamped {
        event_time_micros: stamped.event_time_micros,
        tie: stamped.tiebreak.as_ref().map(StoredTiebreak::from),
        value: (&stamped.value).into(),
    }
}

fn stamped(stored: StoredStamped) -> Stamped {
    Stamped {
        event_time_micros: stored.event_time_micros,
        tiebreak: stored.tie.map(Tiebreak::from),
        value: stored.value.into(),
    }
}

fn stored_partial(partial: &Partial) -> StoredPartial {
    match partial {
        Partial::Count(count) => StoredPartial::Count(*count),
        Partial::IntSum(sum) => StoredPartial::IntSum(*sum),
        Partial::FloatSum(sum) => StoredPartial::FloatSum(*sum),
        Partial::Min(value) => StoredPartial::Min(value.into()),
        Partial::Max(value) => StoredPartial::Max(value.into()),
        Partial::Avg { sum, count } => StoredPartial::Avg {
            sum: *sum,
            count: *count,
        },
        Partial::First(first) => StoredPartial::First(stored_stamped(first)),
        Partial::Last(last) => StoredPartial::Last(stored_stamped(last)),
        Partial::LastK { k, newest } => StoredPartial::LastK {
            k: *k,
            newest: newest.iter().map(stored_stamped).collect(),
        },
        Partial::Distinct(sketch) => {
            let (sparse, dense) = sketch.registers();
            StoredPartial::Distinct(StoredSketch {
                sparse: sparse.to_vec(),
                dense: dense.to_vec(),
            })
        }
    }
}

fn partial_of(stored: StoredPartial) -> Result<Partial, FormatError> {
    Ok(match stored {
        StoredPartial::Count(count) => Partial::Count(count),
        StoredPartial::IntSum(sum) => Partial::IntSum(sum),
        StoredPartial::FloatSum(sum) => Partial::FloatSum(sum),
        StoredPartial::Min(value) => Partial::Min(value.into()),
        StoredPartial::Max(value) => Partial::Max(value.into()),
        StoredPartial::Avg { sum, count } => Partial::Avg { sum, count },
        StoredPartial::First(first) => Partial::First(stamped(first)),
        StoredPartial::Last(last) => Partial::Last(stamped(last)),
        StoredPartial::LastK { k, newest } => Partial::LastK {
            k,
            newest: newest.into_iter().map(stamped).collect(),
        },
        StoredPartial::Distinct(StoredSketch { sparse, dense }) => Partial::Distinct(
            HyperLogLog::from_registers(sparse, dense)
                .map_err(|detail| FormatError::Invalid { what: WHAT, detail })?,
        ),
    })
}
