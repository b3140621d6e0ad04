//! The first step of ingestion, per record: strip the Confluent header and decode the Avro datum.
//!
//! Compares decoding with the writer's schema alone against resolving it to a newer reader
//! schema (one added optional field), which is what the ingester does once producers and
//! definitions drift apart. Run: `cargo bench -p quiver-benches --bench avro_decode`.

use std::hint::black_box;

use apache_avro::Schema;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_avro::wire;
use quiver_testkit::events;

const SCHEMA_ID: u32 = 7;

/// `match_event.avsc` plus an optional `session_id`, as a later schema version would add it.
fn evolved_reader_schema() -> Schema {
    let text = std::fs::read_to_string(events::schema_path("match_event.avsc"))
        .expect("the bundled schema is readable");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    json["fields"]
        .as_array_mut()
        .expect("a record schema has fields")
        .push(
            serde_json::json!({"name": "session_id", "type": ["null", "string"], "default": null}),
        );
    Schema::parse(&json).expect("the evolved schema is valid")
}

fn decode(c: &mut Criterion) {
    let writer = events::match_event_schema();
    let reader = evolved_reader_schema();
    let event = events::match_event(&writer, 17);
    let record = wire::encode(
        SCHEMA_ID,
        &apache_avro::to_avro_datum(&writer, event).expect("the sample event encodes"),
    );

    let mut group = c.benchmark_group("match_event_decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("confluent_header_only", |b| {
        b.iter(|| wire::decode(black_box(&record)).expect("framed"))
    });
    group.bench_function("writer_schema", |b| {
        b.iter(|| {
            let framed = wire::decode(black_box(&record)).expect("framed");
            apache_avro::from_avro_datum(&writer, &mut &*framed.datum, None).expect("decodes")
        })
    });
    group.bench_function("resolved_to_evolved_reader", |b| {
        b.iter(|| {
            let framed = wire::decode(black_box(&record)).expect("framed");
            apache_avro::from_avro_datum(&writer, &mut &*framed.datum, Some(&reader))
                .expect("resolves")
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
