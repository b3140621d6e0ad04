//! A generated stream of match events, as real producers send them (out of order, some events
//! resent with their id at later positions, some users with two events at their newest
//! millisecond), with the truth of every aggregate and field feature of [`STREAM_VIEWS`]
//! computed directly from the distinct events.
//!
//! The truth is written by hand, filter by filter, rather than through Quiver's own filter
//! code, so a wrong filter evaluation or a duplicate counted twice shows up as a mismatch.

use std::collections::HashMap;
use std::path::Path;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_core::aggregate::{aggregate_features, evaluate};
use quiver_core::definition::{AggregateFunction, Registry, Seconds};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::store::FeatureStore;
use quiver_core::value::Value;

use crate::events;

/// A view over `match_event.avsc` with filtered, field and lifetime counts beside one aggregate
/// of every other function. `TOPIC` and `SCHEMA` are placeholders for the topic and the path of
/// the schema.
pub const STREAM_VIEWS: &str = r#"
feature_views:
  - name: activity
    entity: user
    source:
      topic: TOPIC
      schema: SCHEMA
      key_fields: [user_id]
      event_time: ts
      event_id: event_id
    features:
      - {name: last_country, type: string, from: country}
      - {name: last_action, type: string, from: action}
      - {name: last_liked, type: int64, from: candidate_id, where: {action: LIKE}}
      - {name: likes_10m, type: int64, aggregate: {fn: count, where: {action: LIKE}, window: 10m}}
      - {name: likes_1h, type: int64, aggregate: {fn: count, where: {action: {in: [LIKE, SUPER_LIKE]}}, window: 1h}}
      - {name: likes_24h, type: int64, aggregate: {fn: count, where: {action: LIKE}, window: 24h}}
      - {name: likes_7d, type: int64, aggregate: {fn: count, where: {action: LIKE}, window: 7d}}
      - {name: long_chats_1h, type: int64, aggregate: {fn: count, where: {action: CHAT, chat_seconds: {ge: 60}}, window: 1h}}
      - {name: ranked_1h, type: int64, aggregate: {fn: count, of: rank_position, window: 1h, resolution: 1m}}
      - {name: actions_total, type: int64, aggregate: {fn: count}}
      - {name: rank_sum_2h, type: int64, aggregate: {fn: sum, of: rank_position, where: {or: [{action: PASS}, {rank_position: {lt: 10}}]}, window: 2h}}
      - {name: best_rank_1h, type: int32, aggregate: {fn: min, of: rank_position, window: 1h}}
      - {name: worst_rank_1h, type: int32, aggregate: {fn: max, of: rank_position, window: 1h}}
      - {name: avg_rank_1h, type: float64, aggregate: {fn: avg, of: rank_position, window: 1h}}
      - {name: first_candidate_1h, type: int64, aggregate: {fn: first, of: candidate_id, window: 1h}}
      - {name: last_candidate_1h, type: int64, aggregate: {fn: last, of: candidate_id, window: 1h}}
      - {name: recent_likes, type: list<int64>, aggregate: {fn: last_k, k: 5, of: candidate_id, where: {action: LIKE}, window: 1h}}
      - {name: distinct_candidates_1d, type: int64, aggregate: {fn: approx_distinct, of: candidate_id, window: 1d}}
"#;

/// Writes the examples' `entities.yaml` and [`STREAM_VIEWS`] reading `topic` into `folder`, a
/// definitions folder for `quiver apply` or `load_dir`.
pub fn write_definitions(folder: &Path, topic: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        repo.join("examples/features/entities.yaml"),
        folder.join("entities.yaml"),
    )
    .expect("copies the example entities");
    let schema = repo.join("schemas/match_event.avsc");
    let views = STREAM_VIEWS
        .replace("TOPIC", topic)
        .replace("SCHEMA", &schema.display().to_string());
    std::fs::write(folder.join("views.yaml"), views).expect("writes the views");
}

/// The actions of `match_event.avsc`, in symbol order.
const ACTIONS: [&str; 6] = ["LIKE", "PASS", "SUPER_LIKE", "MATCH", "UNMATCH", "CHAT"];

const COUNTRIES: [&str; 6] = ["SE", "NO", "DK", "FI", "IS", "DE"];

/// The field features of [`STREAM_VIEWS`].
const FIELD_FEATURES: [&str; 3] = ["last_country", "last_action", "last_liked"];

/// One event of the stream, in plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Its `event_id`, which a resent copy keeps.
    pub id: i64,
    pub user: i64,
    pub event_time_micros: i64,
    pub candidate: i64,
    pub rank: Option<i32>,
    /// An index into the `MatchAction` symbols.
    pub action: usize,
    pub chat_seconds: f64,
    pub country: &'static str,
}

impl StreamEvent {
    /// Its `event_id` field: `id` scrambled, so that the order of ids is not the order of
    /// production, and of two events at one millisecond either may come first.
    pub fn event_id(&self) -> String {
        format!(
            "{:016x}",
            (self.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
    }

    /// Its place among events: by event time, then by event id, as Quiver breaks ties.
    fn order(&self) -> (i64, String) {
        (self.event_time_micros, self.event_id())
    }
}

/// How to generate a stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamShape {
    /// Distinct events.
    pub events: usize,
    pub users: i64,
    /// Events happen over this many milliseconds before `now`.
    pub spread_millis: i64,
    /// Of every 100 events, this many are sent a second time, at a later position.
    pub resent_percent: u64,
    /// This many users have a second event at the millisecond of their newest one.
    pub tied_users: i64,
}

/// A stream: its events in production order, copies included, and the distinct events.
#[derive(Debug, Clone)]
pub struct Stream {
    pub produced: Vec<StreamEvent>,
    pub distinct: Vec<StreamEvent>,
}

/// A small deterministic generator (splitmix64), so a failing stream or a benchmark's data can
/// be produced again from its seed.
#[derive(Debug, Clone)]
pub struct Random(pub u64);

impl Random {
    /// The next number, below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

/// Events of `shape.users` users at random times before `now_millis`, in random order, with
/// some resent later in the stream.
pub fn generate(shape: StreamShape, now_millis: i64) -> Stream {
    let mut random = Random(0x5eed);
    let distinct: Vec<StreamEvent> = (0..shape.events)
        .map(|n| StreamEvent {
            id: n as i64,
            user: random.below(shape.users as u64) as i64,
            event_time_micros: (now_millis - random.below(shape.spread_millis as u64) as i64)
                * 1_000,
            candidate: random.below(400) as i64,
            rank: (random.below(10) < 8).then(|| random.below(100) as i32),
            action: random.below(ACTIONS.len() as u64) as usize,
            chat_seconds: random.below(1_200) as f64 / 10.0,
            country: COUNTRIES[random.below(COUNTRIES.len() as u64) as usize],
        })
        .collect();
    let distinct = with_ties(distinct, shape.tied_users);
    // Each event sits at its index; a copy somewhere after it, never before.
    let mut placed: Vec<(u64, &StreamEvent)> = Vec::with_capacity(distinct.len() * 2);
    let total = distinct.len() as u64;
    for (index, event) in distinct.iter().enumerate() {
        let index = index as u64;
        placed.push((index * 2, event));
        if random.below(100) < shape.resent_percent {
            let later = index + 1 + random.below(total - index);
            placed.push((later * 2 + 1, event));
        }
    }
    placed.sort_by_key(|(position, _)| *position);
    Stream {
        produced: placed.into_iter().map(|(_, event)| event.clone()).collect(),
        distinct,
    }
}

/// `events` with, for each of users `0..tied_users` that has two events, its first event that
/// is not its newest moved to the newest one's millisecond.
fn with_ties(mut events: Vec<StreamEvent>, tied_users: i64) -> Vec<StreamEvent> {
    let mut by_user: HashMap<i64, Vec<usize>> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if event.user < tied_users {
            by_user.entry(event.user).or_default().push(index);
        }
    }
    for indices in by_user.values() {
        let newest = *indices
            .iter()
            .max_by_key(|index| (events[**index].event_time_micros, events[**index].id))
            .expect("a user in the map has an event");
        if let Some(twin) = indices.iter().find(|index| **index != newest) {
            events[*twin].event_time_micros = events[newest].event_time_micros;
        }
    }
    events
}

/// `event` as a `MatchEvent` record of `schema`.
pub fn to_avro(schema: &Schema, event: &StreamEvent) -> Avro {
    let mut avro = events::match_event(schema, event.id);
    let rank = match event.rank {
        Some(rank) => Avro::Union(1, Box::new(Avro::Int(rank))),
        None => Avro::Union(0, Box::new(Avro::Null)),
    };
    for (field, value) in [
        ("user_id", Avro::Long(event.user)),
        ("ts", Avro::TimestampMillis(event.event_time_micros / 1_000)),
        ("candidate_id", Avro::Long(event.candidate)),
        ("rank_position", rank),
        (
            "action",
            Avro::Enum(event.action as u32, ACTIONS[event.action].into()),
        ),
        ("chat_seconds", Avro::Double(event.chat_seconds)),
        ("event_id", Avro::String(event.event_id())),
        (
            "country",
            Avro::Union(1, Box::new(Avro::String(event.country.into()))),
        ),
    ] {
        avro = events::with_field(avro, field, value);
    }
    avro
}

/// Whether `event` feeds the feature called `feature` of [`STREAM_VIEWS`]: its `where:`, and
/// for aggregates `of` an optional field, the field's presence.
fn feeds(feature: &str, event: &StreamEvent) -> bool {
    let action = ACTIONS[event.action];
    match feature {
        "likes_10m" | "likes_24h" | "likes_7d" | "recent_likes" | "last_liked" => action == "LIKE",
        "likes_1h" => action == "LIKE" || action == "SUPER_LIKE",
        "long_chats_1h" => action == "CHAT" && event.chat_seconds >= 60.0,
        "rank_sum_2h" => {
            event.rank.is_some() && (action == "PASS" || event.rank.is_some_and(|r| r < 10))
        }
        "ranked_1h" | "best_rank_1h" | "worst_rank_1h" | "avg_rank_1h" => event.rank.is_some(),
        _ => true,
    }
}

/// The value of `function` over `events`, computed directly from the list: ranks for sums,
/// minima, maxima and averages, candidates for the rest, ordered by event time and then by
/// event id.
fn brute_force(function: AggregateFunction, events: &[&StreamEvent]) -> Option<Value> {
    let ranks: Vec<i32> = events.iter().filter_map(|event| event.rank).collect();
    let mut ordered = events.to_vec();
    ordered.sort_by_key(|event| event.order());
    let candidates: Vec<(i64, i64)> = ordered
        .iter()
        .map(|event| (event.event_time_micros, event.candidate))
        .collect();
    Some(match function {
        AggregateFunction::Count => Value::Int64(events.len() as i64),
        AggregateFunction::Sum => Value::Int64(ranks.iter().map(|r| i64::from(*r)).sum()),
        AggregateFunction::Min => Value::Int32(*ranks.iter().min()?),
        AggregateFunction::Max => Value::Int32(*ranks.iter().max()?),
        AggregateFunction::Avg => {
            if ranks.is_empty() {
                return None;
            }
            let sum: f64 = ranks.iter().map(|r| f64::from(*r)).sum();
            Value::Float64(sum / ranks.len() as f64)
        }
        AggregateFunction::First => Value::Int64(candidates.first()?.1),
        AggregateFunction::Last => Value::Int64(candidates.last()?.1),
        AggregateFunction::LastK(k) => Value::Int64List(
            candidates
                .iter()
                .rev()
                .take(k as usize)
                .map(|(_, c)| *c)
                .collect(),
        ),
        AggregateFunction::ApproxDistinct => {
            let mut distinct: Vec<i64> = candidates.iter().map(|(_, c)| *c).collect();
            distinct.sort_unstable();
            distinct.dedup();
            Value::Int64(distinct.len() as i64)
        }
    })
}

/// The value of the field feature called `feature` of [`STREAM_VIEWS`]: that of the latest of
/// the events that feed it, by event time and then by event id.
fn latest_field(feature: &str, events: &[&StreamEvent]) -> Option<Value> {
    let latest = events
        .iter()
        .filter(|event| feeds(feature, event))
        .max_by_key(|event| event.order())?;
    Some(match feature {
        "last_country" => Value::String(latest.country.to_owned()),
        "last_action" => Value::String(ACTIONS[latest.action].to_owned()),
        _ => Value::Int64(latest.candidate),
    })
}

/// Whether a window of `window` at `resolution` covers `event_time_micros` at
/// `request_micros`: from the start of the tile holding `request - window` to the end of the
/// tile holding the request time. A lifetime aggregate covers everything.
fn in_window(
    event_time_micros: i64,
    window: Option<Seconds>,
    resolution: Option<Seconds>,
    request_micros: i64,
) -> bool {
    let (Some(window), Some(resolution)) = (window, resolution) else {
        return true;
    };
    let tile = resolution.0 as i64 * 1_000_000;
    let from = (request_micros - window.0 as i64 * 1_000_000).div_euclid(tile) * tile;
    let until = request_micros.div_euclid(tile) * tile + tile;
    (from..until).contains(&event_time_micros)
}

/// Every aggregate and field feature of every user as the store holds it, against the truth.
#[derive(Debug, Default)]
pub struct Comparison {
    /// How many (user, feature) values were compared.
    pub compared: usize,
    /// One line per value that differs.
    pub mismatches: Vec<String>,
}

impl Comparison {
    /// Panics with the first mismatches, unless there are none.
    pub fn assert_exact(&self, what: &str) {
        assert!(
            self.mismatches.is_empty(),
            "{what}: {} of {} values differ, such as: {:#?}",
            self.mismatches.len(),
            self.compared,
            &self.mismatches[..self.mismatches.len().min(10)]
        );
    }
}

/// Compares the aggregates and field features of [`STREAM_VIEWS`] stored in `store` at
/// `request_micros` with the truth over `distinct`, for every user. Approximate distinct counts may be off by three
/// standard errors of the sketch (2.5 %), or by 2 where that is less.
pub async fn compare_with_truth(
    store: &impl FeatureStore,
    registry: &Registry,
    distinct: &[StreamEvent],
    request_micros: i64,
) -> Comparison {
    let view = registry.feature_views[0].clone();
    let entity = registry.entities[0].clone();
    let mut by_user: HashMap<i64, Vec<&StreamEvent>> = HashMap::new();
    for event in distinct {
        by_user.entry(event.user).or_default().push(event);
    }
    let mut comparison = Comparison::default();
    for (user, events) in &by_user {
        let key = EntityKey::new(vec![KeyPart::Int64(*user)]).expect("a key");
        let tiles = store
            .read_tiles(&entity, &view, &key, None)
            .await
            .expect("reads tiles")
            .tiles;
        for (feature, aggregate) in aggregate_features(&view.view) {
            let covered: Vec<&StreamEvent> = events
                .iter()
                .copied()
                .filter(|event| feeds(feature.name.as_str(), event))
                .filter(|event| {
                    in_window(
                        event.event_time_micros,
                        aggregate.window,
                        aggregate.resolution,
                        request_micros,
                    )
                })
                .collect();
            let expected = brute_force(aggregate.function, &covered);
            let served =
                evaluate(feature, aggregate, &tiles, request_micros).map(|(value, _)| value);
            comparison.compared += 1;
            let exact = match (aggregate.function, &expected, &served) {
                (
                    AggregateFunction::ApproxDistinct,
                    Some(Value::Int64(truth)),
                    Some(Value::Int64(estimate)),
                ) => (truth - estimate).abs() as f64 <= (*truth as f64 * 0.025).max(2.0),
                _ => expected == served,
            };
            if !exact {
                comparison.mismatches.push(format!(
                    "user {user} {}: expected {expected:?}, got {served:?}",
                    feature.name
                ));
            }
        }
        compare_fields(store, registry, &key, events, &mut comparison).await;
    }
    comparison
}

/// Adds the comparison of one user's field features to `comparison`.
async fn compare_fields(
    store: &impl FeatureStore,
    registry: &Registry,
    key: &EntityKey,
    events: &[&StreamEvent],
    comparison: &mut Comparison,
) {
    let names: Vec<Name> = FIELD_FEATURES
        .iter()
        .map(|name| name.parse().expect("a valid name"))
        .collect();
    let served = store
        .read_features(
            &registry.entities[0],
            &registry.feature_views[0],
            &names,
            key,
        )
        .await
        .expect("reads the field features");
    for (feature, served) in FIELD_FEATURES.iter().zip(served) {
        let expected = latest_field(feature, events);
        let served = served.map(|stored| stored.value);
        comparison.compared += 1;
        if expected != served {
            comparison.mismatches.push(format!(
                "{key} {feature}: expected {expected:?}, got {served:?}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_come_after_their_original_and_keep_its_id() {
        let stream = generate(
            StreamShape {
                events: 2_000,
                users: 50,
                spread_millis: 3_600_000,
                resent_percent: 5,
                tied_users: 20,
            },
            1_790_000_000_000,
        );
        assert_eq!(stream.distinct.len(), 2_000);
        for user in 0..50 {
            let mut times: Vec<i64> = stream
                .distinct
                .iter()
                .filter(|event| event.user == user)
                .map(|event| event.event_time_micros)
                .collect();
            times.sort_unstable();
            let tied = times.len() > 1 && times[times.len() - 1] == times[times.len() - 2];
            assert_eq!(
                tied,
                user < 20,
                "user {user}'s newest millisecond: {times:?}"
            );
        }
        let copies = stream.produced.len() - stream.distinct.len();
        assert!((50..150).contains(&copies), "about 5 % resent: {copies}");
        let mut seen = std::collections::HashSet::new();
        for event in &stream.produced {
            let first = seen.insert(event.id);
            assert!(
                first || stream.distinct[event.id as usize] == *event,
                "a copy equals its original"
            );
        }
        let first_positions: Vec<i64> = {
            let mut seen = std::collections::HashSet::new();
            stream
                .produced
                .iter()
                .filter(|event| seen.insert(event.id))
                .map(|event| event.id)
                .collect()
        };
        assert_eq!(
            first_positions,
            (0..2_000).collect::<Vec<_>>(),
            "every original comes before its copy"
        );
    }
}
