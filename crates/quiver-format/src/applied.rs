//! Applied event ids as the embedded store keeps them: a format byte, the expiry and offset
//! (big-endian), then the source in UTF-8. The id itself is the entry's key.
//!
//! The ScyllaDB adapter keeps the same three fields as a typed CQL tuple, which its table
//! definition pins.

use quiver_core::aggregate::AppliedEvent;

use crate::FormatError;

/// The applied event format this Quiver writes, and the newest it reads.
pub const APPLIED_FORMAT: u8 = 1;

const WHAT: &str = "a stored event id";

/// The stored form of `applied`, without its id.
pub fn encode_applied(applied: &AppliedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + applied.source.len());
    out.push(APPLIED_FORMAT);
    out.extend_from_slice(&applied.expires_micros.to_be_bytes());
    out.extend_from_slice(&applied.offset.to_be_bytes());
    out.extend_from_slice(applied.source.as_bytes());
    out
}

/// The applied event stored as `bytes` under `event_id`.
pub fn decode_applied(event_id: String, bytes: &[u8]) -> Result<AppliedEvent, FormatError> {
    let invalid = |detail: &str| FormatError::Invalid {
        what: WHAT,
        detail: detail.to_owned(),
    };
    match bytes.first() {
        None => return Err(invalid("no bytes")),
        Some(&APPLIED_FORMAT) => {}
        Some(&found) if found > APPLIED_FORMAT => {
            return Err(FormatError::Newer {
                what: WHAT,
                found: found.into(),
                supported: APPLIED_FORMAT.into(),
            });
        }
        Some(found) => return Err(invalid(&format!("the unknown format byte {found}"))),
    }
    let number = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .and_then(|slice| slice.try_into().ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| invalid("fewer than 17 bytes"))
    };
    Ok(AppliedEvent {
        event_id,
        expires_micros: number(1..9)?,
        offset: number(9..17)?,
        source: String::from_utf8(bytes[17..].to_vec())
            .map_err(|_| invalid("a source that is not UTF-8"))?,
    })
}

/// When a stored applied event expires, read without decoding the rest.
pub fn applied_expiry(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(1..9)?.try_into().ok()?))
}
