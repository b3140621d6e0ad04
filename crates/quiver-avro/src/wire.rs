//! The Confluent wire format: a zero magic byte, a 4-byte big-endian schema id, then the Avro datum.
//!
//! This is what Confluent's serializers and Schema Registry clients put in each Kafka record value,
//! so a record carries the id of the schema it was written with.

use thiserror::Error;

/// The first byte of every Confluent-framed record.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// A framed record, borrowed from the bytes it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The writer schema's id in the Schema Registry (or in the local id mapping).
    pub schema_id: u32,
    /// The Avro binary datum, written with that schema.
    pub datum: &'a [u8],
}

/// Bytes that are not a Confluent-framed record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireFormatError {
    #[error(
        "record is {length} bytes, shorter than the {HEADER_LEN}-byte Confluent header (magic byte and schema id)"
    )]
    TooShort { length: usize },
    #[error(
        "record starts with byte {found:#04x}, not the Confluent magic byte 0x00; is it plain Avro or another format?"
    )]
    BadMagic { found: u8 },
}

/// Splits a record into its schema id and Avro datum.
pub fn decode(record: &[u8]) -> Result<Framed<'_>, WireFormatError> {
    let Some((header, datum)) = record.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireFormatError::TooShort {
            length: record.len(),
        });
    };
    let [magic, id @ ..] = *header;
    if magic != MAGIC_BYTE {
        return Err(WireFormatError::BadMagic { found: magic });
    }
    Ok(Framed {
        schema_id: u32::from_be_bytes(id),
        datum,
    })
}

/// Frames an Avro datum written with schema `schema_id`.
pub fn encode(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + datum.len());
    record.push(MAGIC_BYTE);
    record.extend_from_slice(&schema_id.to_be_bytes());
    record.extend_from_slice(datum);
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn framing_round_trips(schema_id in any::<u32>(), datum in proptest::collection::vec(any::<u8>(), 0..64)) {
            let record = encode(schema_id, &datum);
            prop_assert_eq!(decode(&record), Ok(Framed { schema_id, datum: &datum }));
        }
    }

    #[test]
    fn matches_the_bytes_confluent_serializers_write() {
        // Schema id 258 = 0x00000102, followed by the Avro long 1 (zig-zag 0x02).
        let record = [0x00, 0x00, 0x00, 0x01, 0x02, 0x02];
        assert_eq!(
            decode(&record),
            Ok(Framed {
                schema_id: 258,
                datum: &[0x02]
            })
        );
        assert_eq!(encode(258, &[0x02]), record);
    }

    #[test]
    fn refuses_records_that_are_not_framed() {
        assert_eq!(
            decode(&[0x00, 0x00, 0x01]),
            Err(WireFormatError::TooShort { length: 3 })
        );
        let error = decode(&[0x02, 0x00, 0x00, 0x00, 0x01, 0x02]).unwrap_err();
        assert_eq!(error, WireFormatError::BadMagic { found: 0x02 });
        assert!(error.to_string().contains("plain Avro"), "{error}");
    }
}
