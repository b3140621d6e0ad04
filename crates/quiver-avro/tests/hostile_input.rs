//! Hostile record values: whatever bytes a producer writes, decoding returns an error instead of
//! panicking or aborting, and a record cannot make the decoder reserve room for items it does
//! not hold.

use std::sync::Arc;

use apache_avro::Schema;
use proptest::prelude::*;
use quiver_avro::decode::{DecodeError, Decoder, MAX_DECODED_LEN};
use quiver_avro::wire;

const PROFILE: &str = r#"{"type":"record","name":"P","fields":[
    {"name":"languages","type":{"type":"array","items":"string"}},
    {"name":"scores","type":{"type":"map","values":"double"}},
    {"name":"bio","type":["null","string"]}]}"#;

/// The zig-zag varint of `n`, as Avro writes a long.
fn long(n: i64) -> Vec<u8> {
    let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn profile() -> Decoder {
    Decoder::new(Schema::parse_str(PROFILE).unwrap())
}

fn assert_undecodable(result: Result<apache_avro::types::Value, DecodeError>) {
    let error = result.unwrap_err();
    assert!(matches!(error, DecodeError::Undecodable(_)), "{error}");
}

#[test]
fn a_record_claiming_a_huge_array_or_map_is_refused_without_reserving_it() {
    let decoder = profile();
    // 500 million strings in five bytes: reserving room for them asked for 28 GB, and the
    // process aborted.
    assert_undecodable(decoder.decode_bare(&long(500_000_000)));
    // An empty array, then a map claiming as many entries.
    let mut map = long(0);
    map.extend(long(500_000_000));
    assert_undecodable(decoder.decode_bare(&map));
    // Just over the bound, and a negative count (a block with its size in bytes).
    assert_undecodable(decoder.decode_bare(&long(MAX_DECODED_LEN as i64 + 1)));
    assert_undecodable(decoder.decode_bare(&long(-(i64::MAX / 2))));
}

#[test]
fn a_record_claiming_a_huge_string_is_refused() {
    let decoder = profile();
    let mut record = long(0);
    record.extend(long(0));
    record.extend(long(1));
    record.extend(long(i64::MAX / 2));
    assert_undecodable(decoder.decode_bare(&record));
}

#[test]
fn a_record_within_the_bounds_decodes() {
    let decoder = profile();
    let mut record = long(1);
    record.extend(long(2));
    record.extend(b"sv");
    record.extend(long(0));
    record.extend(long(0));
    record.extend(long(0));
    assert!(decoder.decode_bare(&record).is_ok());
}

proptest! {
    #[test]
    fn no_bytes_make_decoding_panic(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let decoder = profile();
        let _ = decoder.decode_bare(&payload);
        let writer = Arc::new(Schema::parse_str(PROFILE).unwrap());
        let _ = decoder.decode_framed(&payload, |_| Some(writer.clone()));
        let _ = decoder.decode_framed(&wire::encode(1, &payload), |_| Some(writer.clone()));
        let _ = wire::decode(&payload);
    }

    #[test]
    fn no_damage_to_a_valid_event_makes_decoding_panic(
        n in 0i64..1_000,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let schema = quiver_testkit::events::match_event_schema();
        let event = quiver_testkit::events::match_event(&schema, n);
        let mut datum = apache_avro::to_avro_datum(&schema, event).unwrap();
        let decoder = Decoder::new(schema);
        let index = at.index(datum.len());
        datum[index] = byte;
        let _ = decoder.decode_bare(&datum);
        datum.truncate(cut.index(datum.len()));
        let _ = decoder.decode_bare(&datum);
    }
}
