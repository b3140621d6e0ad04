//! An entity's remembered events, against which later ones of the same millisecond are ordered
//! (`quiver_core::ties`), as stored: one JSON document led by its `format_version`.

use std::collections::BTreeSet;

use quiver_core::ties::TiedEvent;
use serde::{Deserialize, Serialize};

use crate::tile::StoredTiebreak;
use crate::{FormatError, decode_json, to_json};

/// The format of remembered ties this Quiver writes, and the newest it reads.
pub const TIES_FORMAT: u32 = 1;

const WHAT: &str = "the stored ties of an entity";

#[derive(Serialize, Deserialize)]
struct TiesDocument {
    format_version: u32,
    events: Vec<StoredTiedEvent>,
}

#[derive(Serialize, Deserialize)]
struct StoredTiedEvent {
    event_time_micros: i64,
    tie: StoredTiebreak,
    slot: u16,
    /// Positions in the view's declared features.
    features: Vec<u16>,
}

/// The stored form of an entity's remembered events.
pub fn encode_ties(events: &[TiedEvent]) -> Vec<u8> {
    to_json(&TiesDocument {
        format_version: TIES_FORMAT,
        events: events
            .iter()
            .map(|event| StoredTiedEvent {
                event_time_micros: event.event_time_micros,
                tie: (&event.tiebreak).into(),
                slot: event.slot,
                features: event.features.iter().copied().collect(),
            })
            .collect(),
    })
}

/// The remembered events stored as `bytes`.
pub fn decode_ties(bytes: &[u8]) -> Result<Vec<TiedEvent>, FormatError> {
    let document = decode_json(WHAT, TIES_FORMAT, bytes, |document: &TiesDocument| {
        document.format_version
    })?;
    Ok(document
        .events
        .into_iter()
        .map(|event| TiedEvent {
            event_time_micros: event.event_time_micros,
            tiebreak: event.tie.into(),
            slot: event.slot,
            features: event.features.into_iter().collect::<BTreeSet<u16>>(),
        })
        .collect())
}
