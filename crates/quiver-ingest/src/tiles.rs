//! Aggregates in the ingester: each batch's contributions are folded into the stored tiles of
//! their entities, read, folded and rewritten one entity at a time, and late events are told
//! apart before that.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use prometheus_client::metrics::counter::Counter;
use quiver_core::aggregate::{Contribution, fold};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::store::FeatureStore;

use crate::IngestError;
use crate::pipeline::{now_micros, retry_while_unavailable};
use crate::route::{DeadLetterReason, Route, ViewBatch};

/// Entities whose tiles are read and rewritten at once.
const ENTITIES_IN_FLIGHT: usize = 64;

/// What storing one batch's tiles did.
#[derive(Debug, Default)]
pub(crate) struct TilesStored {
    pub(crate) tiles: u64,
    pub(crate) duplicates: u64,
    pub(crate) beyond_horizon: u64,
}

impl TilesStored {
    fn add(mut self, other: TilesStored) -> Self {
        self.tiles += other.tiles;
        self.duplicates += other.duplicates;
        self.beyond_horizon += other.beyond_horizon;
        self
    }
}

/// Folds the contributions of `batch` into the tiles of their entities and writes back the
/// tiles that changed, with the event ids counted for the first time. Calls for one source must
/// not overlap: each reads what the last one wrote.
pub(crate) async fn store_tiles<S: FeatureStore>(
    store: &S,
    batch: &ViewBatch,
    retries: &Counter,
) -> Result<TilesStored, IngestError> {
    let route = &batch.route;
    let mut by_entity: HashMap<&EntityKey, Vec<&Contribution>> = HashMap::new();
    for (key, contribution) in &batch.contributions {
        by_entity.entry(key).or_default().push(contribution);
    }
    futures::stream::iter(by_entity)
        .map(|(key, events)| async move {
            let stored = retry_while_unavailable(retries, || {
                store.read_tiles(&route.entity, &route.view, key, None)
            })
            .await?;
            let folded = fold(&route.view.view, stored, events, now_micros());
            if !folded.changes.is_empty() {
                retry_while_unavailable(retries, || {
                    store.write_tiles(&route.entity, &route.view, key, &folded.changes)
                })
                .await?;
            }
            Ok::<_, IngestError>(TilesStored {
                tiles: folded.changes.tiles.len() as u64,
                duplicates: folded.duplicates,
                beyond_horizon: folded.beyond_horizon,
            })
        })
        .buffer_unordered(ENTITIES_IN_FLIGHT)
        .try_fold(TilesStored::default(), |total, stored| async move {
            Ok(total.add(stored))
        })
        .await
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
