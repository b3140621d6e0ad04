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
