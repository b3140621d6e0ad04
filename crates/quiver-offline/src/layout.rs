//! Where the log's files are: `view=<view>/version=<n>/date=<YYYY-MM-DD>/<source>+<first>-<last>.parquet`,
//! a Hive layout that Spark, Trino and DuckDB read as partitions.
//!
//! A file holds the events of one source (a partition or a file ingested) of one batch and one
//! date, named by the batch's first and last offsets of that source, so writing the same batch
//! again gives the same names and replaces the files. In the source's
//! name every character other than ASCII letters, digits, `.`, `_` and `-` is `@` and two hex
//! digits (`match-events/3` is `match-events@2F3`), so a name is a valid path segment
//! everywhere and reads back unambiguously.

use chrono::DateTime;
use object_store::path::Path;
use quiver_core::name::Name;

/// The folder of one view version's files.
pub fn version_prefix(view: &Name, version: u32) -> Path {
    Path::from_iter([format!("view={view}"), format!("version={version}")])
}

/// The date partition of an event time, in UTC.
pub fn date_of(event_time_micros: i64) -> String {
    DateTime::from_timestamp_micros(event_time_micros)
        .map(|time| time.date_naive().format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".to_owned())
}

/// What a file's name says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRange {
    pub source: String,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl FileRange {
    /// The file's name in its date folder.
    pub fn file_name(&self) -> String {
        format!(
            "{}+{:020}-{:020}.parquet",
            encode_source(&self.source),
            self.first_offset,
            self.last_offset
        )
    }

    /// The range a file name gives; `None` for a file the log did not name.
    pub fn of_file_name(name: &str) -> Option<FileRange> {
        let stem = name.strip_suffix(".parquet")?;
        let (source, offsets) = stem.rsplit_once('+')?;
        let (first, last) = offsets.split_once('-')?;
        Some(FileRange {
            source: decode_source(source)?,
            first_offset: first.parse().ok()?,
            last_offset: last.parse().ok()?,
        })
    }
}

/// The path of one file of a view version.
pub fn file_path(view: &Name, version: u32, date: &str, range: &FileRange) -> Path {
    version_prefix(view, version)
        .join(format!("date={date}"))
        .join(range.file_name())
}

fn encode_source(source: &str) -> String {
    let mut encoded = String::with_capacity(source.len());
    for byte in source.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => {
                encoded.push(char::from(byte));
            }
            other => encoded.push_str(&format!("@{other:02X}")),
        }
    }
    encoded
}

fn decode_source(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let [first, tail @ ..] = rest {
        if *first == b'@' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(*first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_read_back_whatever_the_source() {
        for source in [
            "match-events/3",
            "file:match_events.avro",
            "push:user_activity",
            "a+b@c~d",
        ] {
            let range = FileRange {
                source: source.to_owned(),
                first_offset: 7,
                last_offset: 1_234,
            };
            let name = range.file_name();
            assert!(
                name.bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b".-_@+".contains(&byte)),
                "{name}"
            );
            assert_eq!(FileRange::of_file_name(&name), Some(range));
        }
        assert_eq!(FileRange::of_file_name("part-0.parquet"), None);
    }

    #[test]
    fn paths_are_hive_partitions() {
        let view: Name = "user_activity".parse().expect("a name");
        let range = FileRange {
            source: "events/0".into(),
            first_offset: 0,
            last_offset: 9,
        };
        assert_eq!(
            file_path(&view, 2, &date_of(1_790_000_000_000_000), &range).as_ref(),
            "view=user_activity/version=2/date=2026-09-21/events@2F0+00000000000000000000-00000000000000000009.parquet"
        );
    }
}
