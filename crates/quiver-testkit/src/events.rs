//! Sample recommender events built against the bundled schemas, shared by tests and benchmarks.

use std::path::PathBuf;

use apache_avro::Schema;
use apache_avro::types::Value;

/// The path of a schema in the repository's `schemas/` folder.
pub fn schema_path(file_name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(file_name)
}

/// The bundled `match_event.avsc`.
pub fn match_event_schema() -> Schema {
    quiver_avro::schema_file::read_schema_file(&schema_path("match_event.avsc"))
        .expect("the bundled match event schema parses")
}

/// The `n`th event of a deterministic stream: user `n % 5` acts on candidate `1000 + n`, one
/// second after the previous event. Resolved against `schema`, so logical types are set and the
/// value equals what decoding its encoding gives back.
pub fn match_event(schema: &Schema, n: i64) -> Value {
    const ACTIONS: [&str; 6] = ["LIKE", "PASS", "SUPER_LIKE", "MATCH", "UNMATCH", "CHAT"];
    let action = n.rem_euclid(ACTIONS.len() as i64) as usize;
    let record = Value::Record(vec![
        (
            "event_id".into(),
            Value::String(format!("00000000-0000-4000-8000-{n:012}")),
        ),
        ("ts".into(), Value::Long(1_790_000_000_000 + n * 1_000)),
        ("user_id".into(), Value::Long(n % 5)),
        ("candidate_id".into(), Value::Long(1_000 + n)),
        (
            "action".into(),
            Value::Enum(action as u32, ACTIONS[action].into()),
        ),
        ("surface".into(), Value::String("feed".into())),
        (
            "country".into(),
            Value::Union(1, Box::new(Value::String("SE".into()))),
        ),
        ("chat_seconds".into(), Value::Double(n as f64 * 1.5)),
        (
            "rank_position".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        (
            "device".into(),
            Value::Record(vec![
                ("platform".into(), Value::Enum(1, "ANDROID".into())),
                ("app_version".into(), Value::String("8.14.0".into())),
            ]),
        ),
    ]);
    record
        .resolve(schema)
        .expect("the sample event fits the schema")
}

/// `event` with its field `field` set to `value`.
pub fn with_field(mut event: Value, field: &str, value: Value) -> Value {
    let Value::Record(fields) = &mut event else {
        panic!("an event is a record")
    };
    fields
        .iter_mut()
        .find(|(name, _)| name == field)
        .unwrap_or_else(|| panic!("the event has no field `{field}`"))
        .1 = value;
    event
}

/// One event of [`shuffled_stream`], with what it says in plain values.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub user: i64,
    pub event_time_millis: i64,
    pub country: &'static str,
    /// Whether this is a copy of an earlier event of the stream, with its event id.
    pub resent: bool,
    /// The event, resolved against the schema it was built with.
    pub event: Value,
}

/// `count` events spread over `users` users, in an order unrelated to their event times (a
/// shuffled permutation of one event per millisecond, so no two share a time), with a replayed
/// copy of an earlier event (its event id included) after every 50th. The same `seed` gives the same stream.
pub fn shuffled_stream(schema: &Schema, count: usize, users: i64, seed: u64) -> Vec<StreamEvent> {
    const COUNTRIES: [&str; 6] = ["SE", "NO", "DK", "FI", "IS", "DE"];
    let mut random = SplitMix64(seed);
    let mut times: Vec<i64> = (0..count as i64).collect();
    for i in (1..times.len()).rev() {
        times.swap(i, random.below(i as u64 + 1) as usize);
    }
    let mut stream: Vec<StreamEvent> = Vec::with_capacity(count + count / 50);
    for (n, offset) in times.into_iter().enumerate() {
        let user = random.below(users as u64) as i64;
        let country = COUNTRIES[random.below(COUNTRIES.len() as u64) as usize];
        let event_time_millis = 1_790_000_000_000 + offset;
        let event = match_event(schema, n as i64);
        let event = with_field(event, "user_id", Value::Long(user));
        let event = with_field(event, "ts", Value::TimestampMillis(event_time_millis));
        let event = with_field(
            event,
            "country",
            Value::Union(1, Box::new(Value::String(country.into()))),
        );
        stream.push(StreamEvent {
            user,
            event_time_millis,
            country,
            resent: false,
            event,
        });
        if n % 50 == 49 {
            let replayed = stream[random.below(stream.len() as u64) as usize].clone();
            stream.push(StreamEvent {
                resent: true,
                ..replayed
            });
        }
    }
    stream
}

/// A small deterministic generator (SplitMix64), so streams and test rows are the same on
/// every run.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
