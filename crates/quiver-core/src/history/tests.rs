//! Point-in-time values against a brute force over the events themselves.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::aggregate::default_resolution;
use crate::definition::{Aggregate, AggregateFunction, SchemaRef, Seconds, Source};
use crate::key::{EntityKey, KeyPart};
use crate::value::{ScalarType, ValueType};

const HOUR: i64 = 3_600_000_000;
const START: i64 = 1_790_000_000_000_000;

fn field(name: &str) -> Feature {
    Feature {
        name: name.parse().expect("a valid name"),
        value_type: ValueType::Scalar(ScalarType::Int64),
        derivation: Derivation::Field(name.to_owned()),
        default: None,
        description: String::new(),
        filter: None,
    }
}

fn count(name: &str, window: Option<Seconds>) -> Feature {
    Feature {
        name: name.parse().expect("a valid name"),
        value_type: ValueType::Scalar(ScalarType::Int64),
        derivation: Derivation::Aggregate(Aggregate {
            function: AggregateFunction::Count,
            of: None,
            window,
            resolution: window.map(default_resolution),
        }),
        default: None,
        description: String::new(),
        filter: None,
    }
}

/// `last` (stored, kept an hour), `count_1h` and `count_total`, deduplicated by event id.
fn view() -> FeatureView {
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
        ttl: Some(Seconds(3_600)),
        allowed_lateness: None,
        dedup: Some(Seconds(86_400)),
        description: String::new(),
        owner: String::new(),
        tags: BTreeMap::new(),
        features: vec![
            field("last"),
            count("count_1h", Some(Seconds(3_600))),
            count("count_total", None),
        ],
    }
}

fn event(id: &str, event_time_micros: i64, last: i64) -> HistoricalEvent {
    HistoricalEvent {
        write: FeatureWrite {
            key: EntityKey::new(vec![KeyPart::Int64(7)]).expect("a key"),
            event_time_micros,
            values: vec![("last".parse().expect("a valid name"), Value::Int64(last))],
        },
        tiebreak: Tiebreak::EventId(id.to_owned()),
        event_id: Some(id.to_owned()),
        inputs: vec![Input::Event, Input::Event],
    }
}

fn int(point: &Option<PointValue>) -> Option<i64> {
    match point.as_ref().map(|point| &point.value) {
        Some(Value::Int64(value)) => Some(*value),
        None => None,
        Some(other) => panic!("an int64, not {other:?}"),
    }
}

fn ints(answer: &[Option<PointValue>]) -> Vec<Option<i64>> {
    answer.iter().map(int).collect()
}

#[test]
fn nothing_is_known_before_the_first_event() {
    let answers = values_at(&view(), vec![event("a", START, 1)], &[START - 1, START]);
    assert_eq!(ints(&answers[0]), [None, None, None]);
    assert_eq!(ints(&answers[1]), [Some(1), Some(1), Some(1)]);
}

#[test]
fn the_greater_event_of_a_millisecond_wins_in_any_order() {
    let events = vec![event("b", START, 2), event("a", START, 1)];
    let answers = values_at(&view(), events.clone(), &[START]);
    assert_eq!(int(&answers[0][0]), Some(2));
    let reversed: Vec<HistoricalEvent> = events.into_iter().rev().collect();
    assert_eq!(int(&values_at(&view(), reversed, &[START])[0][0]), Some(2));
}

#[test]
fn a_stored_value_expires_with_the_ttl_and_counts_slide() {
    let events = vec![event("a", START, 1), event("b", START + HOUR / 2, 2)];
    let at = [START + HOUR / 2, START + HOUR + HOUR / 2, START + 3 * HOUR];
    let answers = values_at(&view(), events, &at);
    assert_eq!(ints(&answers[0]), [Some(2), Some(2), Some(2)]);
    // The first event's tile has left the hour; the second's value is an hour old.
    assert_eq!(ints(&answers[1]), [None, Some(1), Some(2)]);
    assert_eq!(ints(&answers[2]), [None, Some(0), Some(2)]);
    assert_eq!(
        answers[0][0].as_ref().map(|point| point.event_time_micros),
        Some(START + HOUR / 2)
    );
}

#[test]
fn a_resent_event_counts_once() {
    let events = vec![
        event("a", START, 1),
        event("a", START, 1),
        event("b", START + 1_000, 2),
    ];
    let answers = values_at(&view(), events, &[START + 1_000]);
    assert_eq!(ints(&answers[0]), [Some(2), Some(2), Some(2)]);
}

/// The count of the distinct events a `window`-long count sees at `at`: those at or before
/// `at` whose tile starts within the window's tiles.
fn brute_count(view: &FeatureView, events: &[HistoricalEvent], at: i64) -> i64 {
    let (_, aggregate) = aggregate::aggregate_feature(view, &"count_1h".parse().expect("a name"))
        .expect("the view counts");
    let (from, until) = aggregate.window_at(at).expect("a window");
    let distinct: HashSet<&str> = events
        .iter()
        .filter(|event| event.write.event_time_micros <= at)
        .filter(|event| {
            (from..until).contains(&aggregate.tile_start(event.write.event_time_micros))
        })
        .filter_map(|event| event.event_id.as_deref())
        .collect();
    distinct.len() as i64
}

proptest! {
    #[test]
    fn counts_match_a_brute_force(
        times in prop::collection::vec(0..6 * HOUR, 1..40),
        resent in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        at in prop::collection::vec(0..7 * HOUR, 1..10),
    ) {
        let mut events: Vec<HistoricalEvent> = times
            .iter()
            .enumerate()
            .map(|(index, time)| event(&format!("{index:03}"), START + time, index as i64))
            .collect();
        let copies: Vec<HistoricalEvent> = resent
            .iter()
            .map(|index| events[index.index(events.len())].clone())
            .collect();
        events.extend(copies);
        let at: Vec<i64> = at.iter().map(|offset| START + offset).collect();
        let answers = values_at(&view(), events.clone(), &at);
        for (instant, answer) in at.iter().zip(&answers) {
            let seen = events.iter().any(|event| event.write.event_time_micros <= *instant);
            if seen {
                prop_assert_eq!(int(&answer[1]), Some(brute_count(&view(), &events, *instant)));
            }
            let newest = events
                .iter()
                .filter(|event| event.write.event_time_micros <= *instant)
                .filter(|event| event.write.event_time_micros + HOUR > *instant)
                .max_by(|a, b| {
                    (a.write.event_time_micros, &a.tiebreak)
                        .cmp(&(b.write.event_time_micros, &b.tiebreak))
                })
                .map(|event| match &event.write.values[0].1 {
                    Value::Int64(value) => *value,
                    other => panic!("an int64, not {other:?}"),
                });
            prop_assert_eq!(int(&answer[0]), newest);
        }
    }
}

#[test]
fn after_all_events_those_ahead_of_the_instant_count_as_the_store_holds_them() {
    let events = vec![event("a", START, 1), event("b", START + HOUR / 6, 2)];
    let at = START + HOUR / 12;
    assert_eq!(
        ints(&values_at(&view(), events.clone(), &[at])[0]),
        [Some(1), Some(1), Some(1)]
    );
    // The window ends with the tile holding the instant; the later event's tile is beyond it.
    assert_eq!(
        ints(&values_after_all(&view(), events, at)),
        [Some(2), Some(1), Some(2)]
    );
}
