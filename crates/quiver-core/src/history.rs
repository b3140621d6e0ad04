//! Point-in-time values: what serving would have answered for one entity of one view at past
//! instants, computed from the view's events with the rules serving and ingestion use.
//!
//! A stored feature at instant `t` is the value of the newest event at or before `t` that set
//! it, events of one event time ordered by their [`Tiebreak`] as [`crate::ties`] orders them
//! online, and nothing once the view's TTL has passed since that event. An aggregate is its
//! window at `t` over the events at or before `t`, folded with [`aggregate::fold`] and read with
//! [`aggregate::evaluate`]: the same maths, not a second implementation. Events are folded in
//! event-time order, as one source whose positions are that order, so each event counts once
//! and a copy of an event id within the dedup horizon counts no more, as online.

use std::collections::HashSet;

use crate::aggregate::{self, Contribution, EntityTiles, Input, Tile};
use crate::definition::{Derivation, Feature, FeatureView};
use crate::name::Name;
use crate::read::{Status, status};
use crate::store::FeatureWrite;
use crate::ties::Tiebreak;
use crate::value::Value;

/// The source name the events of a point-in-time fold are counted under.
const HISTORY_SOURCE: &str = "history";

/// One event of an entity in a view, as the ingester projected it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalEvent {
    /// The values it sets, at its event time; the key is the entity's.
    pub write: FeatureWrite,
    pub tiebreak: Tiebreak,
    /// Its id, where the view declares one.
    pub event_id: Option<String>,
    /// What it gives each aggregate, in [`aggregate::aggregate_features`] order.
    pub inputs: Vec<Input>,
}

/// A value as serving would have answered it, with its event time.
#[derive(Debug, Clone, PartialEq)]
pub struct PointValue {
    pub value: Value,
    pub event_time_micros: i64,
}

/// The value of every feature of `view`, in declaration order, at each instant of `at_micros`
/// (microseconds since the epoch, in any order), from one entity's `events` in any order.
/// `None` where serving would have answered NOT_FOUND.
pub fn values_at(
    view: &FeatureView,
    mut events: Vec<HistoricalEvent>,
    at_micros: &[i64],
) -> Vec<Vec<Option<PointValue>>> {
    events.sort_by(|a, b| {
        (a.write.event_time_micros, &a.tiebreak).cmp(&(b.write.event_time_micros, &b.tiebreak))
    });
    let mut order: Vec<usize> = (0..at_micros.len()).collect();
    order.sort_by_key(|&index| at_micros[index]);
    let mut replay = Replay::new(view);
    let mut answers = vec![Vec::new(); at_micros.len()];
    let mut events = events.into_iter().peekable();
    for index in order {
        let at = at_micros[index];
        let mut chunk = Vec::new();
        while let Some(event) = events.next_if(|event| event.write.event_time_micros <= at) {
            chunk.push(event);
        }
        replay.take(chunk);
        answers[index] = replay.values_at(at);
    }
    answers
}

/// The value of every feature of `view` at `at_micros` once all of one entity's `events` are
/// in, also those dated after it: what the online store serves at that instant, when events
/// ahead of the clock have arrived (as the ingester accepts them, within an hour).
pub fn values_after_all(
    view: &FeatureView,
    mut events: Vec<HistoricalEvent>,
    at_micros: i64,
) -> Vec<Option<PointValue>> {
    events.sort_by(|a, b| {
        (a.write.event_time_micros, &a.tiebreak).cmp(&(b.write.event_time_micros, &b.tiebreak))
    });
    let mut replay = Replay::new(view);
    replay.take(events);
    replay.values_at(at_micros)
}

/// The state of one entity after the events replayed so far.
struct Replay<'v> {
    view: &'v FeatureView,
    /// Per feature of the view, the newest value that set it; `None` for aggregates.
    latest: Vec<Option<PointValue>>,
    tiles: EntityTiles,
    /// The position of the next event in the history source.
    next_offset: i64,
}

impl<'v> Replay<'v> {
    fn new(view: &'v FeatureView) -> Self {
        Replay {
            view,
            latest: vec![None; view.features.len()],
            tiles: EntityTiles::default(),
            next_offset: 0,
        }
    }

    /// Takes the next events, in event-time and tiebreak order.
    fn take(&mut self, chunk: Vec<HistoricalEvent>) {
        let Some(first) = chunk.first() else {
            return;
        };
        // The earliest event of the chunk is "now" for the fold: no tile the chunk touches has
        // left its window yet, and no event is beyond its dedup horizon, as when ingested live.
        let now_micros = first.write.event_time_micros;
        let mut contributions = Vec::with_capacity(chunk.len());
        for event in chunk {
            self.set_values(&event.write);
            contributions.push(Contribution {
                source: HISTORY_SOURCE.to_owned(),
                offset: self.next_offset,
                event_time_micros: event.write.event_time_micros,
                event_id: event.event_id,
                inputs: event.inputs,
            });
            self.next_offset += 1;
        }
        self.fold(&contributions, now_micros);
    }

    fn set_values(&mut self, write: &FeatureWrite) {
        for (name, value) in &write.values {
            if let Some(slot) = self.position(name) {
                self.latest[slot] = Some(PointValue {
                    value: value.clone(),
                    event_time_micros: write.event_time_micros,
                });
            }
        }
    }

    fn position(&self, name: &Name) -> Option<usize> {
        self.view
            .features
            .iter()
            .position(|feature| &feature.name == name)
    }

    /// Folds `contributions` into the tiles they touch, and forgets event ids past their
    /// horizon, as the store's TTL does.
    fn fold(&mut self, contributions: &[Contribution], now_micros: i64) {
        let aggregates = aggregate::aggregate_features(self.view);
        if aggregates.is_empty() {
            return;
        }
        let touched: HashSet<(&Name, i64)> = contributions
            .iter()
            .flat_map(|contribution| {
                aggregates.iter().map(|(feature, aggregate)| {
                    (
                        &feature.name,
                        aggregate.tile_start(contribution.event_time_micros),
                    )
                })
            })
            .collect();
        self.tiles
            .applied
            .retain(|applied| applied.expires_micros > now_micros);
        let stored = EntityTiles {
            tiles: self
                .tiles
                .tiles
                .iter()
                .filter(|tile| touched.contains(&(&tile.feature, tile.start_micros)))
                .cloned()
                .collect(),
            deleted_through_micros: None,
            applied: self.tiles.applied.clone(),
            ties: Vec::new(),
        };
        let folded = aggregate::fold(self.view, stored, contributions, now_micros);
        replace_tiles(&mut self.tiles.tiles, folded.changes.tiles);
        self.tiles.applied.extend(folded.changes.applied);
    }

    /// Every feature's value at `at_micros`, once the events up to it are taken.
    fn values_at(&mut self, at_micros: i64) -> Vec<Option<PointValue>> {
        self.forget_tiles_before(at_micros);
        let stored_alive =
            self.latest.iter().flatten().any(|latest| {
                status(self.view.ttl, latest.event_time_micros, at_micros) == Status::Ok
            });
        // Serving finds no row for an entity the view holds nothing of, and answers NOT_FOUND
        // for its aggregates rather than a count of 0.
        let held = stored_alive || !self.tiles.tiles.is_empty();
        self.view
            .features
            .iter()
            .zip(&self.latest)
            .map(|(feature, latest)| self.value_of(feature, latest.as_ref(), at_micros, held))
            .collect()
    }

    fn value_of(
        &self,
        feature: &Feature,
        latest: Option<&PointValue>,
        at_micros: i64,
        held: bool,
    ) -> Option<PointValue> {
        match &feature.derivation {
            Derivation::Field(_) => latest
                .filter(|latest| {
                    status(self.view.ttl, latest.event_time_micros, at_micros) == Status::Ok
                })
                .cloned(),
            Derivation::Aggregate(_) if !held => None,
            Derivation::Aggregate(aggregate) => {
                aggregate::evaluate(feature, aggregate, &self.tiles.tiles, at_micros).map(
                    |(value, newest)| PointValue {
                        value,
                        event_time_micros: newest.unwrap_or(0),
                    },
                )
            }
        }
    }

    /// Drops the tiles whose window has passed at `at_micros`, as their TTL does in the store.
    fn forget_tiles_before(&mut self, at_micros: i64) {
        let aggregates = aggregate::aggregate_features(self.view);
        self.tiles.tiles.retain(|tile| {
            aggregates
                .iter()
                .find(|(feature, _)| feature.name == tile.feature)
                .and_then(|(_, aggregate)| aggregate.tile_expiry_micros(tile.start_micros))
                .is_none_or(|expiry| expiry > at_micros)
        });
    }
}

/// Puts each changed tile in place of the stored one it replaces, or beside them.
fn replace_tiles(tiles: &mut Vec<Tile>, changed: Vec<Tile>) {
    for tile in changed {
        match tiles.iter_mut().find(|stored| {
            stored.feature == tile.feature
                && stored.start_micros == tile.start_micros
                && stored.source == tile.source
        }) {
            Some(stored) => *stored = tile,
            None => tiles.push(tile),
        }
    }
}

#[cfg(test)]
mod tests;
