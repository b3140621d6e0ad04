//! The consistency check: a sample of entities, their values in the online store now, and the
//! same values recomputed from the offline log at the same instant, compared feature by
//! feature. Every logged event counts, also one dated ahead of the clock, as in the store.
//!
//! Online values are read as serving reads them: a stored feature while the view's TTL lasts,
//! an aggregate evaluated over the entity's tiles, nothing for an entity the view holds nothing
//! of. Floating-point values match within a relative 1e-9, since the log replays events in
//! event-time order and the ingester folded them in arrival order.

use std::collections::{BTreeMap, HashMap};

use quiver_core::aggregate::evaluate;
use quiver_core::definition::{Derivation, Entity, Feature, VersionedView};
use quiver_core::history::values_after_all;
use quiver_core::key::EntityKey;
use quiver_core::read::{ReadPlan, Status, status, stored_features};
use quiver_core::store::{EntityRow, FeatureStore, StoreError};
use quiver_core::value::Value;

use crate::LogError;
use crate::historical::view_events;
use crate::log::OfflineLog;

/// Why a check stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the online store failed: {0}")]
    Store(#[from] StoreError),
}

/// One feature's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureReport {
    pub compared: u64,
    pub matched: u64,
    /// The first mismatches: the entity, then the online and the offline value.
    pub mismatches: Vec<(String, Option<Value>, Option<Value>)>,
}

impl FeatureReport {
    pub fn match_rate(&self) -> f64 {
        match self.compared {
            0 => 1.0,
            compared => self.matched as f64 / compared as f64,
        }
    }
}

/// How many mismatches a report keeps per feature.
const EXAMPLES: usize = 5;

/// Compares, for up to `sample` entities of each view `plan` reads (those the log holds, taken
/// evenly over their keys' order), every column of `plan` online and offline at `now_micros`.
/// The reports are by column name, in the plan's order.
pub async fn check<S: FeatureStore>(
    log: &OfflineLog,
    store: &S,
    plan: &ReadPlan<'_>,
    sample: usize,
    now_micros: i64,
) -> Result<Vec<(String, FeatureReport)>, ConsistencyError> {
    let mut reports: Vec<(String, FeatureReport)> = plan
        .columns
        .iter()
        .map(|column| (column.name.clone(), FeatureReport::default()))
        .collect();
    for (index, (entity, view)) in plan.views.iter().enumerate() {
        let events = view_events(log, entity, view, |_| true).await?;
        for (key, history) in sampled(events, sample) {
            let offline = values_after_all(&view.view, history, now_micros);
            let row = store.read_entity(entity, view, &key).await?;
            let columns = plan.columns.iter().zip(&mut reports);
            for (column, (_, report)) in columns.filter(|(column, _)| column.view == index) {
                let Some(position) = view
                    .view
                    .features
                    .iter()
                    .position(|feature| feature.name == column.feature)
                else {
                    continue;
                };
                let feature = &view.view.features[position];
                let online = served(view, feature, &row, now_micros);
                let offline = offline[position].as_ref().map(|point| &point.value);
                report.compared += 1;
                if same(online.as_ref(), offline) {
                    report.matched += 1;
                } else if report.mismatches.len() < EXAMPLES {
                    report
                        .mismatches
                        .push((describe(entity, &key), online, offline.cloned()));
                }
            }
        }
    }
    Ok(reports)
}

/// Up to `sample` entities, spread evenly over the keys' order, so the same log gives the same
/// sample.
fn sampled<T>(events: HashMap<Vec<u8>, (EntityKey, T)>, sample: usize) -> Vec<(EntityKey, T)> {
    let ordered: BTreeMap<Vec<u8>, (EntityKey, T)> = events.into_iter().collect();
    let step = ordered.len().div_ceil(sample.max(1)).max(1);
    ordered.into_values().step_by(step).take(sample).collect()
}

fn describe(entity: &Entity, key: &EntityKey) -> String {
    format!("{} {key}", entity.name)
}

/// The value serving answers for `feature` from the entity's stored `row` at `now_micros`.
fn served(
    view: &VersionedView,
    feature: &Feature,
    row: &EntityRow,
    now_micros: i64,
) -> Option<Value> {
    let absent = row.values.iter().all(Option::is_none) && row.tiles.tiles.is_empty();
    match &feature.derivation {
        Derivation::Field(_) => {
            let slot = stored_features(view)
                .iter()
                .position(|name| name == &feature.name)?;
            row.values
                .get(slot)?
                .as_ref()
                .filter(|stored| {
                    status(view.view.ttl, stored.event_time_micros, now_micros) == Status::Ok
                })
                .map(|stored| stored.value.clone())
        }
        Derivation::Aggregate(_) if absent => None,
        Derivation::Aggregate(aggregate) => {
            evaluate(feature, aggregate, &row.tiles.tiles, now_micros).map(|(value, _)| value)
        }
    }
}

/// Whether two values are the same, floats within a relative 1e-9.
fn same(online: Option<&Value>, offline: Option<&Value>) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    match (online, offline) {
        (Some(Value::Float64(a)), Some(Value::Float64(b))) => close(*a, *b),
        (Some(Value::Float32(a)), Some(Value::Float32(b))) => close(f64::from(*a), f64::from(*b)),
        (online, offline) => online == offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_match_within_rounding_and_nothing_else_does() {
        let float = |value: f64| Some(Value::Float64(value));
        assert!(same(float(0.1 + 0.2).as_ref(), float(0.3).as_ref()));
        assert!(!same(float(0.3).as_ref(), float(0.31).as_ref()));
        assert!(same(None, None));
        assert!(!same(Some(&Value::Int64(1)), None));
    }
}
