//! Pushed values in the log: rows that `WriteFeatures` wrote to the online store, beside the
//! events, as `pushes/view=<v>/version=<n>/date=<YYYY-MM-DD>/<writer>+<time>-<sequence>.parquet`.
//!
//! A push carries feature values, not a source event, so its files have columns of their own:
//! `_event_time`, `_ingest_time`, one column per entity key field (named as the entity's key),
//! then one per stored feature of the view in its declared type, null where the row did not set
//! it. A retried push writes its rows again in another file, which changes no answer: of equal
//! rows at one event time, either is the newest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_core::definition::{Entity, Feature, VersionedView};
use quiver_core::history::PointValue;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::read::stored_features;
use quiver_core::store::FeatureWrite;
use quiver_core::value::ScalarType;

use crate::LogError;
use crate::layout::{date_of, version_prefix};
use crate::values::{UTC, value_array, value_at};

/// The folder of pushed rows, beside the views' folders.
const PUSHES: &str = "pushes";

/// Tells apart the files one process writes within one microsecond.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The folder of one view version's pushes.
fn pushes_prefix(view: &VersionedView) -> Path {
    let mut prefix = Path::from(PUSHES);
    for part in version_prefix(&view.view.name, view.version).parts() {
        prefix = prefix.join(part);
    }
    prefix
}

/// Writes `writes` of `view`, pushed through `writer` (such as `push:<host>`) at
/// `ingest_time_micros`, one file per date.
pub(crate) async fn append(
    store: &dyn ObjectStore,
    entity: &Entity,
    view: &VersionedView,
    writer: &str,
    writes: &[FeatureWrite],
    ingest_time_micros: i64,
) -> Result<(), LogError> {
    let mut by_date: std::collections::BTreeMap<String, Vec<&FeatureWrite>> = Default::default();
    for write in writes {
        by_date
            .entry(date_of(write.event_time_micros))
            .or_default()
            .push(write);
    }
    for (date, writes) in by_date {
        let batch = batch(entity, view, &writes, ingest_time_micros)?;
        let name = format!(
            "{}+{ingest_time_micros:020}-{:08}.parquet",
            writer_name(writer),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let path = pushes_prefix(view).join(format!("date={date}")).join(name);
        store.put(&path, PutPayload::from(encode(&batch)?)).await?;
    }
    Ok(())
}

/// Every pushed row of `view`, as writes, in no particular order.
pub(crate) async fn read(
    store: &dyn ObjectStore,
    entity: &Entity,
    view: &VersionedView,
) -> Result<Vec<FeatureWrite>, LogError> {
    use futures::TryStreamExt;
    let prefix = pushes_prefix(view);
    let mut listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    listed.sort_by(|a, b| a.location.cmp(&b.location));
    let mut writes = Vec::new();
    for object in listed {
        let bytes = store.get(&object.location).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            writes.extend(
                rows(entity, view, &batch)
                    .map_err(|error| error.in_file(object.location.as_ref()))?,
            );
        }
    }
    Ok(writes)
}

fn writer_name(writer: &str) -> String {
    writer
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect()
}

fn stored(view: &VersionedView) -> Vec<&Feature> {
    let names = stored_features(view);
    view.view
        .features
        .iter()
        .filter(|feature| names.contains(&feature.name))
        .collect()
}

fn batch(
    entity: &Entity,
    view: &VersionedView,
    writes: &[&FeatureWrite],
    ingest_time_micros: i64,
) -> Result<RecordBatch, LogError> {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
    let mut fields = vec![
        Field::new("_event_time", timestamp.clone(), false),
        Field::new("_ingest_time", timestamp, false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(
            writes
                .iter()
                .map(|write| Some(write.event_time_micros))
                .collect::<arrow_array::TimestampMicrosecondArray>()
                .with_timezone(UTC),
        ),
        Arc::new(
            writes
                .iter()
                .map(|_| Some(ingest_time_micros))
                .collect::<arrow_array::TimestampMicrosecondArray>()
                .with_timezone(UTC),
        ),
    ];
    for (index, key) in entity.keys.iter().enumerate() {
        let parts = writes.iter().map(|write| write.key.parts().get(index));
        let array: ArrayRef = match key.key_type {
            ScalarType::Int32 => Arc::new(
                parts
                    .map(|part| match part {
                        Some(KeyPart::Int32(value)) => Some(*value),
                        _ => None,
                    })
                    .collect::<Int32Array>(),
            ),
            ScalarType::Int64 => Arc::new(
                parts
                    .map(|part| match part {
                        Some(KeyPart::Int64(value)) => Some(*value),
                        _ => None,
                    })
                    .collect::<Int64Array>(),
            ),
            ScalarType::Bytes => Arc::new(
                parts
                    .map(|part| match part {
                        Some(KeyPart::Bytes(value)) => Some(value.as_slice()),
                        _ => None,
                    })
                    .collect::<BinaryArray>(),
            ),
            ScalarType::String => Arc::new(
                parts
                    .map(|part| match part {
                        Some(KeyPart::String(value)) => Some(value.as_str()),
                        _ => None,
                    })
                    .collect::<StringArray>(),
            ),
            ScalarType::Bool
            | ScalarType::Float32
            | ScalarType::Float64
            | ScalarType::Timestamp => {
                return Err(LogError::Schema(format!(
                    "entity `{}` has a key of type {}, which no key may have",
                    entity.name, key.key_type
                )));
            }
        };
        fields.push(Field::new(
            key.name.as_str(),
            array.data_type().clone(),
            false,
        ));
        arrays.push(array);
    }
    for feature in stored(view) {
        let cells: Vec<Option<PointValue>> = writes
            .iter()
            .map(|write| {
                write
                    .values
                    .iter()
                    .find(|(name, _)| name == &feature.name)
                    .map(|(_, value)| PointValue {
                        value: value.clone(),
                        event_time_micros: write.event_time_micros,
                    })
            })
            .collect();
        let array = value_array(feature.value_type, &cells);
        fields.push(Field::new(
            feature.name.as_str(),
            array.data_type().clone(),
            true,
        ));
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(
        Arc::new(ArrowSchema::new(fields)),
        arrays,
    )?)
}

fn encode(batch: &RecordBatch) -> Result<Bytes, LogError> {
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// The writes of one batch of a pushes file.
fn rows(
    entity: &Entity,
    view: &VersionedView,
    batch: &RecordBatch,
) -> Result<Vec<FeatureWrite>, LogError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| LogError::Schema(format!("no column `{name}`")))
    };
    let event_times = column("_event_time")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| LogError::Schema("`_event_time` is not a timestamp".into()))?;
    let keys: Vec<(&ArrayRef, ScalarType)> = entity
        .keys
        .iter()
        .map(|key| Ok((column(key.name.as_str())?, key.key_type)))
        .collect::<Result<_, LogError>>()?;
    let features: Vec<(&Feature, &ArrayRef)> = stored(view)
        .into_iter()
        .filter_map(|feature| Some((feature, batch.column_by_name(feature.name.as_str())?)))
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            let parts = keys
                .iter()
                .map(|(array, key_type)| key_part(array, *key_type, row))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| LogError::Schema(format!("row {row} has no whole key")))?;
            let key = EntityKey::new(parts)
                .ok_or_else(|| LogError::Schema(format!("row {row} has no key")))?;
            let values = features
                .iter()
                .filter_map(|(feature, array)| {
                    value_at(feature.value_type, array, row)
                        .map(|value| (feature.name.clone(), value))
                })
                .collect();
            Ok(FeatureWrite {
                key,
                event_time_micros: event_times.value(row),
                values,
            })
        })
        .collect()
}

fn key_part(array: &ArrayRef, key_type: ScalarType, row: usize) -> Option<KeyPart> {
    if array.is_null(row) {
        return None;
    }
    Some(match key_type {
        ScalarType::Int32 => KeyPart::Int32(array.as_primitive_opt::<Int32Type>()?.value(row)),
        ScalarType::Int64 => KeyPart::Int64(array.as_primitive_opt::<Int64Type>()?.value(row)),
        ScalarType::Bytes => KeyPart::Bytes(array.as_binary_opt::<i32>()?.value(row).to_vec()),
        ScalarType::String => KeyPart::String(array.as_string_opt::<i32>()?.value(row).to_owned()),
        ScalarType::Bool | ScalarType::Float32 | ScalarType::Float64 | ScalarType::Timestamp => {
            return None;
        }
    })
}
