//! Events of one entity at the same millisecond: one of them wins every feature it sets, the
//! same one whatever order they arrive in.
//!
//! The winner is the event with the greater [`Tiebreak`]: its declared event id, or without one
//! its later position in the partition. The online store keeps, per feature, the value with the
//! greatest write timestamp, and breaks equal timestamps by comparing values, cell by cell. So
//! events at a whole millisecond are written at that millisecond plus a *slot*, a microsecond
//! below the next millisecond: the first event of the millisecond at slot 0 (its own event
//! time), each later one at the next slot. A later arrival beats every earlier one of its
//! millisecond, so it leaves out the features an earlier, greater event set: those it would
//! win by arrival and lose by the order. Each entity remembers the events of its recent
//! milliseconds ([`TiedEvent`]) for this, within [`TIE_HORIZON_MICROS`] of its newest one; an event
//! it remembers is written again at its own slot, so a replay or a copy changes nothing.
//!
//! Event times that are not whole milliseconds (a `timestamp-micros` field's) are written as
//! they are: their ties are left to the store.

use std::collections::BTreeSet;

use crate::definition::FeatureView;
use crate::store::FeatureWrite;

const MICROS_PER_MILLI: i64 = 1_000;

/// The last slot of a millisecond: the thousandth event of one entity at one millisecond and
/// those after it share it.
pub const LAST_SLOT: u16 = 999;

/// How far behind an entity's newest event time its events are remembered: ties come from
/// events produced together, which arrive close together, and every batch reads and rewrites
/// what an entity remembers, so it is kept small. A tie at the entity's newest millisecond is
/// always within it.
pub const TIE_HORIZON_MICROS: i64 = 1_000_000;

/// At most this many events are remembered per entity; the oldest are forgotten first.
pub const MAX_REMEMBERED: usize = 64;

/// How long stores keep what an entity remembers after it last changed: longer than a replay
/// after a crash or a rebalance takes to come, so that it finds what the batch before it left.
pub const MEMORY_TTL_SECS: u32 = 86_400;

/// Which of two events at the same event time counts as the later one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tiebreak {
    /// The event's position in its partition, for a view that declares no event id.
    Offset(i64),
    /// The event's declared id, compared as a string.
    EventId(String),
}

impl Tiebreak {
    /// The tiebreak of an event with `event_id`, if its view declares one, found at `offset`.
    pub fn of(event_id: Option<&str>, offset: i64) -> Self {
        match event_id {
            Some(id) => Tiebreak::EventId(id.to_owned()),
            None => Tiebreak::Offset(offset),
        }
    }
}

/// An event remembered so that a later one of the same millisecond is ordered against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TiedEvent {
    /// Its event time, a whole millisecond in microseconds.
    pub event_time_micros: i64,
    pub tiebreak: Tiebreak,
    /// The microsecond its values were written at, above its event time.
    pub slot: u16,
    /// The features it set, as positions in the view's declared features.
    pub features: BTreeSet<u16>,
}

/// One event's feature write, with its tiebreak.
#[derive(Debug, Clone, PartialEq)]
pub struct Contender {
    pub write: FeatureWrite,
    pub tiebreak: Tiebreak,
}

/// The outcome of [`settle_ties`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    /// The writes to store, each at its event time plus its slot and with only the features
    /// it wins.
    pub writes: Vec<FeatureWrite>,
    /// What the entity remembers once the writes are stored; `None` when that did not change.
    pub remembered: Option<Vec<TiedEvent>>,
    /// How many of the events shared their millisecond with an earlier remembered one.
    pub tied: u64,
}

/// Orders one entity's writes, in arrival order, against the events it `remembered`: each write
/// gets its slot and loses the features an earlier, greater event of its millisecond set. An
/// event remembered already (a replay, or a resent event id) is written again as it was first:
/// at its slot, with the features no greater event set, so the write changes nothing that
/// was stored.
///
/// The writes and what is remembered may be stored in either order, or at once: a crash
/// before the memory is stored replays the same events against the same memory, which gives
/// the same slots; one after it finds them remembered and writes them again at theirs.
pub fn settle_ties(
    view: &FeatureView,
    mut remembered: Vec<TiedEvent>,
    contenders: Vec<Contender>,
) -> Settled {
    let mut settled = Settled::default();
    let mut changed = false;
    for Contender {
        mut write,
        tiebreak,
    } in contenders
    {
        if write.values.is_empty() || write.event_time_micros % MICROS_PER_MILLI != 0 {
            settled.writes.push(write);
            continue;
        }
        let time = write.event_time_micros;
        let same_millisecond = || remembered.iter().filter(|t| t.event_time_micros == time);
        let won_by_greater: BTreeSet<u16> = same_millisecond()
            .filter(|tied| tied.tiebreak > tiebreak)
            .flat_map(|tied| tied.features.iter().copied())
            .collect();
        let known_slot = same_millisecond()
            .find(|tied| tied.tiebreak == tiebreak)
            .map(|tied| tied.slot);
        let slot = match known_slot {
            Some(slot) => slot,
            None => {
                let slot = same_millisecond()
                    .map(|tied| (tied.slot + 1).min(LAST_SLOT))
                    .max()
                    .unwrap_or(0);
                settled.tied += u64::from(same_millisecond().next().is_some());
                let features = write
                    .values
                    .iter()
                    .filter_map(|(name, _)| feature_position(view, name))
                    .collect();
                remembered.push(TiedEvent {
                    event_time_micros: time,
                    tiebreak,
                    slot,
                    features,
                });
                changed = true;
                slot
            }
        };
        write.values.retain(|(name, _)| {
            feature_position(view, name).is_none_or(|position| !won_by_greater.contains(&position))
        });
        write.event_time_micros += i64::from(slot);
        if !write.values.is_empty() {
            settled.writes.push(write);
        }
    }
    if changed {
        forget_old(&mut remembered, TIE_HORIZON_MICROS);
        settled.remembered = Some(remembered);
    }
    settled
}

/// Keeps the events within `horizon_micros` of the newest one, at most [`MAX_REMEMBERED`].
fn forget_old(remembered: &mut Vec<TiedEvent>, horizon_micros: i64) {
    let Some(newest) = remembered.iter().map(|tied| tied.event_time_micros).max() else {
        return;
    };
    remembered.retain(|tied| tied.event_time_micros >= newest.saturating_sub(horizon_micros));
    if remembered.len() > MAX_REMEMBERED {
        // Stable, so events of one millisecond keep their arrival order.
        remembered.sort_by_key(|tied| std::cmp::Reverse(tied.event_time_micros));
        remembered.truncate(MAX_REMEMBERED);
    }
}

fn feature_position(view: &FeatureView, name: &crate::name::Name) -> Option<u16> {
    view.features
        .iter()
        .position(|feature| &feature.name == name)
        .and_then(|position| u16::try_from(position).ok())
}

#[cfg(test)]
mod tests;
