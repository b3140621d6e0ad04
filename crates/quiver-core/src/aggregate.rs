//! Windowed and lifetime aggregates kept as tiles: partial aggregates per entity, feature, time
//! tile and source partition, each event folded in exactly once, combined at request time.
//!
//! A windowed aggregate at resolution `r` keeps one tile per `r` of event time; at request time
//! `now` its window covers the tiles from the one holding `now - window` to the one holding
//! `now`, so it slides by whole tiles and spans at most `window / r + 1` of them. A lifetime
//! aggregate keeps a single tile.
//!
//! Exactness under at-least-once delivery: a tile belongs to one source partition (such as
//! `topic/3`), which one ingester owns at a time, and it records the offset of the last event
//! it folded in. Events of a partition are folded in offset order, so a replayed event, whose
//! offset is at or before that mark, is skipped: replays after a crash never count twice, and
//! the tile is rewritten whole (never incremented, unlike a CQL counter), so rewriting it is
//! idempotent too.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::definition::{Aggregate, AggregateFunction, Derivation, Feature, FeatureView, Seconds};
use crate::name::Name;
use crate::ties::{Tiebreak, TiedEvent};
use crate::value::{ScalarType, Value, ValueType};

const MICROS_PER_SEC: i64 = 1_000_000;

/// The tile start of every lifetime aggregate's one tile.
pub const LIFETIME_TILE_START: i64 = 0;

/// The tile sizes a default resolution is chosen from.
const RESOLUTION_LADDER: [u64; 8] = [1, 10, 60, 300, 600, 3_600, 21_600, 86_400];
/// A default resolution keeps a window within this many tiles.
const DEFAULT_TILES_PER_WINDOW: u64 = 48;
/// A declared resolution may make a window at most this many tiles long: every read of the
/// feature combines them all.
pub const MAX_TILES_PER_WINDOW: u64 = 240;

/// The resolution of a window declared without one: the finest tile size of the ladder that
/// keeps the window within 48 tiles, so a 24-hour window slides by the hour and a 30-day one
/// by the day.
pub fn default_resolution(window: Seconds) -> Seconds {
    RESOLUTION_LADDER
        .into_iter()
        .find(|size| window.0.div_ceil(*size) <= DEFAULT_TILES_PER_WINDOW)
        .map_or(Seconds(86_400), Seconds)
}

/// Why a declared resolution does not suit its window, if it does not.
pub fn check_resolution(window: Seconds, resolution: Seconds) -> Result<(), String> {
    if resolution > window {
        return Err(format!(
            "resolution {resolution} is longer than the window {window}"
        ));
    }
    let tiles = window.0.div_ceil(resolution.0);
    if tiles > MAX_TILES_PER_WINDOW {
        return Err(format!(
            "resolution {resolution} cuts the window {window} into {tiles} tiles; at most \
             {MAX_TILES_PER_WINDOW} are read per value, so use a resolution of at least {}",
            Seconds(window.0.div_ceil(MAX_TILES_PER_WINDOW))
        ));
    }
    Ok(())
}

/// The aggregate features of a view, in declaration order: the order of the inputs of a
/// [`Contribution`].
pub fn aggregate_features(view: &FeatureView) -> Vec<(&Feature, &Aggregate)> {
    view.features
        .iter()
        .filter_map(|feature| match &feature.derivation {
            Derivation::Aggregate(aggregate) => Some((feature, aggregate)),
            Derivation::Field(_) => None,
        })
        .collect()
}

impl Aggregate {
    /// The tile size in microseconds; `None` for a lifetime aggregate.
    fn tile_micros(&self) -> Option<i64> {
        let window = self.window?;
        let resolution = self
            .resolution
            .unwrap_or_else(|| default_resolution(window));
        Some(resolution.0 as i64 * MICROS_PER_SEC)
    }

    /// The start of the tile an event at `event_time_micros` falls in.
    pub fn tile_start(&self, event_time_micros: i64) -> i64 {
        match self.tile_micros() {
            Some(tile) => event_time_micros.div_euclid(tile) * tile,
            None => LIFETIME_TILE_START,
        }
    }

    /// The event times the window covers at `now_micros`, `[from, until)`: from the start of
    /// the tile holding `now - window` to the end of the tile holding `now`. `None` for a
    /// lifetime aggregate, which covers everything.
    pub fn window_at(&self, now_micros: i64) -> Option<(i64, i64)> {
        let tile = self.tile_micros()?;
        let window = self.window?.0 as i64 * MICROS_PER_SEC;
        let from = (now_micros - window).div_euclid(tile) * tile;
        let until = now_micros.div_euclid(tile) * tile + tile;
        Some((from, until))
    }

    /// When the tile starting at `tile_start` stops being read: once `now - window` is past
    /// its end. `None` for a lifetime tile, which is read for ever.
    pub fn tile_expiry_micros(&self, tile_start: i64) -> Option<i64> {
        let tile = self.tile_micros()?;
        let window = self.window?.0 as i64 * MICROS_PER_SEC;
        Some(tile_start + tile + window)
    }
}

/// The aggregate feature of `view` called `name`, if it has one.
pub fn aggregate_feature<'v>(
    view: &'v FeatureView,
    name: &Name,
) -> Option<(&'v Feature, &'v Aggregate)> {
    view.features
        .iter()
        .find(|feature| &feature.name == name)
        .and_then(|feature| match &feature.derivation {
            Derivation::Aggregate(aggregate) => Some((feature, aggregate)),
            Derivation::Field(_) => None,
        })
}

/// A value with the event time it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub event_time_micros: i64,
    /// Orders it among events of the same time, as field features are ordered; `None` in
    /// tiles stored before it was recorded.
    pub tiebreak: Option<Tiebreak>,
    pub value: Value,
}

impl Stamped {
    /// Orders by event time, then by tiebreak (the greater event id, or the later offset), then
    /// by value, so ties between events of the same time are broken the same way whatever
    /// order the events arrived in, and the way a field feature breaks them.
    fn order(&self, other: &Stamped) -> Ordering {
        self.event_time_micros
            .cmp(&other.event_time_micros)
            .then_with(|| self.tiebreak.cmp(&other.tiebreak))
            .then_with(|| compare_values(&self.value, &other.value))
    }
}

/// The partial aggregate of one tile: enough to combine with other tiles and to finish into the
/// feature's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Partial {
    Count(u64),
    /// A sum of integers, wrapping on overflow so that tiles combine in any order.
    IntSum(i64),
    FloatSum(f64),
    Min(Value),
    Max(Value),
    Avg {
        sum: f64,
        count: u64,
    },
    First(Stamped),
    Last(Stamped),
    /// The newest `k` values, newest first.
    LastK {
        k: u32,
        newest: Vec<Stamped>,
    },
    Distinct(HyperLogLog),
}

impl Partial {
    /// The partial of one event; `None` when the event gives this function nothing, or an
    /// input it cannot use.
    pub fn of_event(
        function: AggregateFunction,
        input: &Input,
        event_time_micros: i64,
        tiebreak: &Tiebreak,
    ) -> Option<Partial> {
        let input = match (function, input) {
            (_, Input::Nothing) => return None,
            (AggregateFunction::Count, Input::Event | Input::Value(_)) => {
                return Some(Partial::Count(1));
            }
            (_, Input::Event) => return None,
            (_, Input::Value(value)) => value,
        };
        if as_f64(input).is_some_and(|number| !number.is_finite()) {
            // NaN and infinities would poison every window they fall in.
            return None;
        }
        let stamped = || Stamped {
            event_time_micros,
            tiebreak: Some(tiebreak.clone()),
            value: input.clone(),
        };
        Some(match function {
            AggregateFunction::Count => Partial::Count(1),
            AggregateFunction::Sum => match input {
                Value::Int32(n) => Partial::IntSum(i64::from(*n)),
                Value::Int64(n) => Partial::IntSum(*n),
                other => Partial::FloatSum(as_f64(other)?),
            },
            AggregateFunction::Min => Partial::Min(input.clone()),
            AggregateFunction::Max => Partial::Max(input.clone()),
            AggregateFunction::Avg => Partial::Avg {
                sum: as_f64(input)?,
                count: 1,
            },
            AggregateFunction::First => Partial::First(stamped()),
            AggregateFunction::Last => Partial::Last(stamped()),
            AggregateFunction::LastK(k) => Partial::LastK {
                k,
                newest: vec![stamped()],
            },
            AggregateFunction::ApproxDistinct => {
                let mut sketch = HyperLogLog::default();
                sketch.insert(input);
                Partial::Distinct(sketch)
            }
        })
    }

    /// Adds `other`, a partial of the same function, into this one. Merging is associative and
    /// commutative, so tiles combine in any order.
    pub fn merge(&mut self, other: Partial) {
        match (self, other) {
            (Partial::Count(a), Partial::Count(b)) => *a += b,
            (Partial::IntSum(a), Partial::IntSum(b)) => *a = a.wrapping_add(b),
            (Partial::FloatSum(a), Partial::FloatSum(b)) => *a += b,
            (Partial::Min(a), Partial::Min(b)) => {
                if compare_values(&b, a) == Ordering::Less {
                    *a = b;
                }
            }
            (Partial::Max(a), Partial::Max(b)) => {
                if compare_values(&b, a) == Ordering::Greater {
                    *a = b;
                }
            }
            (
                Partial::Avg { sum, count },
                Partial::Avg {
                    sum: other_sum,
                    count: other_count,
                },
            ) => {
                *sum += other_sum;
                *count += other_count;
            }
            (Partial::First(a), Partial::First(b)) => {
                if b.order(a) == Ordering::Less {
                    *a = b;
                }
            }
            (Partial::Last(a), Partial::Last(b)) => {
                if b.order(a) == Ordering::Greater {
                    *a = b;
                }
            }
            (Partial::LastK { k, newest }, Partial::LastK { newest: other, .. }) => {
                newest.extend(other);
                newest.sort_by(|a, b| b.order(a));
                newest.truncate(*k as usize);
            }
            (Partial::Distinct(a), Partial::Distinct(b)) => a.merge(&b),
            (mine, theirs) => {
                // Partials of one feature always share a function; a mismatch means a tile was
                // written under another definition, which the planner refuses as breaking.
                debug_assert!(false, "merging {mine:?} with {theirs:?}");
            }
        }
    }

    /// The feature's value from this partial.
    fn finish(self, value_type: ValueType) -> Option<Value> {
        Some(match self {
            Partial::Count(count) => Value::Int64(i64::try_from(count).unwrap_or(i64::MAX)),
            Partial::IntSum(sum) => Value::Int64(sum),
            Partial::FloatSum(sum) => Value::Float64(sum),
            Partial::Min(value) | Partial::Max(value) => value,
            Partial::Avg { sum, count } => Value::Float64(sum / count as f64),
            Partial::First(stamped) | Partial::Last(stamped) => stamped.value,
            Partial::LastK { newest, .. } => {
                let ValueType::List(element) = value_type else {
                    return None;
                };
                Value::list_from_scalars(element, newest.into_iter().map(|s| s.value).collect())?
            }
            Partial::Distinct(sketch) => Value::Int64(sketch.estimate() as i64),
        })
    }
}

/// The value of an aggregate over no events: zero for counts and sums, an empty list for
/// `last_k`, and no value for the functions that need at least one input.
fn empty_value(function: AggregateFunction, value_type: ValueType) -> Option<Value> {
    match (function, value_type) {
        (AggregateFunction::Count | AggregateFunction::ApproxDistinct, _) => Some(Value::Int64(0)),
        (AggregateFunction::Sum, ValueType::Scalar(ScalarType::Int64)) => Some(Value::Int64(0)),
        (AggregateFunction::Sum, _) => Some(Value::Float64(0.0)),
        (AggregateFunction::LastK(_), ValueType::List(element)) => {
            Value::list_from_scalars(element, Vec::new())
        }
        _ => None,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Int32(n) => Some(f64::from(*n)),
        Value::Int64(n) | Value::Timestamp(n) => Some(*n as f64),
        Value::Float32(n) => Some(f64::from(*n)),
        Value::Float64(n) => Some(*n),
        _ => None,
    }
}

/// A total order on scalar values of one type (floats by IEEE total order); values of
/// different types order by type, which only happens across a type change.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Int32(a), Value::Int32(b)) => a.cmp(b),
        (Value::Int64(a), Value::Int64(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
        (Value::Float32(a), Value::Float32(b)) => a.total_cmp(b),
        (Value::Float64(a), Value::Float64(b)) => a.total_cmp(b),
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
        (a, b) => a.value_type().to_string().cmp(&b.value_type().to_string()),
    }
}

/// HyperLogLog with 2^14 registers (about 0.8 % standard error), kept sparse while few
/// registers are set, so the tiles of a rarely seen entity stay small.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HyperLogLog {
    /// `(register, rank)` pairs sorted by register while sparse; empty once dense.
    sparse: Vec<(u16, u8)>,
    /// Every register's rank once dense; empty while sparse.
    dense: Vec<u8>,
}

const HLL_PRECISION: u32 = 14;
const HLL_REGISTERS: usize = 1 << HLL_PRECISION;
/// Past this many set registers the dense array is smaller.
const HLL_SPARSE_LIMIT: usize = HLL_REGISTERS / 8;

impl HyperLogLog {
    pub fn insert(&mut self, value: &Value) {
        let hash = stable_hash(value);
        let register = (hash >> (64 - HLL_PRECISION)) as u16;
        let rank = ((hash << HLL_PRECISION) | (1 << (HLL_PRECISION - 1))).leading_zeros() as u8 + 1;
        self.raise(register, rank);
    }

    fn raise(&mut self, register: u16, rank: u8) {
        if !self.dense.is_empty() {
            let slot = &mut self.dense[register as usize];
            *slot = (*slot).max(rank);
            return;
        }
        match self
            .sparse
            .binary_search_by_key(&register, |(index, _)| *index)
        {
            Ok(found) => self.sparse[found].1 = self.sparse[found].1.max(rank),
            Err(at) => self.sparse.insert(at, (register, rank)),
        }
        if self.sparse.len() > HLL_SPARSE_LIMIT {
            let mut dense = vec![0; HLL_REGISTERS];
            for (register, rank) in self.sparse.drain(..) {
                dense[register as usize] = rank;
            }
            self.dense = dense;
        }
    }

    /// What a store keeps of the sketch: the `(register, rank)` pairs sorted by register while
    /// it is sparse, or the rank of every register once it is dense (the other part is empty).
    pub fn registers(&self) -> (&[(u16, u8)], &[u8]) {
        (&self.sparse, &self.dense)
    }

    /// The sketch whose [`HyperLogLog::registers`] are `sparse` and `dense`, or why they cannot
    /// be one.
    pub fn from_registers(sparse: Vec<(u16, u8)>, dense: Vec<u8>) -> Result<Self, String> {
        if !dense.is_empty() && (dense.len() != HLL_REGISTERS || !sparse.is_empty()) {
            return Err(format!(
                "a dense sketch needs {HLL_REGISTERS} registers and no sparse ones, not {} and {}",
                dense.len(),
                sparse.len()
            ));
        }
        let in_order = sparse.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !in_order
            || sparse
                .last()
                .is_some_and(|(register, _)| *register as usize >= HLL_REGISTERS)
        {
            return Err("a sparse sketch needs distinct registers in order, below 2^14".to_owned());
        }
        Ok(HyperLogLog { sparse, dense })
    }

    /// Roughly the bytes the sketch holds.
    pub fn size_bytes(&self) -> usize {
        self.sparse.len() * 3 + self.dense.len()
    }

    pub fn merge(&mut self, other: &HyperLogLog) {
        if other.dense.is_empty() {
            for &(register, rank) in &other.sparse {
                self.raise(register, rank);
            }
        } else {
            for (register, &rank) in other.dense.iter().enumerate() {
                if rank > 0 {
                    self.raise(register as u16, rank);
                }
            }
        }
    }

    /// The estimated number of distinct values, with linear counting for small sets.
    pub fn estimate(&self) -> u64 {
        let registers = HLL_REGISTERS as f64;
        let (sum, zeros) = if self.dense.is_empty() {
            let set: f64 = self
                .sparse
                .iter()
                .map(|(_, rank)| 2f64.powi(-i32::from(*rank)))
                .sum();
            (
                set + (HLL_REGISTERS - self.sparse.len()) as f64,
                HLL_REGISTERS - self.sparse.len(),
            )
        } else {
            let sum = self
                .dense
                .iter()
                .map(|rank| 2f64.powi(-i32::from(*rank)))
                .sum();
            (sum, self.dense.iter().filter(|rank| **rank == 0).count())
        };
        let alpha = 0.7213 / (1.0 + 1.079 / registers);
        let raw = alpha * registers * registers / sum;
        let estimate = if raw <= 2.5 * registers && zeros > 0 {
            registers * (registers / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// A hash of a scalar value that never changes between builds or machines (unlike std's), as
/// sketches are stored: FNV-1a over a type tag and the value's bytes, then the MurmurHash3
/// finalizer, which spreads the bits over the whole word.
fn stable_hash(value: &Value) -> u64 {
    let (tag, bytes): (u8, Vec<u8>) = match value {
        Value::Bool(b) => (1, vec![u8::from(*b)]),
        Value::Int32(n) => (2, i64::from(*n).to_le_bytes().to_vec()),
        Value::Int64(n) => (2, n.to_le_bytes().to_vec()),
        Value::Float32(n) => (3, f64::from(*n).to_bits().to_le_bytes().to_vec()),
        Value::Float64(n) => (3, n.to_bits().to_le_bytes().to_vec()),
        Value::String(text) => (4, text.as_bytes().to_vec()),
        Value::Bytes(bytes) => (5, bytes.clone()),
        Value::Timestamp(n) => (6, n.to_le_bytes().to_vec()),
        // Lists are not aggregated: the loader accepts scalar inputs only.
        other => (7, format!("{other:?}").into_bytes()),
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(tag).chain(bytes) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// One stored tile: the partial aggregate of one feature of one entity over one time tile, from
/// one source partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub feature: Name,
    /// Microseconds since the epoch; [`LIFETIME_TILE_START`] for a lifetime aggregate.
    pub start_micros: i64,
    /// The partition the events came from, such as `topic/3`, or a file.
    pub source: String,
    /// The position in `source` of the last event folded in: events at or before it are replays.
    pub through_offset: i64,
    /// The newest event time folded in.
    pub newest_event_micros: i64,
    pub partial: Partial,
}

/// What the store holds of one entity's aggregates in one view version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityTiles {
    pub tiles: Vec<Tile>,
    /// When the entity was last deleted, if the store still remembers it: events at or before
    /// this time were removed and count no more, also when they arrive after the deletion.
    pub deleted_through_micros: Option<i64>,
    /// The ids of the events already counted within the view's dedup horizon, in any order;
    /// empty for a view without event ids, and where only serving reads the tiles.
    pub applied: Vec<AppliedEvent>,
    /// The entity's recent events that later ones of the same millisecond are ordered against
    /// ([`crate::ties`]); empty where only serving reads the tiles.
    pub ties: Vec<TiedEvent>,
}

/// An event whose id a view's aggregates have counted, remembered until its dedup horizon
/// ends, so that the same event seen again elsewhere is told from a replay of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvent {
    pub event_id: String,
    /// Where it was counted: a replay of that very position is not a duplicate (the tiles'
    /// through offsets tell whether it was counted), the same id anywhere else is.
    pub source: String,
    pub offset: i64,
    /// When it is forgotten: its event time plus the view's dedup horizon.
    pub expires_micros: i64,
}

/// What folding a batch into an entity's stored state changes, to be written back in one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TileChanges {
    /// The tiles that changed, whole.
    pub tiles: Vec<Tile>,
    /// Events counted for the first time, whose ids are remembered from now on.
    pub applied: Vec<AppliedEvent>,
    /// What replaces the entity's remembered events; `None` keeps them.
    pub ties: Option<Vec<TiedEvent>>,
}

impl TileChanges {
    /// Changes of tiles alone, with no event ids to remember.
    pub fn of_tiles(tiles: Vec<Tile>) -> Self {
        TileChanges {
            tiles,
            applied: Vec::new(),
            ties: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty() && self.applied.is_empty() && self.ties.is_none()
    }
}

/// The outcome of [`fold`]: what to store, and the events it did not check or did not count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    pub changes: TileChanges,
    /// Events skipped because their id was already counted at another position.
    pub duplicates: u64,
    /// Events with an id whose dedup horizon had already passed: counted without a check,
    /// since the store may have forgotten an earlier copy.
    pub beyond_horizon: u64,
}

/// What one event gives the aggregates of its view.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The partition the event came from.
    pub source: String,
    /// The event's position in `source`; positions grow with every event.
    pub offset: i64,
    pub event_time_micros: i64,
    /// The event's id, when its view declares one: the same id seen at another position
    /// within the view's dedup horizon is a duplicate, and counts no more.
    pub event_id: Option<String>,
    /// One per aggregate feature of the view, in [`aggregate_features`] order.
    pub inputs: Vec<Input>,
}

/// What one event gives one aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Nothing: the event fails the aggregate's filter, or lacks the field it aggregates.
    Nothing,
    /// The event itself, which a `count` without `of` counts.
    Event,
    /// The aggregated field's value.
    Value(Value),
}

/// Folds the contributions of one entity into its stored tiles and returns the tiles that
/// changed and the event ids counted for the first time, to be written back in one step.
///
/// `contributions` come in offset order per source. A contribution at or before a tile's
/// `through_offset` is a replay and is skipped; so is a duplicate, whose id was counted at
/// another position within the view's dedup horizon. One whose tile is already past its window
/// at `now_micros` could change no value, so it is left out; so is one at or before the
/// entity's deletion.
pub fn fold<'c>(
    view: &FeatureView,
    stored: EntityTiles,
    contributions: impl IntoIterator<Item = &'c Contribution>,
    now_micros: i64,
) -> Folded {
    let deleted_through = stored.deleted_through_micros.unwrap_or(i64::MIN);
    let mut ids = EventIds::new(view, stored.applied);
    let aggregates = aggregate_features(view);
    let mut tiles: HashMap<TileKey, (Tile, bool)> = stored
        .tiles
        .into_iter()
        .map(|tile| {
            let key = (tile.feature.clone(), tile.start_micros, tile.source.clone());
            (key, (tile, false))
        })
        .collect();
    let mut folded = Folded::default();
    for contribution in contributions {
        if contribution.event_time_micros <= deleted_through {
            continue;
        }
        match ids.check(contribution, now_micros) {
            IdCheck::Duplicate => {
                folded.duplicates += 1;
                continue;
            }
            IdCheck::BeyondHorizon => folded.beyond_horizon += 1,
            IdCheck::First | IdCheck::SamePosition | IdCheck::NoId => {}
        }
        fold_one(&aggregates, &mut tiles, contribution, now_micros);
    }
    let mut changed: Vec<Tile> = tiles
        .into_values()
        .filter_map(|(tile, changed)| changed.then_some(tile))
        .collect();
    changed.sort_by(|a, b| {
        (&a.feature, a.start_micros, &a.source).cmp(&(&b.feature, b.start_micros, &b.source))
    });
    folded.changes = TileChanges {
        tiles: changed,
        applied: ids.first_seen,
        ties: None,
    };
    folded
}

/// A tile's identity among an entity's tiles: feature, start, source.
type TileKey = (Name, i64, String);

/// Folds one contribution into `tiles`, marking those it changes.
fn fold_one(
    aggregates: &[(&Feature, &Aggregate)],
    tiles: &mut HashMap<TileKey, (Tile, bool)>,
    contribution: &Contribution,
    now_micros: i64,
) {
    let tiebreak = Tiebreak::of(contribution.event_id.as_deref(), contribution.offset);
    for ((feature, aggregate), input) in aggregates.iter().zip(&contribution.inputs) {
        let start = aggregate.tile_start(contribution.event_time_micros);
        if aggregate
            .tile_expiry_micros(start)
            .is_some_and(|expiry| expiry <= now_micros)
        {
            continue;
        }
        let Some(partial) = Partial::of_event(
            aggregate.function,
            input,
            contribution.event_time_micros,
            &tiebreak,
        ) else {
            continue;
        };
        let key = (feature.name.clone(), start, contribution.source.clone());
        match tiles.get_mut(&key) {
            Some((tile, _)) if contribution.offset <= tile.through_offset => {}
            Some((tile, changed)) => {
                tile.partial.merge(partial);
                tile.through_offset = contribution.offset;
                tile.newest_event_micros =
                    tile.newest_event_micros.max(contribution.event_time_micros);
                *changed = true;
            }
            None => {
                let tile = Tile {
                    feature: feature.name.clone(),
                    start_micros: start,
                    source: contribution.source.clone(),
                    through_offset: contribution.offset,
                    newest_event_micros: contribution.event_time_micros,
                    partial,
                };
                tiles.insert(key, (tile, true));
            }
        }
    }
}

/// The event ids an entity's aggregates have counted, as stored and as one fold adds to them.
struct EventIds {
    /// The view's dedup horizon; `None` checks nothing.
    horizon_micros: Option<i64>,
    /// Each known id's source and offset.
    known: HashMap<String, (String, i64)>,
    first_seen: Vec<AppliedEvent>,
}

/// What an event's id says about it.
enum IdCheck {
    /// Not seen before: counted, and remembered.
    First,
    /// Seen at this very position: a replay, which the tiles' through offsets settle.
    SamePosition,
    /// Seen at another position: counted already.
    Duplicate,
    /// Older than the horizon, so an earlier copy may be forgotten: counted unchecked.
    BeyondHorizon,
    /// No id, or a view that does not deduplicate.
    NoId,
}

impl EventIds {
    fn new(view: &FeatureView, stored: Vec<AppliedEvent>) -> Self {
        EventIds {
            horizon_micros: view
                .dedup
                .map(|horizon| (horizon.0 as i64).saturating_mul(MICROS_PER_SEC)),
            known: stored
                .into_iter()
                .map(|applied| (applied.event_id, (applied.source, applied.offset)))
                .collect(),
            first_seen: Vec::new(),
        }
    }

    fn check(&mut self, contribution: &Contribution, now_micros: i64) -> IdCheck {
        let (Some(horizon), Some(id)) = (self.horizon_micros, &contribution.event_id) else {
            return IdCheck::NoId;
        };
        let expires_micros = contribution.event_time_micros.saturating_add(horizon);
        if expires_micros <= now_micros {
            return IdCheck::BeyondHorizon;
        }
        match self.known.get(id) {
            Some((source, offset))
                if *source == contribution.source && *offset == contribution.offset =>
            {
                IdCheck::SamePosition
            }
            Some(_) => IdCheck::Duplicate,
            None => {
                self.known.insert(
                    id.clone(),
                    (contribution.source.clone(), contribution.offset),
                );
                self.first_seen.push(AppliedEvent {
                    event_id: id.clone(),
                    source: contribution.source.clone(),
                    offset: contribution.offset,
                    expires_micros,
                });
                IdCheck::First
            }
        }
    }
}

/// The value of one aggregate feature at `now_micros` from an entity's tiles (of any features;
/// the others are ignored), with the newest event time it covers; `None` when the function has
/// no value over no events (min, max, avg, first, last).
pub fn evaluate(
    feature: &Feature,
    aggregate: &Aggregate,
    tiles: &[Tile],
    now_micros: i64,
) -> Option<(Value, Option<i64>)> {
    let window = aggregate.window_at(now_micros);
    let mut combined: Option<Partial> = None;
    let mut newest: Option<i64> = None;
    for tile in tiles.iter().filter(|tile| tile.feature == feature.name) {
        if let Some((from, until)) = window
            && !(from..until).contains(&tile.start_micros)
        {
            continue;
        }
        newest = newest.max(Some(tile.newest_event_micros));
        match &mut combined {
            Some(partial) => partial.merge(tile.partial.clone()),
            None => combined = Some(tile.partial.clone()),
        }
    }
    let value = match combined {
        Some(partial) => partial.finish(feature.value_type)?,
        None => empty_value(aggregate.function, feature.value_type)?,
    };
    Some((value, newest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{SchemaRef, Source};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const NOW: i64 = 1_800_000_000_000_000;

    fn feature(name: &str, function: AggregateFunction, window: Option<Seconds>) -> Feature {
        let value_type = function
            .output_type(
                (function != AggregateFunction::Count)
                    .then_some(ValueType::Scalar(ScalarType::Int64)),
            )
            .expect("a valid aggregate");
        Feature {
            name: name.parse().expect("a valid name"),
            value_type,
            derivation: Derivation::Aggregate(Aggregate {
                function,
                of: (function != AggregateFunction::Count).then(|| "x".to_owned()),
                window,
                resolution: window.map(default_resolution),
            }),
            default: None,
            description: String::new(),
            filter: None,
        }
    }

    const FUNCTIONS: [AggregateFunction; 9] = [
        AggregateFunction::Count,
        AggregateFunction::Sum,
        AggregateFunction::Min,
        AggregateFunction::Max,
        AggregateFunction::Avg,
        AggregateFunction::First,
        AggregateFunction::Last,
        AggregateFunction::LastK(3),
        AggregateFunction::ApproxDistinct,
    ];

    fn view(window: Option<Seconds>) -> FeatureView {
        FeatureView {
            name: "activity".parse().expect("a valid name"),
            entity: "user".parse().expect("a valid name"),
            source: Source {
                topic: "events".into(),
                schema: SchemaRef::Subject("events-value".into()),
                key_fields: vec!["user_id".into()],
                event_time: "at".into(),
                event_id: Some("id".into()),
            },
            ttl: None,
            allowed_lateness: None,
            dedup: Some(Seconds(7 * 86_400)),
            description: String::new(),
            owner: String::new(),
            tags: BTreeMap::new(),
            features: FUNCTIONS
                .iter()
                .enumerate()
                .map(|(index, function)| feature(&format!("f{index}"), *function, window))
                .collect(),
        }
    }

    /// One event as produced: where it sits in its partition, its id, when it happened, its
    /// input.
    #[derive(Debug, Clone)]
    struct Event {
        source: &'static str,
        offset: i64,
        id: usize,
        event_time_micros: i64,
        x: Option<i64>,
    }

    fn contribution(view: &FeatureView, event: &Event) -> Contribution {
        Contribution {
            source: event.source.to_owned(),
            offset: event.offset,
            event_time_micros: event.event_time_micros,
            event_id: view.source.event_id.as_ref().map(|_| event.id.to_string()),
            inputs: aggregate_features(view)
                .iter()
                .map(|(_, aggregate)| match (aggregate.of.as_ref(), event.x) {
                    (None, _) => Input::Event,
                    (Some(_), Some(x)) => Input::Value(Value::Int64(x)),
                    (Some(_), None) => Input::Nothing,
                })
                .collect(),
        }
    }

    /// The value each function has over `events`, computed directly from the list: events of
    /// the same time are ordered by their ids, as strings.
    fn brute_force(function: AggregateFunction, events: &[&Event]) -> Option<Value> {
        let mut inputs: Vec<(i64, String, i64)> = events
            .iter()
            .filter_map(|event| {
                let x = event.x?;
                Some((event.event_time_micros, event.id.to_string(), x))
            })
            .collect();
        inputs.sort();
        let values = || inputs.iter().map(|(_, _, x)| *x);
        Some(match function {
            AggregateFunction::Count => Value::Int64(events.len() as i64),
            AggregateFunction::Sum => Value::Int64(values().fold(0i64, i64::wrapping_add)),
            AggregateFunction::Min => Value::Int64(values().min()?),
            AggregateFunction::Max => Value::Int64(values().max()?),
            AggregateFunction::Avg => {
                if inputs.is_empty() {
                    return None;
                }
                Value::Float64(values().map(|x| x as f64).sum::<f64>() / inputs.len() as f64)
            }
            AggregateFunction::First => Value::Int64(inputs.first()?.2),
            AggregateFunction::Last => Value::Int64(inputs.last()?.2),
            AggregateFunction::LastK(k) => Value::Int64List(
                inputs
                    .iter()
                    .rev()
                    .take(k as usize)
                    .map(|(_, _, x)| *x)
                    .collect(),
            ),
            AggregateFunction::ApproxDistinct => {
                let mut distinct: Vec<i64> = values().collect();
                distinct.sort_unstable();
                distinct.dedup();
                Value::Int64(distinct.len() as i64)
            }
        })
    }

    /// Delivers `events` in batches as an at-least-once consumer would: after a crash (which may
    /// strike between the writes of a batch) it starts again from the batch after the last
    /// committed one. Returns the stored tiles.
    fn deliver(view: &FeatureView, events: &[Event], cuts: &[(usize, Option<usize>)]) -> Vec<Tile> {
        let mut store: BTreeMap<(Name, i64, String), Tile> = BTreeMap::new();
        let mut applied: Vec<AppliedEvent> = Vec::new();
        let mut committed = 0;
        let mut cuts = cuts.iter();
        while committed < events.len() {
            let (size, crash_after) = cuts.next().copied().unwrap_or((events.len(), None));
            let end = (committed + size.max(1)).min(events.len());
            let contributions: Vec<Contribution> = events[committed..end]
                .iter()
                .map(|event| contribution(view, event))
                .collect();
            let stored = EntityTiles {
                tiles: store.values().cloned().collect(),
                deleted_through_micros: None,
                applied: applied.clone(),
                ties: Vec::new(),
            };
            let changed = fold(view, stored, &contributions, NOW).changes;
            let written =
                crash_after.map_or(changed.tiles.len(), |count| count.min(changed.tiles.len()));
            // A crash may come before or after the event ids are stored.
            if crash_after.is_none_or(|count| count % 2 == 0) {
                applied.extend(changed.applied);
            }
            for tile in changed.tiles.into_iter().take(written) {
                let key = (tile.feature.clone(), tile.start_micros, tile.source.clone());
                store.insert(key, tile);
            }
            if crash_after.is_none() {
                committed = end;
            }
        }
        store.into_values().collect()
    }

    /// Events as produced, each with its own id, then as delivered: the same with some of them
    /// resent, at later offsets of either partition.
    fn events_strategy() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
        let produced = proptest::collection::vec(
            (
                any::<bool>(),
                // Whole minutes, so that events often share an event time.
                (0i64..3 * 1_440).prop_map(|minutes| minutes * 60_000_000),
                proptest::option::weighted(0.9, -50i64..50),
            ),
            0..120,
        );
        let resent =
            proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..30);
        (produced, resent).prop_map(|(raw, resent)| {
            let mut offsets = [0i64; 2];
            let mut next = |partition: bool| {
                let partition = usize::from(partition);
                offsets[partition] += 1;
                (["events/0", "events/1"][partition], offsets[partition])
            };
            let produced: Vec<Event> = raw
                .into_iter()
                .enumerate()
                .map(|(id, (second, ago, x))| {
                    let (source, offset) = next(second);
                    Event {
                        source,
                        offset,
                        id,
                        event_time_micros: NOW - ago,
                        x,
                    }
                })
                .collect();
            let mut delivered = produced.clone();
            if !produced.is_empty() {
                for (index, second) in resent {
                    let (source, offset) = next(second);
                    let original = index.get(&produced);
                    delivered.push(Event {
                        source,
                        offset,
                        ..original.clone()
                    });
                }
            }
            (produced, delivered)
        })
    }

    fn window_strategy() -> impl Strategy<Value = Option<Seconds>> {
        proptest::option::weighted(
            0.8,
            proptest::sample::select(vec![60u64, 600, 3_600, 7_200, 86_400, 2 * 86_400]),
        )
        .prop_map(|window| window.map(Seconds))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn tiles_give_the_brute_force_result_despite_duplicates_replays_and_crashes(
            (events, delivered) in events_strategy(),
            window in window_strategy(),
            cuts in proptest::collection::vec((1usize..40, proptest::option::weighted(0.3, 0usize..20)), 0..30),
            request_ago in 0i64..3_600_000_000,
        ) {
            let view = view(window);
            let tiles = deliver(&view, &delivered, &cuts);
            let request_time = NOW + request_ago;
            for (feature, aggregate) in aggregate_features(&view) {
                let in_window: Vec<&Event> = events
                    .iter()
                    .filter(|event| match window {
                        None => true,
                        Some(window) => {
                            let tile = aggregate.resolution.expect("set").0 as i64 * 1_000_000;
                            let from = (request_time - window.0 as i64 * 1_000_000).div_euclid(tile) * tile;
                            let until = request_time.div_euclid(tile) * tile + tile;
                            (from..until).contains(&event.event_time_micros)
                        }
                    })
                    .collect();
                let expected = brute_force(aggregate.function, &in_window)
                    .or_else(|| empty_value(aggregate.function, feature.value_type));
                let served = evaluate(feature, aggregate, &tiles, request_time).map(|(value, _)| value);
                if aggregate.function == AggregateFunction::ApproxDistinct {
                    let (Some(Value::Int64(exact)), Some(Value::Int64(estimate))) = (&expected, &served) else {
                        panic!("distinct counts are always served");
                    };
                    prop_assert!((exact - estimate).abs() as f64 <= (*exact as f64 * 0.02).max(1.0), "{estimate} for {exact}");
                } else {
                    prop_assert_eq!(&served, &expected, "{} over {} events", aggregate.function, in_window.len());
                }
            }
        }
    }

    #[test]
    fn default_resolutions_keep_windows_short_and_declared_ones_are_bounded() {
        assert_eq!(default_resolution(Seconds(600)), Seconds(60));
        assert_eq!(default_resolution(Seconds(3_600)), Seconds(300));
        assert_eq!(default_resolution(Seconds(86_400)), Seconds(3_600));
        assert_eq!(default_resolution(Seconds(30 * 86_400)), Seconds(86_400));
        assert!(check_resolution(Seconds(86_400), Seconds(3_600)).is_ok());
        let error = check_resolution(Seconds(30 * 86_400), Seconds(60)).unwrap_err();
        assert!(
            error.contains("43200 tiles") && error.contains("3h"),
            "{error}"
        );
        assert!(check_resolution(Seconds(60), Seconds(3_600)).is_err());
    }

    #[test]
    fn distinct_counts_stay_within_two_percent_when_dense() {
        let mut sketch = HyperLogLog::default();
        for n in 0..100_000i64 {
            sketch.insert(&Value::Int64(n));
            sketch.insert(&Value::Int64(n));
        }
        assert!(
            !sketch.dense.is_empty(),
            "large sets switch to the dense form"
        );
        let estimate = sketch.estimate() as f64;
        assert!((estimate - 100_000.0).abs() < 2_000.0, "{estimate}");
    }

    #[test]
    fn a_late_tile_past_its_window_is_not_written() {
        let view = view(Some(Seconds(60)));
        let old = Event {
            source: "events/0",
            offset: 1,
            id: 1,
            event_time_micros: NOW - 3_600_000_000,
            x: Some(1),
        };
        let folded = fold(
            &view,
            EntityTiles::default(),
            &[contribution(&view, &old)],
            NOW,
        );
        assert!(folded.changes.tiles.is_empty());
    }

    #[test]
    fn events_at_or_before_a_deletion_count_no_more() {
        let view = view(None);
        let event = |offset, event_time_micros| Event {
            source: "events/0",
            offset,
            id: offset as usize,
            event_time_micros,
            x: Some(1),
        };
        let deleted = EntityTiles {
            tiles: Vec::new(),
            deleted_through_micros: Some(NOW - 1_000),
            applied: Vec::new(),
            ties: Vec::new(),
        };
        let (before, at, after) = (
            event(1, NOW - 60_000_000),
            event(2, NOW - 1_000),
            event(3, NOW),
        );
        let contributions = [&before, &at].map(|event| contribution(&view, event));
        assert!(
            fold(&view, deleted.clone(), &contributions, NOW)
                .changes
                .is_empty()
        );
        let changed = fold(&view, deleted, &[contribution(&view, &after)], NOW).changes;
        assert!(!changed.tiles.is_empty());
        assert!(
            changed
                .tiles
                .iter()
                .all(|tile| tile.newest_event_micros == NOW)
        );
    }

    #[test]
    fn a_resent_event_is_a_duplicate_a_replayed_one_is_not_and_an_old_one_goes_unchecked() {
        let view = view(None);
        let event = |source, offset, id, ago_micros| Event {
            source,
            offset,
            id,
            event_time_micros: NOW - ago_micros,
            x: Some(1),
        };
        let first = fold(
            &view,
            EntityTiles::default(),
            &[contribution(&view, &event("events/0", 1, 7, 0))],
            NOW,
        );
        assert_eq!(first.changes.applied.len(), 1);
        assert_eq!(
            first.changes.applied[0].expires_micros,
            NOW + 7 * 86_400_000_000
        );
        let stored = EntityTiles {
            tiles: first.changes.tiles.clone(),
            deleted_through_micros: None,
            applied: first.changes.applied.clone(),
            ties: Vec::new(),
        };
        let eight_days = 8 * 86_400_000_000;
        let again = [
            event("events/0", 1, 7, 0),          // replayed at its own position
            event("events/1", 40, 7, 0),         // resent on another partition
            event("events/0", 2, 8, eight_days), // past the horizon
            event("events/0", 3, 8, eight_days), // and resent: not caught
        ]
        .map(|event| contribution(&view, &event));
        let folded = fold(&view, stored, &again, NOW);
        assert_eq!(folded.duplicates, 1);
        assert_eq!(folded.beyond_horizon, 2);
        assert!(folded.changes.applied.is_empty(), "nothing new to remember");
        let lifetime_count = folded
            .changes
            .tiles
            .iter()
            .find(|tile| tile.feature.as_str() == "f0")
            .map(|tile| tile.partial.clone());
        assert_eq!(lifetime_count, Some(Partial::Count(3)));
    }
}
