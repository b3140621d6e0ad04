//! Point-in-time training data: for each row of entity keys and a timestamp, every requested
//! feature as serving would have answered it at that timestamp, computed from the offline log.
//!
//! The log's events are projected onto each view with the ingester's own projection
//! (`quiver_avro::project`), grouped by entity, and replayed by [`quiver_core::history`], which
//! folds aggregates with the serving code. Only the events of entities the rows name are kept.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{Field, Schema as ArrowSchema};
use quiver_avro::project::{aggregate_inputs, event_id, project};
use quiver_core::aggregate::{Input, aggregate_features};
use quiver_core::definition::{Entity, VersionedView};
use quiver_core::history::{HistoricalEvent, PointValue, values_at};
use quiver_core::key::EntityKey;
use quiver_core::read::ReadPlan;
use quiver_core::ties::Tiebreak;

use crate::LogError;
use crate::log::OfflineLog;
use crate::rows::EntityRows;
use crate::values::{UTC, value_array};

/// The suffix of the column of a feature's event times.
pub const EVENT_TIME_SUFFIX: &str = "__event_time";
/// The suffix of the column of a feature's statuses: `ok` or `not_found`.
pub const STATUS_SUFFIX: &str = "__status";

/// What a retrieval gives: the rows as they came, then per requested feature its value, event
/// time and status columns.
#[derive(Debug)]
pub struct Retrieval {
    pub batch: RecordBatch,
    /// How many logged events were replayed.
    pub events_read: u64,
}

/// The values of `plan`'s columns at each row of `rows`, from `log`.
pub async fn retrieve(
    log: &OfflineLog,
    plan: &ReadPlan<'_>,
    rows: &EntityRows,
) -> Result<Retrieval, LogError> {
    let mut cells: Vec<Vec<Option<PointValue>>> = vec![vec![None; rows.len()]; plan.columns.len()];
    let mut events_read = 0;
    for (index, (entity, view)) in plan.views.iter().enumerate() {
        let columns: Vec<(usize, usize)> = plan
            .columns
            .iter()
            .enumerate()
            .filter(|(_, column)| column.view == index)
            .filter_map(|(position, column)| {
                let feature = view
                    .view
                    .features
                    .iter()
                    .position(|feature| feature.name == column.feature)?;
                Some((position, feature))
            })
            .collect();
        let rows_of = rows.rows_by_entity(entity)?;
        let mut events = view_events(log, entity, view, |key| rows_of.contains_key(key)).await?;
        for (key, row_indices) in &rows_of {
            let history = events
                .remove(key)
                .map(|(_, events)| events)
                .unwrap_or_default();
            events_read += history.len() as u64;
            let times: Vec<i64> = row_indices.iter().map(|&row| rows.timestamp(row)).collect();
            for (row, values) in row_indices
                .iter()
                .zip(values_at(&view.view, history, &times))
            {
                for &(position, feature) in &columns {
                    cells[position][*row] = values[feature].clone();
                }
            }
        }
    }
    Ok(Retrieval {
        batch: output(plan, rows, &cells)?,
        events_read,
    })
}

/// Each entity's logged events of `view`, projected, and its pushed rows, by encoded key, of the
/// entities `wanted` keeps.
pub(crate) async fn view_events(
    log: &OfflineLog,
    entity: &Entity,
    view: &VersionedView,
    wanted: impl Fn(&[u8]) -> bool,
) -> Result<HashMap<Vec<u8>, (EntityKey, Vec<HistoricalEvent>)>, LogError> {
    let mut by_entity: HashMap<Vec<u8>, (EntityKey, Vec<HistoricalEvent>)> = HashMap::new();
    log.for_each_event(&view.view.name, view.version, |logged, _| {
        let unprojectable =
            |rejection| LogError::unprojectable(&logged, &view.view.name, rejection);
        let mut write = project(entity, &view.view, &logged.event, logged.ingest_time_micros)
            .map_err(unprojectable)?;
        let key = write.key.encode();
        if !wanted(&key) {
            return Ok(());
        }
        // The time the online store was given, a sample's rebasing included.
        write.event_time_micros = logged.event_time_micros;
        let event_id = event_id(&view.view, &logged.event).map_err(unprojectable)?;
        let inputs = aggregate_inputs(&view.view, &logged.event).map_err(unprojectable)?;
        let (_, events) = by_entity
            .entry(key)
            .or_insert_with(|| (write.key.clone(), Vec::new()));
        events.push(HistoricalEvent {
            write,
            tiebreak: Tiebreak::of(event_id.as_deref(), logged.offset),
            event_id,
            inputs,
        });
        Ok(())
    })
    .await?;
    // Pushed rows set values and count in no aggregate; they lose a tie with an event.
    let aggregates = aggregate_features(&view.view).len();
    for write in log.pushes(entity, view).await? {
        let key = write.key.encode();
        if !wanted(&key) {
            continue;
        }
        let (_, events) = by_entity
            .entry(key)
            .or_insert_with(|| (write.key.clone(), Vec::new()));
        events.push(HistoricalEvent {
            write,
            tiebreak: Tiebreak::Offset(i64::MIN),
            event_id: None,
            inputs: vec![Input::Nothing; aggregates],
        });
    }
    Ok(by_entity)
}

/// The rows' own columns, then a value, event time and status column per plan column.
fn output(
    plan: &ReadPlan<'_>,
    rows: &EntityRows,
    cells: &[Vec<Option<PointValue>>],
) -> Result<RecordBatch, LogError> {
    let input = rows.batch();
    let mut fields: Vec<Arc<Field>> = input.schema().fields().iter().cloned().collect();
    let mut arrays: Vec<ArrayRef> = input.columns().to_vec();
    for (column, cells) in plan.columns.iter().zip(cells) {
        let (_, view) = plan.views[column.view];
        let feature = view
            .view
            .features
            .iter()
            .find(|feature| feature.name == column.feature)
            .ok_or_else(|| LogError::Schema(format!("no feature `{}`", column.name)))?;
        let values = value_array(feature.value_type, cells);
        fields.push(Arc::new(Field::new(
            &column.name,
            values.data_type().clone(),
            true,
        )));
        arrays.push(values);
        let event_times: TimestampMicrosecondArray = cells
            .iter()
            .map(|cell| cell.as_ref().map(|point| point.event_time_micros))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone(UTC);
        fields.push(Arc::new(Field::new(
            format!("{}{EVENT_TIME_SUFFIX}", column.name),
            event_times.data_type().clone(),
            true,
        )));
        arrays.push(Arc::new(event_times));
        let statuses: StringArray = cells
            .iter()
            .map(|cell| Some(if cell.is_some() { "ok" } else { "not_found" }))
            .collect();
        fields.push(Arc::new(Field::new(
            format!("{}{STATUS_SUFFIX}", column.name),
            arrow_schema::DataType::Utf8,
            false,
        )));
        arrays.push(Arc::new(statuses));
    }
    Ok(RecordBatch::try_new(
        Arc::new(ArrowSchema::new(fields)),
        arrays,
    )?)
}
