//! The quickstart's sample events: profile updates and match events of a small dating app,
//! generated deterministically (the same bytes on every run), and the values a feature store must
//! serve after ingesting them.
//!
//! `cargo run -p quiver-testkit --example sample_events -- examples/events` writes the bundled
//! files; the quickstart's end-to-end test checks what it serves against [`latest_profiles`] and
//! [`latest_activity`].

use std::collections::HashMap;
use std::path::Path;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Schema, Writer};

use crate::events::{SplitMix64, StreamEvent, match_event_schema, schema_path, shuffled_stream};

/// Users in the sample; user ids are `1..=USERS`.
pub const USERS: i64 = 500;
/// Match events in the sample: likes, passes, matches and chat sessions between users.
pub const MATCH_EVENTS: usize = 5_000;
/// The file names in the sample folder.
pub const PROFILES_FILE: &str = "user_profiles.avro";
pub const MATCH_EVENTS_FILE: &str = "match_events.avro";

const SEED: u64 = 20_261_123;
const COUNTRIES: [&str; 6] = ["SE", "NO", "DK", "FI", "IS", "DE"];

/// The latest profile of one user, as `user_profile` serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub updated_at_millis: i64,
    pub country: String,
    pub photo_count: i32,
    pub verified: bool,
}

/// The latest activity of one user, as `user_activity` serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub event_time_millis: i64,
    pub country: String,
    /// The user's distinct match events in the file: what the counts give, since
    /// `user_activity` skips the resent copies by their event ids.
    pub actions: i64,
}

/// The profile updates: every user once, a third of them twice (the second one newer), in an
/// order unrelated to their times.
pub fn profile_updates() -> Vec<(i64, Profile)> {
    let mut random = SplitMix64(SEED);
    let mut updates = Vec::new();
    for user in 1..=USERS {
        let versions = if user % 3 == 0 { 2 } else { 1 };
        for version in 0..versions {
            updates.push((
                user,
                Profile {
                    updated_at_millis: 1_790_000_000_000 + user * 1_000 + version * 3_600_000,
                    country: COUNTRIES[random.below(COUNTRIES.len() as u64) as usize].to_owned(),
                    photo_count: random.below(9) as i32,
                    verified: random.below(2) == 1,
                },
            ));
        }
    }
    for i in (1..updates.len()).rev() {
        updates.swap(i, random.below(i as u64 + 1) as usize);
    }
    updates
}

fn profile_record(schema: &Schema, user: i64, profile: &Profile) -> Value {
    let embedding: Vec<Value> = (0..32)
        .map(|i| Value::Float(((user * 31 + i) % 97) as f32 / 97.0))
        .collect();
    Value::Record(vec![
        ("user_id".into(), Value::Long(user)),
        (
            "updated_at".into(),
            Value::TimestampMillis(profile.updated_at_millis),
        ),
        (
            "country".into(),
            Value::Union(1, Box::new(Value::String(profile.country.clone()))),
        ),
        (
            "birth_year".into(),
            Value::Union(1, Box::new(Value::Int(1970 + (user % 35) as i32))),
        ),
        (
            "languages".into(),
            Value::Array(vec![Value::String("en".into())]),
        ),
        (
            "interests".into(),
            Value::Array(vec![Value::String("hiking".into())]),
        ),
        ("photo_count".into(), Value::Int(profile.photo_count)),
        ("verified".into(), Value::Boolean(profile.verified)),
        (
            "bio_embedding".into(),
            Value::Union(1, Box::new(Value::Array(embedding))),
        ),
    ])
    .resolve(schema)
    .expect("the sample profile fits the schema")
}

/// The newest profile of every user.
pub fn latest_profiles() -> HashMap<i64, Profile> {
    let mut latest: HashMap<i64, Profile> = HashMap::new();
    for (user, profile) in profile_updates() {
        let newer = latest
            .get(&user)
            .is_none_or(|known| known.updated_at_millis < profile.updated_at_millis);
        if newer {
            latest.insert(user, profile);
        }
    }
    latest
}

/// The match events in file order, resent copies included, with users numbered from 1.
pub fn match_events() -> Vec<StreamEvent> {
    shuffled_stream(&match_event_schema(), MATCH_EVENTS, USERS, SEED)
        .into_iter()
        .map(|mut event| {
            event.user += 1;
            event.event =
                crate::events::with_field(event.event, "user_id", Value::Long(event.user));
            event
        })
        .collect()
}

/// The newest match event of every user who acted, and how many they made.
pub fn latest_activity() -> HashMap<i64, Activity> {
    let mut latest: HashMap<i64, Activity> = HashMap::new();
    for event in match_events() {
        let user = event.user;
        let known = latest.entry(user).or_insert_with(|| Activity {
            event_time_millis: event.event_time_millis,
            country: event.country.to_owned(),
            actions: 0,
        });
        known.actions += i64::from(!event.resent);
        if known.event_time_millis < event.event_time_millis {
            known.event_time_millis = event.event_time_millis;
            known.country = event.country.to_owned();
        }
    }
    latest
}

/// `records` as an Avro object container file whose bytes depend on nothing else.
fn container_file(schema: &Schema, records: Vec<Value>) -> std::io::Result<Vec<u8>> {
    let encode = || -> std::io::Result<Vec<u8>> {
        // A fixed sync marker (the default is random).
        let mut writer = Writer::builder()
            .schema(schema)
            .writer(Vec::new())
            .codec(Codec::Deflate(DeflateSettings::default()))
            .marker(*b"quiver-sample-v1")
            .build();
        for record in records.iter().cloned() {
            writer.append(record).map_err(std::io::Error::other)?;
        }
        writer.into_inner().map_err(std::io::Error::other)
    };
    // The library writes the header's two metadata entries from a hash map, in a random order;
    // encoding again until the schema comes first makes the file the same on every run.
    let schema_first = |bytes: &[u8]| {
        let at = |text: &[u8]| bytes.windows(text.len()).position(|window| window == text);
        at(b"avro.schema") < at(b"avro.codec")
    };
    for _ in 0..64 {
        let bytes = encode()?;
        if schema_first(&bytes) {
            return Ok(bytes);
        }
    }
    Err(std::io::Error::other(
        "the header's metadata never came in schema-first order",
    ))
}

/// Writes the two sample files into `folder`, as Avro object container files.
pub fn write_sample_files(folder: &Path) -> std::io::Result<()> {
    let write = |name: &str, schema: &Schema, records: Vec<Value>| -> std::io::Result<()> {
        std::fs::write(folder.join(name), container_file(schema, records)?)
    };
    std::fs::create_dir_all(folder)?;
    let profiles =
        quiver_avro::schema_file::read_schema_file(&schema_path("user_profile_updated.avsc"))
            .map_err(std::io::Error::other)?;
    write(
        PROFILES_FILE,
        &profiles,
        profile_updates()
            .iter()
            .map(|(user, profile)| profile_record(&profiles, *user, profile))
            .collect(),
    )?;
    write(
        MATCH_EVENTS_FILE,
        &match_event_schema(),
        match_events()
            .into_iter()
            .map(|event| event.event)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_files_are_what_the_generator_writes() {
        let folder = std::env::temp_dir().join(crate::unique_name("sample"));
        write_sample_files(&folder).expect("writes");
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/events");
        for name in [PROFILES_FILE, MATCH_EVENTS_FILE] {
            assert!(
                std::fs::read(folder.join(name)).unwrap()
                    == std::fs::read(bundled.join(name)).unwrap(),
                "examples/events/{name} differs from the generator's; regenerate it with \
                 `cargo run -p quiver-testkit --example sample_events -- examples/events`"
            );
        }
        std::fs::remove_dir_all(folder).unwrap();
    }
}
