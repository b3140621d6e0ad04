//! One entity at a time in the ingester: each batch's events of an entity are ordered against
//! the entity's remembered ties and written, and their contributions are folded into its
//! stored tiles, read, folded and rewritten; late events are told apart before that.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use quiver_core::aggregate::{Contribution, fold};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::store::FeatureStore;
use quiver_core::ties::{Contender, settle_ties};

use crate::IngestError;
use crate::metrics::ViewLabels;
use crate::pipeline::{Outputs, now_micros, retry_while_unavailable, store_rows};
use crate::route::{DeadLetterReason, Route, ViewBatch};

/// Entities whose tiles are read and rewritten at once.
const ENTITIES_IN_FLIGHT: usize = 64;

/// What storing one batch's entities did.
#[derive(Debug, Default)]
pub(crate) struct EntitiesStored {
    pub(crate) rows: u64,
    pub(crate) tiles: u64,
    pub(crate) duplicates: u64,
    pub(crate) beyond_horizon: u64,
    pub(crate) tied: u64,
}

impl EntitiesStored {
    fn add(mut self, other: EntitiesStored) -> Self {
        self.rows += other.rows;
        self.tiles += other.tiles;
        self.duplicates += other.duplicates;
        self.beyond_horizon += other.beyond_horizon;
        self.tied += other.tied;
        self
    }
}

/// One entity's part of a batch, in record order.
#[derive(Default)]
struct EntityEvents<'b> {
    contenders: Vec<Contender>,
    contributions: Vec<&'b Contribution>,
}

/// Stores the events of `batch` one entity at a time: reads what the entity remembers, settles
/// the feature values each event wins (see `quiver_core::ties`) and folds the contributions
/// into its tiles, then writes those values and, at the same time, the tiles that changed, the
/// event ids counted for the first time and what it now remembers. Calls for one source must not overlap: each reads what the
/// last one wrote.
pub(crate) async fn store_entities<S: FeatureStore, K>(
    batch: &ViewBatch,
    outputs: &Outputs<'_, S, K>,
) -> Result<EntitiesStored, IngestError> {
    let mut by_entity: HashMap<&EntityKey, EntityEvents<'_>> = HashMap::new();
    for contender in &batch.contenders {
        by_entity
            .entry(&contender.write.key)
            .or_default()
            .contenders
            .push(contender.clone());
    }
    for (key, contribution) in &batch.contributions {
        by_entity
            .entry(key)
            .or_default()
            .contributions
            .push(contribution);
    }
    futures::stream::iter(by_entity)
        .map(|(key, events)| store_entity(batch, outputs, key, events))
        .buffer_unordered(ENTITIES_IN_FLIGHT)
        .try_fold(EntitiesStored::default(), |total, stored| async move {
            Ok(total.add(stored))
        })
        .await
}

async fn store_entity<S: FeatureStore, K>(
    batch: &ViewBatch,
    outputs: &Outputs<'_, S, K>,
    key: &EntityKey,
    events: EntityEvents<'_>,
) -> Result<EntitiesStored, IngestError> {
    let route = &batch.route;
    let labels = ViewLabels {
        view: route.view.view.name.to_string(),
    };
    // Cloned: a family's guard must not be held across an await.
    let retries = outputs.metrics.write_retries.get_or_create(&labels).clone();
    let mut stored = retry_while_unavailable(&retries, || {
        outputs
            .store
            .read_tiles(&route.entity, &route.view, key, None)
    })
    .await?;
    let remembered = std::mem::take(&mut stored.ties);
    let settled = settle_ties(&route.view.view, remembered, events.contenders);
    let mut folded = fold(&route.view.view, stored, events.contributions, now_micros());
    folded.changes.ties = settled.remembered;
    // At once: in whichever order they land, a replay after a crash settles the same way.
    let values = store_rows(batch, &settled.writes, outputs);
    let tiles = async {
        if !folded.changes.is_empty() {
            retry_while_unavailable(&retries, || {
                outputs
                    .store
                    .write_tiles(&route.entity, &route.view, key, &folded.changes)
            })
            .await?;
        }
        Ok(())
    };
    let (rows, ()) = futures::try_join!(values, tiles)?;
    Ok(EntitiesStored {
        rows,
        tiles: folded.changes.tiles.len() as u64,
        duplicates: folded.duplicates,
        beyond_horizon: folded.beyond_horizon,
        tied: settled.tied,
    })
}

/// The newest event time seen per view and source partition, against which lateness is judged.
///
/// Kept in memory, and only for views that declare an allowed lateness: after a restart it
/// starts again from the events replayed, so an event right after a restart is judged against
/// fewer predecessors than it first was.
#[derive(Debug, Default)]
pub(crate) struct Watermarks(HashMap<Name, HashMap<String, i64>>);

impl Watermarks {
    /// Lets an event of `route` from `source` through, or names it late when it trails the
    /// newest event seen there by more than the view's allowed lateness.
    pub(crate) fn admit(
        &mut self,
        route: &Route,
        source: &str,
        event_time_micros: i64,
    ) -> Result<(), DeadLetterReason> {
        let view = &route.view.view;
        let Some(allowed) = view.allowed_lateness else {
            return Ok(());
        };
        let sources = match self.0.get_mut(&view.name) {
            Some(sources) => sources,
            None => self.0.entry(view.name.clone()).or_default(),
        };
        let Some(newest) = sources.get_mut(source) else {
            sources.insert(source.to_owned(), event_time_micros);
            return Ok(());
        };
        let behind = *newest - event_time_micros;
        if behind > allowed.0 as i64 * 1_000_000 {
            return Err(DeadLetterReason {
                reason: "late_event",
                detail: format!(
                    "event time {event_time_micros} µs is {} s behind the newest event of \
                     {source} ({} µs); feature view `{}` allows {allowed}",
                    behind / 1_000_000,
                    *newest,
                    view.name
                ),
            });
        }
        *newest = (*newest).max(event_time_micros);
        Ok(())
    }
}

/// The source name of a Kafka partition in tiles: `topic/partition`.
pub(crate) fn partition_source(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}
