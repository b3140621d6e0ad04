//! The golden files pin the bytes of every storage format: encoding the samples gives them,
//! decoding them gives the samples, the shapes written before versions were recorded still read,
//! and a newer format is refused with both versions named.
//!
//! After an intended change of a format (with a new format version), `UPDATE_GOLDEN=1 cargo test
//! -p quiver-format` rewrites the files.

use std::path::PathBuf;

use quiver_core::aggregate::Tile;
use quiver_format::{
    FormatError, decode_applied, decode_registry, decode_ties, decode_tile, decode_value,
    encode_applied, encode_registry, encode_ties, encode_tile, encode_value,
};
use quiver_testkit::golden::{
    APPLIED_V1, REGISTRY_UNVERSIONED, REGISTRY_V1, TIES_V1, TILES_V1, TILES_V2, VALUES_V1,
    sample_applied, sample_registry, sample_ties, sample_tiles, sample_tiles_v1, sample_values,
};

fn blessing() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compares `encoded` with the committed `golden` text, or rewrites the file when blessing.
fn check_golden(file: &str, golden: &str, encoded: &str) {
    if blessing() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("golden")
            .join(file);
        std::fs::write(&path, encoded).expect("the golden file is writable");
        return;
    }
    assert_eq!(
        golden, encoded,
        "the bytes of golden/{file} changed: a stored format changed without a new format version"
    );
}

fn lines(encoded: impl Iterator<Item = String>) -> String {
    encoded.map(|line| line + "\n").collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn the_registry_is_stored_as_its_golden_file() {
    let encoded = String::from_utf8(encode_registry(&sample_registry())).unwrap();
    check_golden("registry-v1.json", REGISTRY_V1, &(encoded + "\n"));
    let decoded = decode_registry(REGISTRY_V1.trim_end().as_bytes()).unwrap();
    assert_eq!(decoded, sample_registry());
    assert!(REGISTRY_V1.starts_with(r#"{"format_version":1,"revision":7,"#));
}

#[test]
fn a_registry_stored_before_versions_were_recorded_reads_as_format_1() {
    assert!(!REGISTRY_UNVERSIONED.contains("format_version"));
    let decoded = decode_registry(REGISTRY_UNVERSIONED.as_bytes()).unwrap();
    assert_eq!(decoded, sample_registry());
}

#[test]
fn tiles_are_stored_as_their_golden_file() {
    let tiles = sample_tiles();
    let encoded = lines(
        tiles
            .iter()
            .map(|tile| String::from_utf8(encode_tile(tile)).unwrap()),
    );
    check_golden("tiles-v2.jsonl", TILES_V2, &encoded);
    assert!(TILES_V2.starts_with(r#"{"format_version":2,"#));
    assert_decodes_to(TILES_V2, &sample_tiles());
}

#[test]
fn tiles_of_format_1_read_without_tiebreaks() {
    assert!(TILES_V1.starts_with(r#"{"format_version":1,"#));
    assert!(!TILES_V1.contains("\"tie\""));
    assert_decodes_to(TILES_V1, &sample_tiles_v1());
}

/// Each line of `cells` decodes, under its tile's key, to that tile of `tiles`.
fn assert_decodes_to(cells: &str, tiles: &[Tile]) {
    assert_eq!(cells.lines().count(), tiles.len());
    for (line, tile) in cells.lines().zip(tiles) {
        let decoded = decode_tile(
            tile.feature.clone(),
            tile.source.clone(),
            tile.start_micros,
            line.as_bytes(),
        )
        .unwrap();
        assert_eq!(&decoded, tile);
    }
}

#[test]
fn tiles_stored_before_versions_were_recorded_read_as_format_1() {
    for unversioned in [
        include_str!("../golden/tiles-unversioned-scylla.jsonl"),
        include_str!("../golden/tiles-unversioned-embedded.jsonl"),
    ] {
        assert_decodes_to(unversioned, &sample_tiles_v1());
    }
}

#[test]
fn applied_event_ids_are_stored_as_their_golden_file() {
    let applied = sample_applied();
    let encoded = lines(applied.iter().map(|event| hex(&encode_applied(event))));
    check_golden("applied-v1.hex", APPLIED_V1, &encoded);
    for (line, event) in APPLIED_V1.lines().zip(&applied) {
        let decoded = decode_applied(event.event_id.clone(), &unhex(line)).unwrap();
        assert_eq!(&decoded, event);
    }
}

#[test]
fn remembered_ties_are_stored_as_their_golden_file() {
    let encoded = String::from_utf8(encode_ties(&sample_ties())).unwrap();
    check_golden("ties-v1.json", TIES_V1, &(encoded + "\n"));
    assert!(TIES_V1.starts_with(r#"{"format_version":1,"#));
    assert_eq!(
        decode_ties(TIES_V1.trim_end().as_bytes()).unwrap(),
        sample_ties()
    );
}

#[test]
fn values_are_stored_as_their_golden_file() {
    let values = sample_values();
    let encoded = lines(
        values
            .iter()
            .map(|value| String::from_utf8(encode_value(value)).unwrap()),
    );
    check_golden("values-v1.jsonl", VALUES_V1, &encoded);
    for (line, value) in VALUES_V1.lines().zip(&values) {
        assert_eq!(&decode_value(line.as_bytes()).unwrap(), value);
    }
}

fn assert_newer(error: FormatError, what: &str, found: u32, supported: u32) {
    let message = error.to_string();
    assert!(
        matches!(error, FormatError::Newer { found: f, supported: s, .. } if f == found && s == supported),
        "{message}"
    );
    assert!(message.starts_with(what), "{message}");
    assert!(
        message.contains(&format!("format {found}, newer than format {supported}")),
        "{message}"
    );
}

#[test]
fn a_newer_format_is_refused_naming_both_versions() {
    let same_shape = REGISTRY_V1.replacen(r#""format_version":1"#, r#""format_version":2"#, 1);
    let error = decode_registry(same_shape.as_bytes()).unwrap_err();
    assert_newer(error, "the stored registry", 2, 1);
    let other_shape = br#"{"format_version":3,"views":{"user_activity":{}}}"#;
    assert_newer(
        decode_registry(other_shape).unwrap_err(),
        "the stored registry",
        3,
        1,
    );

    let tile = sample_tiles().remove(0);
    let newer_tile = br#"{"format_version":3,"cells":[1,2,3]}"#;
    let error = decode_tile(tile.feature, tile.source, tile.start_micros, newer_tile).unwrap_err();
    assert_newer(error, "a stored tile", 3, 2);

    let newer_ties = TIES_V1.replacen(r#""format_version":1"#, r#""format_version":2"#, 1);
    let error = decode_ties(newer_ties.as_bytes()).unwrap_err();
    assert_newer(error, "the stored ties of an entity", 2, 1);

    let mut newer_applied = encode_applied(&sample_applied()[0]);
    newer_applied[0] = 2;
    let error = decode_applied("e-0001".into(), &newer_applied).unwrap_err();
    assert_newer(error, "a stored event id", 2, 1);
}

#[test]
fn damaged_bytes_are_refused_with_what_was_read() {
    let error = decode_registry(br#"{"format_version":1,"revision":"seven"}"#).unwrap_err();
    assert!(matches!(error, FormatError::Malformed { .. }), "{error}");
    let message = error.with_causes();
    assert!(
        message.starts_with("the stored registry is not in storage format 1: invalid type"),
        "{message}"
    );

    let bad_name = REGISTRY_V1.replacen(r#""name":"user""#, r#""name":"no spaces""#, 1);
    let error = decode_registry(bad_name.as_bytes()).unwrap_err();
    assert!(
        error.to_string().contains("the name `no spaces`"),
        "{error}"
    );

    let error = decode_applied("e".into(), &[1, 0, 0]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "a stored event id holds fewer than 17 bytes"
    );
    let tile = sample_tiles().remove(0);
    let error = decode_tile(tile.feature, tile.source, 0, b"[1,2]").unwrap_err();
    assert!(matches!(error, FormatError::Malformed { .. }), "{error}");
}
