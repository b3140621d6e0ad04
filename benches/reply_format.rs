//! What a reply's format costs, without the network: a reply of `rows` entities x 20 features
//! (10 int64, 10 float64) built from the domain's values as the server builds its columns,
//! encoded, then decoded and turned back into values as `quiver_client` does; one `Value`
//! message per cell (`VALUE_FORMAT_VALUES`) against one typed array per column
//! (`VALUE_FORMAT_TYPED`). The encoded sizes are printed once per size.
//!
//! Run: `cargo bench -p quiver-benches --bench reply_format`.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_proto::columns::{TypedColumnBuilder, typed_rows};
use quiver_proto::v1 as pb;
use quiver_proto::values::{from_wire, to_wire};

const FEATURES: usize = 20;

/// The cells of one reply, column by column: half int64, half float64 features.
fn cells(rows: usize) -> Vec<(ValueType, Vec<Value>)> {
    (0..FEATURES)
        .map(|feature| {
            let int = feature % 2 == 0;
            let value_type = ValueType::Scalar(if int {
                ScalarType::Int64
            } else {
                ScalarType::Float64
            });
            let values = (0..rows)
                .map(|row| {
                    let n = (row * FEATURES + feature) as i64;
                    if int {
                        Value::Int64(n * 7_919)
                    } else {
                        Value::Float64(n as f64 / 3.0)
                    }
                })
                .collect();
            (value_type, values)
        })
        .collect()
}

fn column(name: usize, rows: usize) -> pb::FeatureColumn {
    pb::FeatureColumn {
        name: format!("user_stats:f{name:02}"),
        values: Vec::new(),
        statuses: vec![pb::FeatureStatus::Ok as i32; rows],
        event_time_micros: vec![1_790_000_000_000_000; rows],
        typed: None,
    }
}

fn value_reply(cells: &[(ValueType, Vec<Value>)]) -> pb::GetOnlineFeaturesResponse {
    let features = cells
        .iter()
        .enumerate()
        .map(|(name, (_, values))| pb::FeatureColumn {
            values: values.iter().map(to_wire).collect(),
            ..column(name, values.len())
        })
        .collect();
    pb::GetOnlineFeaturesResponse { features }
}

fn typed_reply(cells: &[(ValueType, Vec<Value>)]) -> pb::GetOnlineFeaturesResponse {
    let features = cells
        .iter()
        .enumerate()
        .map(|(name, (value_type, values))| {
            let mut typed = TypedColumnBuilder::new(*value_type, values.len());
            for value in values {
                typed.push(Some(value)).expect("of the column's type");
            }
            pb::FeatureColumn {
                typed: Some(typed.finish()),
                ..column(name, values.len())
            }
        })
        .collect();
    pb::GetOnlineFeaturesResponse { features }
}

/// The client's side: decode the reply and take each column's values.
fn read_back(bytes: &[u8]) -> Vec<Vec<Value>> {
    let reply = pb::GetOnlineFeaturesResponse::decode(bytes).expect("decodes");
    reply
        .features
        .into_iter()
        .map(|column| match column.typed {
            Some(typed) => typed_rows(typed, column.statuses.len()).expect("well formed"),
            None => column
                .values
                .into_iter()
                .map(|value| from_wire(value).expect("set"))
                .collect(),
        })
        .collect()
}

fn formats(c: &mut Criterion) {
    for rows in [1, 100, 500] {
        let cells = cells(rows);
        let by_value = value_reply(&cells).encode_to_vec();
        let by_type = typed_reply(&cells).encode_to_vec();
        assert_eq!(read_back(&by_value), read_back(&by_type));
        println!(
            "{rows} rows x {FEATURES} features: {} bytes as Values, {} bytes typed",
            by_value.len(),
            by_type.len()
        );
        let mut group = c.benchmark_group(format!("reply_{rows}_rows"));
        group.throughput(Throughput::Elements((rows * FEATURES) as u64));
        group.bench_function("values_build_and_encode", |b| {
            b.iter(|| value_reply(black_box(&cells)).encode_to_vec())
        });
        group.bench_function("typed_build_and_encode", |b| {
            b.iter(|| typed_reply(black_box(&cells)).encode_to_vec())
        });
        group.bench_function("values_decode", |b| {
            b.iter(|| read_back(black_box(&by_value)))
        });
        group.bench_function("typed_decode", |b| {
            b.iter(|| read_back(black_box(&by_type)))
        });
        group.finish();
    }
}

criterion_group!(benches, formats);
criterion_main!(benches);
