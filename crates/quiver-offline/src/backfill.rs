//! Backfill: the tiles of aggregates from the events the ingester logged before it counted
//! them live, written to the online store, so that a window added today is complete today.
//!
//! The hand-over with the live ingester is per event: each log file records the aggregates
//! its events were folded into when ingested ([`crate::log::FOLDED_AGGREGATES_KEY`]), and a
//! backfill counts an event only into the aggregates its file does not list. Its tiles carry
//! the source `backfill:<source>`, which no ingester writes, so the two never overwrite each
//! other's tiles; a window's value adds the tiles of every source. Event ids the live ingester
//! counted are read with the tiles and taken at their backfill positions, so an event counts
//! once in each aggregate, also when a copy of it lies on the other side of the cut-over; the
//! ids a backfill counts first are stored for the ingester to see. Running a backfill
//! again changes nothing: its events are at or before its tiles' through offsets.

use std::collections::HashMap;

use quiver_avro::project::{aggregate_inputs, event_id, project};
use quiver_core::aggregate::{Contribution, Input, aggregate_features, fold};
use quiver_core::definition::{Entity, VersionedView};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::store::{FeatureStore, StoreError};

use crate::LogError;
use crate::log::OfflineLog;

/// The prefix of the sources a backfill's tiles are stored under.
pub const BACKFILL_SOURCE_PREFIX: &str = "backfill:";

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the online store failed: {0}")]
    Store(#[from] StoreError),
    #[error("feature view `{view}` has no aggregate `{feature}`")]
    NotAnAggregate { view: String, feature: String },
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillSummary {
    /// Logged events counted into at least one aggregate.
    pub events: u64,
    pub entities: u64,
    pub tiles_written: u64,
    /// Events whose id was counted already, live or by an earlier backfill.
    pub duplicates: u64,
}

/// Backfills `features` of `view` (every aggregate when empty) from `log` into `store`, as of
/// `now_micros`: tiles whose window has passed are not written.
pub async fn backfill<S: FeatureStore>(
    log: &OfflineLog,
    store: &S,
    entity: &Entity,
    view: &VersionedView,
    features: &[Name],
    now_micros: i64,
) -> Result<BackfillSummary, BackfillError> {
    let wanted = wanted_aggregates(view, features)?;
    let contributions = contributions(log, entity, view, &wanted).await?;
    let mut summary = BackfillSummary::default();
    for (key, mut contributions) in contributions {
        // `fold` takes each source's events in offset order.
        contributions.sort_by(|a, b| (&a.source, a.offset).cmp(&(&b.source, b.offset)));
        let mut stored = store.read_tiles(entity, view, &key, None).await?;
        // An id the ingester counted at its own position is the same event here, at the
        // backfill source of that position: a replay, which the through offsets settle.
        for applied in &mut stored.applied {
            if !applied.source.starts_with(BACKFILL_SOURCE_PREFIX) {
                applied.source = format!("{BACKFILL_SOURCE_PREFIX}{}", applied.source);
            }
        }
        let folded = fold(&view.view, stored, &contributions, now_micros);
        summary.events += contributions.len() as u64;
        summary.entities += 1;
        summary.duplicates += folded.duplicates;
        summary.tiles_written += folded.changes.tiles.len() as u64;
        if !folded.changes.is_empty() {
            store
                .write_tiles(entity, view, &key, &folded.changes)
                .await?;
        }
    }
    Ok(summary)
}

/// Per aggregate of the view, in `aggregate_features` order, whether to backfill it.
fn wanted_aggregates(view: &VersionedView, features: &[Name]) -> Result<Vec<bool>, BackfillError> {
    let aggregates = aggregate_features(&view.view);
    if let Some(missing) = features
        .iter()
        .find(|name| !aggregates.iter().any(|(feature, _)| &feature.name == *name))
    {
        return Err(BackfillError::NotAnAggregate {
            view: view.view.name.to_string(),
            feature: missing.to_string(),
        });
    }
    Ok(aggregates
        .iter()
        .map(|(feature, _)| features.is_empty() || features.contains(&feature.name))
        .collect())
}

/// Each entity's contributions from the log: per event, the inputs of the wanted aggregates
/// its file was not folded into, and nothing for the others.
async fn contributions(
    log: &OfflineLog,
    entity: &Entity,
    view: &VersionedView,
    wanted: &[bool],
) -> Result<HashMap<EntityKey, Vec<Contribution>>, LogError> {
    let names: Vec<&Name> = aggregate_features(&view.view)
        .into_iter()
        .map(|(feature, _)| &feature.name)
        .collect();
    let mut by_entity: HashMap<EntityKey, Vec<Contribution>> = HashMap::new();
    log.for_each_event(&view.view.name, view.version, |logged, folded| {
        let unprojectable =
            |rejection| LogError::unprojectable(&logged, &view.view.name, rejection);
        let inputs: Vec<Input> = aggregate_inputs(&view.view, &logged.event)
            .map_err(unprojectable)?
            .into_iter()
            .zip(names.iter().zip(wanted))
            .map(
                |(input, (name, wanted))| match *wanted && !folded.contains(name) {
                    true => input,
                    false => Input::Nothing,
                },
            )
            .collect();
        if inputs.iter().all(|input| *input == Input::Nothing) {
            return Ok(());
        }
        let write = project(entity, &view.view, &logged.event, logged.ingest_time_micros)
            .map_err(unprojectable)?;
        let event_id = event_id(&view.view, &logged.event).map_err(unprojectable)?;
        by_entity.entry(write.key).or_default().push(Contribution {
            source: format!("{BACKFILL_SOURCE_PREFIX}{}", logged.source),
            offset: logged.offset,
            event_time_micros: logged.event_time_micros,
            event_id,
            inputs,
        });
        Ok(())
    })
    .await?;
    Ok(by_entity)
}
