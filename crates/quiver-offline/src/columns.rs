//! The columns of a view's log: each event's Avro fields flattened to one Arrow column per leaf
//! field (named by its path, such as `device.platform`), beside when and where it was ingested;
//! and events rebuilt from those columns, for the projection the ingester runs.
//!
//! Leaves are Avro's scalars (enums and UUIDs as text, fixed as binary, timestamps as UTC
//! timestamps of their own unit) and arrays of them. Fields of other shapes (maps, unions of
//! several types, arrays of records) feed no feature and are not logged.

use std::borrow::Cow;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use apache_avro::types::Value as Avro;
use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};

use crate::LogError;

/// When the event happened, as the online store was given it: microseconds, UTC.
pub const EVENT_TIME: &str = "_event_time";
/// When the ingester took it.
pub const INGEST_TIME: &str = "_ingest_time";
/// The partition or file it came from, as tiles name it (`topic/3`, `file:events.avro`).
pub const SOURCE: &str = "_source";
/// Its position there.
pub const OFFSET: &str = "_offset";

const UTC: &str = "UTC";

/// One accepted event of a view, as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// The event in the view's reader schema.
    pub event: Avro,
    pub event_time_micros: i64,
    pub ingest_time_micros: i64,
    pub source: String,
    pub offset: i64,
}

/// The Arrow type of a leaf field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    Text,
    Binary,
    TimestampMillis,
    TimestampMicros,
}

impl Leaf {
    fn of(schema: &Schema) -> Option<Leaf> {
        Some(match schema {
            Schema::Boolean => Leaf::Bool,
            Schema::Int => Leaf::Int32,
            Schema::Long => Leaf::Int64,
            Schema::Float => Leaf::Float32,
            Schema::Double => Leaf::Float64,
            Schema::String | Schema::Enum(_) | Schema::Uuid => Leaf::Text,
            Schema::Bytes | Schema::Fixed(_) => Leaf::Binary,
            Schema::TimestampMillis => Leaf::TimestampMillis,
            Schema::TimestampMicros => Leaf::TimestampMicros,
            _ => return None,
        })
    }

    fn data_type(self) -> DataType {
        match self {
            Leaf::Bool => DataType::Boolean,
            Leaf::Int32 => DataType::Int32,
            Leaf::Int64 => DataType::Int64,
            Leaf::Float32 => DataType::Float32,
            Leaf::Float64 => DataType::Float64,
            Leaf::Text => DataType::Utf8,
            Leaf::Binary => DataType::Binary,
            Leaf::TimestampMillis => DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
            Leaf::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        }
    }

    fn of_data_type(data_type: &DataType) -> Option<Leaf> {
        Some(match data_type {
            DataType::Boolean => Leaf::Bool,
            DataType::Int32 => Leaf::Int32,
            DataType::Int64 => Leaf::Int64,
            DataType::Float32 => Leaf::Float32,
            DataType::Float64 => Leaf::Float64,
            DataType::Utf8 => Leaf::Text,
            DataType::Binary => Leaf::Binary,
            DataType::Timestamp(TimeUnit::Millisecond, _) => Leaf::TimestampMillis,
            DataType::Timestamp(TimeUnit::Microsecond, _) => Leaf::TimestampMicros,
            _ => return None,
        })
    }

    fn builder(self) -> Box<dyn ArrayBuilder> {
        match self {
            Leaf::Bool => Box::new(BooleanBuilder::new()),
            Leaf::Int32 => Box::new(Int32Builder::new()),
            Leaf::Int64 => Box::new(Int64Builder::new()),
            Leaf::Float32 => Box::new(Float32Builder::new()),
            Leaf::Float64 => Box::new(Float64Builder::new()),
            Leaf::Text => Box::new(StringBuilder::new()),
            Leaf::Binary => Box::new(BinaryBuilder::new()),
            Leaf::TimestampMillis => {
                Box::new(TimestampMillisecondBuilder::new().with_timezone(UTC))
            }
            Leaf::TimestampMicros => {
                Box::new(TimestampMicrosecondBuilder::new().with_timezone(UTC))
            }
        }
    }
}

/// A logged field: its path, leaf type, and whether it is an array of that type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeafColumn {
    path: String,
    leaf: Leaf,
    list: bool,
}

impl LeafColumn {
    fn data_type(&self) -> DataType {
        match self.list {
            true => DataType::List(Arc::new(Field::new("item", self.leaf.data_type(), true))),
            false => self.leaf.data_type(),
        }
    }

    fn builder(&self) -> Box<dyn ArrayBuilder> {
        match self.list {
            true => Box::new(
                ListBuilder::new(self.leaf.builder()).with_field(Arc::new(Field::new(
                    "item",
                    self.leaf.data_type(),
                    true,
                ))),
            ),
            false => self.leaf.builder(),
        }
    }
}

/// Where a record's fields are found among the log's columns.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A leaf: the index of its column among the field columns.
    Leaf(usize),
    Record(Vec<(String, Node)>),
}

/// The columns of one view's log, and how events map onto them.
#[derive(Debug, Clone)]
pub struct LogColumns {
    fields: Vec<LeafColumn>,
    root: Vec<(String, Node)>,
    arrow: SchemaRef,
}

const META_COLUMNS: usize = 4;

impl LogColumns {
    /// The columns of events of the reader schema `schema`, a record.
    pub fn of_schema(schema: &Schema) -> Result<Self, LogError> {
        let Schema::Record(record) = schema else {
            return Err(LogError::Schema(
                "the view's reader schema is not a record".into(),
            ));
        };
        let mut fields = Vec::new();
        let root = record_nodes(record, "", &mut fields);
        Ok(LogColumns::new(fields, root))
    }

    /// The columns a log file was written with, read from its Arrow schema.
    pub fn of_arrow(schema: &ArrowSchema) -> Result<Self, LogError> {
        let mut fields = Vec::new();
        for field in schema.fields().iter().skip(META_COLUMNS) {
            let (leaf, list) = match field.data_type() {
                DataType::List(item) => (Leaf::of_data_type(item.data_type()), true),
                other => (Leaf::of_data_type(other), false),
            };
            let leaf = leaf.ok_or_else(|| {
                LogError::Schema(format!(
                    "log column `{}` has type {}, which no Avro field is logged as",
                    field.name(),
                    field.data_type()
                ))
            })?;
            fields.push(LeafColumn {
                path: field.name().clone(),
                leaf,
                list,
            });
        }
        let root = tree_of_paths(&fields);
        Ok(LogColumns::new(fields, root))
    }

    fn new(fields: Vec<LeafColumn>, root: Vec<(String, Node)>) -> Self {
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
        let mut columns = vec![
            Field::new(EVENT_TIME, timestamp.clone(), false),
            Field::new(INGEST_TIME, timestamp, false),
            Field::new(SOURCE, DataType::Utf8, false),
            Field::new(OFFSET, DataType::Int64, false),
        ];
        columns.extend(
            fields
                .iter()
                .map(|field| Field::new(&field.path, field.data_type(), true)),
        );
        LogColumns {
            fields,
            root,
            arrow: Arc::new(ArrowSchema::new(columns)),
        }
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    /// One record batch of `events`.
    pub fn batch<'e>(
        &self,
        events: impl IntoIterator<Item = &'e LoggedEvent>,
    ) -> Result<RecordBatch, LogError> {
        let mut event_times = TimestampMicrosecondBuilder::new().with_timezone(UTC);
        let mut ingest_times = TimestampMicrosecondBuilder::new().with_timezone(UTC);
        let mut sources = StringBuilder::new();
        let mut offsets = Int64Builder::new();
        let mut builders: Vec<Box<dyn ArrayBuilder>> =
            self.fields.iter().map(LeafColumn::builder).collect();
        for logged in events {
            event_times.append_value(logged.event_time_micros);
            ingest_times.append_value(logged.ingest_time_micros);
            sources.append_value(&logged.source);
            offsets.append_value(logged.offset);
            let mut values = vec![None; self.fields.len()];
            collect_leaves(&self.root, Some(&logged.event), &mut values);
            for ((field, builder), value) in self.fields.iter().zip(&mut builders).zip(values) {
                append(field, builder.as_mut(), value);
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(event_times.finish()),
            Arc::new(ingest_times.finish()),
            Arc::new(sources.finish()),
            Arc::new(offsets.finish()),
        ];
        arrays.extend(builders.iter_mut().map(|builder| builder.finish()));
        Ok(RecordBatch::try_new(self.arrow.clone(), arrays)?)
    }

    /// The events of a batch written with these columns.
    pub fn events(&self, batch: &RecordBatch) -> Result<Vec<LoggedEvent>, LogError> {
        let column = |index: usize| batch.column(index);
        let event_times = column(0)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| meta_error(EVENT_TIME))?;
        let ingest_times = column(1)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| meta_error(INGEST_TIME))?;
        let sources = column(2)
            .as_string_opt::<i32>()
            .ok_or_else(|| meta_error(SOURCE))?;
        let offsets = column(3)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| meta_error(OFFSET))?;
        let field_arrays: Vec<(&LeafColumn, &ArrayRef)> = self
            .fields
            .iter()
            .zip(batch.columns().iter().skip(META_COLUMNS))
            .collect();
        (0..batch.num_rows())
            .map(|row| {
                let leaves: Vec<Avro> = field_arrays
                    .iter()
                    .map(|(field, array)| value_at(field, array, row))
                    .collect::<Result<_, _>>()?;
                Ok(LoggedEvent {
                    event: rebuild(&self.root, &leaves),
                    event_time_micros: event_times.value(row),
                    ingest_time_micros: ingest_times.value(row),
                    source: sources.value(row).to_owned(),
                    offset: offsets.value(row),
                })
            })
            .collect()
    }
}

fn meta_error(column: &str) -> LogError {
    LogError::Schema(format!(
        "log column `{column}` is missing or of the wrong type"
    ))
}

/// The nodes of a record's fields, adding a column per leaf to `fields`.
fn record_nodes(
    record: &RecordSchema,
    prefix: &str,
    fields: &mut Vec<LeafColumn>,
) -> Vec<(String, Node)> {
    let mut nodes = Vec::new();
    for field in &record.fields {
        let path = match prefix {
            "" => field.name.clone(),
            _ => format!("{prefix}.{}", field.name),
        };
        let schema = without_null(&field.schema);
        let node = match schema {
            Schema::Record(inner) => Some(Node::Record(record_nodes(inner, &path, fields))),
            Schema::Array(array) => Leaf::of(without_null(&array.items)).map(|leaf| {
                fields.push(LeafColumn {
                    path,
                    leaf,
                    list: true,
                });
                Node::Leaf(fields.len() - 1)
            }),
            other => Leaf::of(other).map(|leaf| {
                fields.push(LeafColumn {
                    path,
                    leaf,
                    list: false,
                });
                Node::Leaf(fields.len() - 1)
            }),
        };
        if let Some(node) = node {
            nodes.push((field.name.clone(), node));
        }
    }
    nodes
}

/// `["null", T]` is `T`; anything else is itself.
fn without_null(schema: &Schema) -> &Schema {
    match schema {
        Schema::Union(union) => {
            let mut variants = union
                .variants()
                .iter()
                .filter(|variant| !matches!(variant, Schema::Null));
            match (variants.next(), variants.next()) {
                (Some(only), None) => only,
                _ => schema,
            }
        }
        other => other,
    }
}

/// The record tree of dotted paths, in column order.
fn tree_of_paths(fields: &[LeafColumn]) -> Vec<(String, Node)> {
    let mut root: Vec<(String, Node)> = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let segments: Vec<&str> = field.path.split('.').collect();
        insert_path(&mut root, &segments, index);
    }
    root
}

fn insert_path(nodes: &mut Vec<(String, Node)>, segments: &[&str], index: usize) {
    let [first, rest @ ..] = segments else {
        return;
    };
    if rest.is_empty() {
        nodes.push(((*first).to_owned(), Node::Leaf(index)));
        return;
    }
    let position = match nodes.iter().position(|(name, _)| name == first) {
        Some(position) => position,
        None => {
            nodes.push(((*first).to_owned(), Node::Record(Vec::new())));
            nodes.len() - 1
        }
    };
    if let Node::Record(children) = &mut nodes[position].1 {
        insert_path(children, rest, index);
    }
}

/// Puts each leaf of `value` (a record of `nodes`) in its column's place of `values`.
fn collect_leaves<'v>(
    nodes: &[(String, Node)],
    value: Option<&'v Avro>,
    values: &mut [Option<&'v Avro>],
) {
    let fields = match value.map(unwrap_union) {
        Some(Avro::Record(fields)) => Some(fields),
        _ => None,
    };
    for (name, node) in nodes {
        let field = fields
            .and_then(|fields| fields.iter().find(|(field, _)| field == name))
            .map(|(_, value)| unwrap_union(value))
            .filter(|value| !matches!(value, Avro::Null));
        match node {
            Node::Leaf(index) => values[*index] = field,
            Node::Record(children) => collect_leaves(children, field, values),
        }
    }
}

fn unwrap_union(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

/// Appends one leaf value, or null when the event has none or it is not of the column's type.
fn append(field: &LeafColumn, builder: &mut dyn ArrayBuilder, value: Option<&Avro>) {
    if !field.list {
        append_scalar(field.leaf, builder, value);
        return;
    }
    let list = builder
        .as_any_mut()
        .downcast_mut::<ListBuilder<Box<dyn ArrayBuilder>>>()
        .expect("a list column has a list builder");
    match value {
        Some(Avro::Array(items)) => {
            for item in items {
                append_scalar(field.leaf, list.values().as_mut(), Some(unwrap_union(item)));
            }
            list.append(true);
        }
        _ => list.append(false),
    }
}

macro_rules! append_to {
    ($builder:expr, $type:ty, $value:expr) => {{
        let builder = $builder
            .as_any_mut()
            .downcast_mut::<$type>()
            .expect("a column's builder matches its leaf type");
        match $value {
            Some(value) => builder.append_value(value),
            None => builder.append_null(),
        }
    }};
}

fn append_scalar(leaf: Leaf, builder: &mut dyn ArrayBuilder, value: Option<&Avro>) {
    match leaf {
        Leaf::Bool => append_to!(
            builder,
            BooleanBuilder,
            match value {
                Some(Avro::Boolean(value)) => Some(*value),
                _ => None,
            }
        ),
        Leaf::Int32 => append_to!(
            builder,
            Int32Builder,
            match value {
                Some(Avro::Int(value)) => Some(*value),
                _ => None,
            }
        ),
        Leaf::Int64 => append_to!(
            builder,
            Int64Builder,
            match value {
                Some(Avro::Long(value)) => Some(*value),
                _ => None,
            }
        ),
        Leaf::Float32 => append_to!(
            builder,
            Float32Builder,
            match value {
                Some(Avro::Float(value)) => Some(*value),
                _ => None,
            }
        ),
        Leaf::Float64 => append_to!(
            builder,
            Float64Builder,
            match value {
                Some(Avro::Double(value)) => Some(*value),
                _ => None,
            }
        ),
        Leaf::Text => append_to!(
            builder,
            StringBuilder,
            match value {
                Some(Avro::String(text) | Avro::Enum(_, text)) =>
                    Some(Cow::Borrowed(text.as_str())),
                Some(Avro::Uuid(uuid)) => Some(Cow::Owned(uuid.to_string())),
                _ => None,
            }
        ),
        Leaf::Binary => append_to!(
            builder,
            BinaryBuilder,
            match value {
                Some(Avro::Bytes(bytes) | Avro::Fixed(_, bytes)) => Some(bytes.as_slice()),
                _ => None,
            }
        ),
        Leaf::TimestampMillis => append_to!(
            builder,
            TimestampMillisecondBuilder,
            match value {
                Some(Avro::TimestampMillis(value)) => Some(*value),
                _ => None,
            }
        ),
        Leaf::TimestampMicros => append_to!(
            builder,
            TimestampMicrosecondBuilder,
            match value {
                Some(Avro::TimestampMicros(value)) => Some(*value),
                _ => None,
            }
        ),
    }
}

/// The Avro value of one leaf at `row`: null where the column is.
fn value_at(field: &LeafColumn, array: &ArrayRef, row: usize) -> Result<Avro, LogError> {
    if array.is_null(row) {
        return Ok(Avro::Null);
    }
    if !field.list {
        return scalar_at(field.leaf, array.as_ref(), row, &field.path);
    }
    let list = array
        .as_list_opt::<i32>()
        .ok_or_else(|| column_error(&field.path))?;
    let items = list.value(row);
    (0..items.len())
        .map(|item| scalar_at(field.leaf, items.as_ref(), item, &field.path))
        .collect::<Result<_, _>>()
        .map(Avro::Array)
}

fn column_error(path: &str) -> LogError {
    LogError::Schema(format!(
        "log column `{path}` does not hold its declared type"
    ))
}

fn scalar_at(leaf: Leaf, array: &dyn Array, row: usize, path: &str) -> Result<Avro, LogError> {
    if array.is_null(row) {
        return Ok(Avro::Null);
    }
    let wrong = || column_error(path);
    Ok(match leaf {
        Leaf::Bool => Avro::Boolean(array.as_boolean_opt().ok_or_else(wrong)?.value(row)),
        Leaf::Int32 => Avro::Int(
            array
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(wrong)?
                .value(row),
        ),
        Leaf::Int64 => Avro::Long(
            array
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(wrong)?
                .value(row),
        ),
        Leaf::Float32 => Avro::Float(
            array
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(wrong)?
                .value(row),
        ),
        Leaf::Float64 => Avro::Double(
            array
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(wrong)?
                .value(row),
        ),
        Leaf::Text => Avro::String(
            array
                .as_string_opt::<i32>()
                .ok_or_else(wrong)?
                .value(row)
                .to_owned(),
        ),
        Leaf::Binary => Avro::Bytes(
            array
                .as_binary_opt::<i32>()
                .ok_or_else(wrong)?
                .value(row)
                .to_vec(),
        ),
        Leaf::TimestampMillis => Avro::TimestampMillis(
            array
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(wrong)?
                .value(row),
        ),
        Leaf::TimestampMicros => Avro::TimestampMicros(
            array
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(wrong)?
                .value(row),
        ),
    })
}

/// The record of `nodes` from the leaf values, in column order.
fn rebuild(nodes: &[(String, Node)], leaves: &[Avro]) -> Avro {
    Avro::Record(
        nodes
            .iter()
            .map(|(name, node)| {
                let value = match node {
                    Node::Leaf(index) => leaves[*index].clone(),
                    Node::Record(children) => rebuild(children, leaves),
                };
                (name.clone(), value)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type": "record", "name": "E", "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user_id", "type": "long"},
        {"name": "action", "type": {"type": "enum", "name": "A", "symbols": ["LIKE", "PASS"]}},
        {"name": "country", "type": ["null", "string"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "device", "type": {"type": "record", "name": "D", "fields": [
            {"name": "platform", "type": "string"}]}},
        {"name": "attributes", "type": {"type": "map", "values": "string"}}
    ]}"#;

    fn event(country: Option<&str>) -> Avro {
        Avro::Record(vec![
            ("id".into(), Avro::String("e-1".into())),
            ("ts".into(), Avro::TimestampMillis(1_790_000_000_000)),
            ("user_id".into(), Avro::Long(7)),
            ("action".into(), Avro::Enum(0, "LIKE".into())),
            (
                "country".into(),
                match country {
                    Some(country) => Avro::Union(1, Box::new(Avro::String(country.into()))),
                    None => Avro::Union(0, Box::new(Avro::Null)),
                },
            ),
            (
                "tags".into(),
                Avro::Array(vec![Avro::String("a".into()), Avro::String("b".into())]),
            ),
            (
                "device".into(),
                Avro::Record(vec![("platform".into(), Avro::String("IOS".into()))]),
            ),
            ("attributes".into(), Avro::Map(Default::default())),
        ])
    }

    fn logged(event: Avro, offset: i64) -> LoggedEvent {
        LoggedEvent {
            event,
            event_time_micros: 1_790_000_000_000_000,
            ingest_time_micros: 1_790_000_000_500_000,
            source: "events/0".into(),
            offset,
        }
    }

    #[test]
    fn leaves_are_columns_named_by_their_paths() {
        let columns =
            LogColumns::of_schema(&Schema::parse_str(SCHEMA).expect("a schema")).expect("columns");
        let names: Vec<String> = columns
            .arrow_schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                EVENT_TIME,
                INGEST_TIME,
                SOURCE,
                OFFSET,
                "id",
                "ts",
                "user_id",
                "action",
                "country",
                "tags",
                "device.platform"
            ]
        );
    }

    #[test]
    fn events_come_back_as_records_the_projection_reads() {
        let columns =
            LogColumns::of_schema(&Schema::parse_str(SCHEMA).expect("a schema")).expect("columns");
        let events = [logged(event(Some("SE")), 3), logged(event(None), 4)];
        let batch = columns.batch(&events).expect("a batch");
        let back = LogColumns::of_arrow(batch.schema().as_ref())
            .expect("columns")
            .events(&batch)
            .expect("events");
        let expected = |country: Avro| {
            Avro::Record(vec![
                ("id".into(), Avro::String("e-1".into())),
                ("ts".into(), Avro::TimestampMillis(1_790_000_000_000)),
                ("user_id".into(), Avro::Long(7)),
                ("action".into(), Avro::String("LIKE".into())),
                ("country".into(), country),
                (
                    "tags".into(),
                    Avro::Array(vec![Avro::String("a".into()), Avro::String("b".into())]),
                ),
                (
                    "device".into(),
                    Avro::Record(vec![("platform".into(), Avro::String("IOS".into()))]),
                ),
            ])
        };
        assert_eq!(back[0].event, expected(Avro::String("SE".into())));
        assert_eq!(back[1].event, expected(Avro::Null));
        assert_eq!((back[1].source.as_str(), back[1].offset), ("events/0", 4));
        assert_eq!(back[0].event_time_micros, events[0].event_time_micros);
    }
}
