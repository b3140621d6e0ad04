//! The rows a retrieval answers: entity keys and a timestamp per row, read from Parquet or CSV,
//! and the Parquet file the answer is written to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_core::definition::Entity;
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::value::ScalarType;

use crate::LogError;

/// Rows of entity keys, each with the instant to answer it at.
#[derive(Debug)]
pub struct EntityRows {
    batch: RecordBatch,
    /// Per row, microseconds since the epoch.
    timestamps: Vec<i64>,
}

impl EntityRows {
    /// Reads a `.parquet` or `.csv` file whose `timestamp_column` holds each row's instant: a
    /// timestamp column in Parquet, RFC 3339 text (`2026-12-01T09:30:00Z`) in CSV.
    pub fn read(path: &Path, timestamp_column: &str) -> Result<Self, LogError> {
        let named = |detail: String| LogError::Rows(format!("{}: {detail}", path.display()));
        let batch = match path.extension().and_then(|extension| extension.to_str()) {
            Some("parquet") => read_parquet(path).map_err(|error| named(error.to_string()))?,
            Some("csv") => read_csv(path).map_err(named)?,
            _ => return Err(named("give a .parquet or a .csv file".into())),
        };
        EntityRows::of_batch(batch, timestamp_column).map_err(named)
    }

    /// Rows from a batch in memory.
    pub fn of_batch(batch: RecordBatch, timestamp_column: &str) -> Result<Self, String> {
        let column = batch.column_by_name(timestamp_column).ok_or_else(|| {
            format!(
                "no column `{timestamp_column}` (the rows' timestamps); the columns are: {}",
                column_names(&batch)
            )
        })?;
        let timestamps = timestamps(column, timestamp_column)?;
        Ok(EntityRows { batch, timestamps })
    }

    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    pub(crate) fn timestamp(&self, row: usize) -> i64 {
        self.timestamps[row]
    }

    /// The rows of each entity of `entity`, by its encoded key, read from the columns named
    /// after the entity's key fields.
    pub(crate) fn rows_by_entity(
        &self,
        entity: &Entity,
    ) -> Result<HashMap<Vec<u8>, Vec<usize>>, LogError> {
        let columns: Vec<(&ArrayRef, ScalarType, &str)> =
            entity
                .keys
                .iter()
                .map(|key| {
                    let column = self.batch.column_by_name(key.name.as_str()).ok_or_else(|| {
                    LogError::Rows(format!(
                        "entity `{}` is keyed by `{}`, and the rows have no such column; they \
                         have: {}",
                        entity.name,
                        key.name,
                        column_names(&self.batch)
                    ))
                })?;
                    Ok((column, key.key_type, key.name.as_str()))
                })
                .collect::<Result<_, LogError>>()?;
        let mut rows: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for row in 0..self.len() {
            let parts = columns
                .iter()
                .map(|(column, key_type, name)| key_part(column, *key_type, row, name))
                .collect::<Result<Vec<_>, _>>()?;
            let key = EntityKey::new(parts)
                .ok_or_else(|| LogError::Rows(format!("entity `{}` has no key", entity.name)))?;
            rows.entry(key.encode()).or_default().push(row);
        }
        Ok(rows)
    }
}

fn column_names(batch: &RecordBatch) -> String {
    batch
        .schema()
        .fields()
        .iter()
        .map(|field| field.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_parquet(path: &Path) -> Result<RecordBatch, LogError> {
    let file = std::fs::File::open(path)
        .map_err(|error| LogError::Rows(format!("cannot open: {error}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    Ok(arrow_select::concat::concat_batches(&schema, &batches)?)
}

/// A CSV file with a header, every column read as text.
fn read_csv(path: &Path) -> Result<RecordBatch, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|error| error.to_string())?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|error| error.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); headers.len()];
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|error| format!("row {}: {error}", line + 1))?;
        for (column, value) in columns.iter_mut().zip(record.iter()) {
            column.push(value.to_owned());
        }
    }
    let fields: Vec<Field> = headers
        .iter()
        .map(|name| Field::new(name, DataType::Utf8, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|values| Arc::new(StringArray::from(values)) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), arrays)
        .map_err(|error| error.to_string())
}

/// Each row's instant in microseconds.
fn timestamps(column: &ArrayRef, name: &str) -> Result<Vec<i64>, String> {
    let null = |row: usize| format!("column `{name}` is empty at row {}", row + 1);
    let scaled = |values: Vec<Option<i64>>, micros_per: i64| -> Result<Vec<i64>, String> {
        values
            .into_iter()
            .enumerate()
            .map(|(row, value)| {
                value
                    .map(|value| value * micros_per)
                    .ok_or_else(|| null(row))
            })
            .collect()
    };
    match column.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => scaled(
            column
                .as_primitive::<TimestampSecondType>()
                .iter()
                .collect(),
            1_000_000,
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => scaled(
            column
                .as_primitive::<TimestampMillisecondType>()
                .iter()
                .collect(),
            1_000,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => scaled(
            column
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect(),
            1,
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Ok(column
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .enumerate()
            .map(|(row, value)| {
                value
                    .map(|nanos| nanos.div_euclid(1_000))
                    .ok_or_else(|| null(row))
            })
            .collect::<Result<_, _>>()?),
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .enumerate()
            .map(|(row, text)| {
                let text = text.ok_or_else(|| null(row))?;
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|time| time.timestamp_micros())
                    .map_err(|error| {
                        format!(
                            "column `{name}` row {}: `{text}` is not an RFC 3339 time such as \
                             2026-12-01T09:30:00Z ({error})",
                            row + 1
                        )
                    })
            })
            .collect(),
        other => Err(format!(
            "column `{name}` is {other}; give timestamps (or RFC 3339 text in CSV)"
        )),
    }
}

/// The key part of one row, of the declared type.
fn key_part(
    column: &ArrayRef,
    key_type: ScalarType,
    row: usize,
    name: &str,
) -> Result<KeyPart, LogError> {
    let wrong = |found: String| {
        LogError::Rows(format!(
            "column `{name}` row {}: {found}, not a key of type {key_type}",
            row + 1
        ))
    };
    if column.is_null(row) {
        return Err(wrong("empty".into()));
    }
    match (key_type, column.data_type()) {
        (ScalarType::Int64, DataType::Int64) => Ok(KeyPart::Int64(
            column.as_primitive::<Int64Type>().value(row),
        )),
        (ScalarType::Int64, DataType::Int32) => Ok(KeyPart::Int64(i64::from(
            column.as_primitive::<Int32Type>().value(row),
        ))),
        (ScalarType::Int32, DataType::Int32) => Ok(KeyPart::Int32(
            column.as_primitive::<Int32Type>().value(row),
        )),
        (ScalarType::String, DataType::Utf8) => Ok(KeyPart::String(
            column.as_string::<i32>().value(row).to_owned(),
        )),
        (ScalarType::Bytes, DataType::Binary) => Ok(KeyPart::Bytes(
            column.as_binary::<i32>().value(row).to_vec(),
        )),
        (_, DataType::Utf8) => {
            let text = column.as_string::<i32>().value(row);
            let parsed = match key_type {
                ScalarType::Int64 => text.trim().parse().ok().map(KeyPart::Int64),
                ScalarType::Int32 => text.trim().parse().ok().map(KeyPart::Int32),
                _ => None,
            };
            parsed.ok_or_else(|| wrong(format!("`{text}`")))
        }
        (_, other) => Err(wrong(format!("a column of {other}"))),
    }
}

/// Writes `batch` to a Parquet file at `path`, replacing it whole: written beside it, then
/// renamed.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), LogError> {
    let cannot = |error: std::io::Error| LogError::Rows(format!("{}: {error}", path.display()));
    let partial = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&partial).map_err(cannot)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    std::fs::rename(&partial, path).map_err(cannot)
}
