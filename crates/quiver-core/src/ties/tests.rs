//! Settling ties against a model of the store's own rule: per cell, the greater write timestamp
//! wins, and of two equal ones the greater value.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::definition::{Derivation, Feature, SchemaRef, Seconds, Source};
use crate::key::{EntityKey, KeyPart};
use crate::name::Name;
use crate::value::{ScalarType, Value, ValueType};

const FEATURES: [&str; 3] = ["country", "action", "target"];
const MILLI: i64 = 1_790_000_000_000_000;

fn view(allowed_lateness: Option<Seconds>) -> FeatureView {
    FeatureView {
        name: "swipes".parse().expect("a valid name"),
        entity: "user".parse().expect("a valid name"),
        source: Source {
            topic: "swipes".into(),
            schema: SchemaRef::Subject("swipes-value".into()),
            key_fields: vec!["user_id".into()],
            event_time: "ts".into(),
            event_id: Some("id".into()),
        },
        ttl: None,
        allowed_lateness,
        dedup: Some(Seconds(86_400)),
        description: String::new(),
        owner: String::new(),
        tags: BTreeMap::new(),
        features: FEATURES
            .iter()
            .map(|name| Feature {
                name: name.parse().expect("a valid name"),
                value_type: ValueType::Scalar(ScalarType::Int64),
                derivation: Derivation::Field((*name).to_owned()),
                default: None,
                description: String::new(),
                filter: None,
            })
            .collect(),
    }
}

/// One produced event: its id, event time and the features it sets (by position), each to a
/// value the store's tie rule would rank in any order.
#[derive(Debug, Clone)]
struct Event {
    id: String,
    event_time_micros: i64,
    sets: Vec<(usize, i64)>,
}

impl Event {
    fn contender(&self) -> Contender {
        Contender {
            write: FeatureWrite {
                key: EntityKey::new(vec![KeyPart::Int64(7)]).expect("a key"),
                event_time_micros: self.event_time_micros,
                values: self
                    .sets
                    .iter()
                    .map(|(position, value)| (name(position), Value::Int64(*value)))
                    .collect(),
            },
            tiebreak: Tiebreak::EventId(self.id.clone()),
        }
    }
}

fn name(position: &usize) -> Name {
    FEATURES[*position].parse().expect("a valid name")
}

/// The store: per feature, the cell with the greatest (write timestamp, value).
#[derive(Default)]
struct Cells(HashMap<Name, (i64, i64)>);

impl Cells {
    fn write(&mut self, writes: &[FeatureWrite]) {
        for write in writes {
            for (feature, value) in &write.values {
                let Value::Int64(value) = value else {
                    panic!("the test writes integers")
                };
                let cell = (write.event_time_micros, *value);
                let stored = self.0.entry(feature.clone()).or_insert(cell);
                *stored = (*stored).max(cell);
            }
        }
    }

    fn values(&self) -> BTreeMap<String, i64> {
        self.0
            .iter()
            .map(|(feature, (_, value))| (feature.to_string(), *value))
            .collect()
    }
}

/// Per feature, the value of the event with the greatest (event time, id) among those setting it.
fn truth(events: &[Event]) -> BTreeMap<String, i64> {
    let mut winners: BTreeMap<String, (i64, &str, i64)> = BTreeMap::new();
    for event in events {
        for (position, value) in &event.sets {
            let candidate = (event.event_time_micros, event.id.as_str(), *value);
            let winner = winners
                .entry(name(position).to_string())
                .or_insert(candidate);
            if (candidate.0, candidate.1) > (winner.0, winner.1) {
                *winner = candidate;
            }
        }
    }
    winners
        .into_iter()
        .map(|(feature, (_, _, value))| (feature, value))
        .collect()
}

/// Events at one of two milliseconds, each setting a non-empty subset of the features.
fn events() -> impl Strategy<Value = Vec<Event>> {
    let event = (
        0..2i64,
        prop::collection::btree_map(0..FEATURES.len(), any::<i64>(), 1..=FEATURES.len()),
    );
    prop::collection::vec(event, 1..7).prop_map(|events| {
        events
            .into_iter()
            .enumerate()
            .map(|(index, (millisecond, sets))| Event {
                id: format!("{:04}", (index * 7919) % 10_000),
                event_time_micros: MILLI + millisecond * 1_000,
                sets: sets.into_iter().collect(),
            })
            .collect()
    })
}

/// How storing one batch can be cut short before the batch is replayed.
#[derive(Debug, Clone, Copy)]
enum Crash {
    None,
    /// The values were stored, what is remembered was not.
    AfterTheValues,
    /// What is remembered was stored, the values were not.
    AfterTheMemory,
}

fn crash() -> impl Strategy<Value = Crash> {
    prop_oneof![
        Just(Crash::None),
        Just(Crash::AfterTheValues),
        Just(Crash::AfterTheMemory)
    ]
}

/// Stores `arrivals` in batches cut at `cuts`, remembering between them as the ingester does;
/// a batch whose crash is drawn is cut short that way, then replayed whole.
fn store(view: &FeatureView, arrivals: &[Event], cuts: &[usize], crashes: &[Crash]) -> Cells {
    let mut cells = Cells::default();
    let mut remembered = Vec::new();
    let mut start = 0;
    let ends = cuts
        .iter()
        .copied()
        .filter(|cut| *cut < arrivals.len())
        .chain([arrivals.len()]);
    for (batch_index, end) in ends.enumerate() {
        let batch: Vec<Contender> = arrivals[start..end.max(start)]
            .iter()
            .map(Event::contender)
            .collect();
        let crash = crashes.get(batch_index).copied().unwrap_or(Crash::None);
        let settled = settle_ties(view, remembered.clone(), batch.clone());
        match crash {
            Crash::None => {}
            Crash::AfterTheValues => cells.write(&settled.writes),
            Crash::AfterTheMemory => {
                remembered = settled.remembered.clone().unwrap_or(remembered);
            }
        }
        let settled = match crash {
            Crash::None => settled,
            Crash::AfterTheValues | Crash::AfterTheMemory => {
                settle_ties(view, remembered.clone(), batch)
            }
        };
        cells.write(&settled.writes);
        if let Some(now_remembered) = settled.remembered {
            remembered = now_remembered;
        }
        start = end.max(start);
    }
    cells
}

proptest! {
    /// Whatever the arrival order, the batch cuts, the events resent and the crashes, every
    /// feature holds the value of the greatest event that set it: the store's own value rule
    /// never decides.
    #[test]
    fn one_order_wins_whatever_the_arrival_order(
        events in events(),
        order in any::<u64>(),
        resent in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        cuts in prop::collection::vec(0..12usize, 0..4),
        crashes in prop::collection::vec(crash(), 0..5),
    ) {
        let mut arrivals = events.clone();
        // A deterministic shuffle from the drawn seed.
        let mut seed = order;
        for i in (1..arrivals.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            arrivals.swap(i, (seed >> 33) as usize % (i + 1));
        }
        arrivals.extend(resent.iter().map(|index| events[index.index(events.len())].clone()));
        let mut cuts = cuts;
        cuts.sort_unstable();
        let cells = store(&view(None), &arrivals, &cuts, &crashes);
        prop_assert_eq!(cells.values(), truth(&events));
    }
}

#[test]
fn a_lone_event_is_written_at_its_own_event_time() {
    let event = Event {
        id: "a".into(),
        event_time_micros: MILLI,
        sets: vec![(0, 1), (1, 2)],
    };
    let settled = settle_ties(&view(None), Vec::new(), vec![event.contender()]);
    assert_eq!(settled.writes, vec![event.contender().write]);
    let remembered = settled.remembered.expect("the event is remembered");
    assert_eq!(remembered.len(), 1);
    assert_eq!(remembered[0].slot, 0);
    assert_eq!(remembered[0].features, BTreeSet::from([0, 1]));
}

#[test]
fn a_smaller_event_arriving_later_writes_only_what_the_greater_did_not_set() {
    let greater = Event {
        id: "b".into(),
        event_time_micros: MILLI,
        sets: vec![(0, 1)],
    };
    let smaller = Event {
        id: "a".into(),
        event_time_micros: MILLI,
        sets: vec![(0, 9), (2, 9)],
    };
    let first = settle_ties(&view(None), Vec::new(), vec![greater.contender()]);
    let second = settle_ties(
        &view(None),
        first.remembered.expect("remembered"),
        vec![smaller.contender(), smaller.contender()],
    );
    let written_alone = FeatureWrite {
        event_time_micros: MILLI + 1,
        values: vec![(name(&2), Value::Int64(9))],
        ..smaller.contender().write
    };
    assert_eq!(
        second.writes,
        vec![written_alone.clone(), written_alone],
        "the resend is written again as it was first"
    );
    let remembered = second.remembered.expect("remembered");
    assert_eq!(remembered.len(), 2, "the resend is remembered once");
}

#[test]
fn events_older_than_the_horizon_are_forgotten() {
    let at = |id: &str, millis: i64| Event {
        id: id.into(),
        event_time_micros: MILLI + millis * 1_000,
        sets: vec![(0, 1)],
    };
    let settled = settle_ties(
        &view(None),
        Vec::new(),
        [at("a", 0), at("b", 1_001), at("c", 500)]
            .iter()
            .map(Event::contender)
            .collect(),
    );
    let remembered: Vec<_> = settled
        .remembered
        .expect("remembered")
        .into_iter()
        .map(|tied| tied.tiebreak)
        .collect();
    assert_eq!(
        remembered,
        vec![Tiebreak::EventId("b".into()), Tiebreak::EventId("c".into())],
        "a is more than a second older than b"
    );
}

#[test]
fn times_below_a_millisecond_are_written_as_they_are_and_not_remembered() {
    let event = Event {
        id: "a".into(),
        event_time_micros: MILLI + 17,
        sets: vec![(0, 1)],
    };
    let settled = settle_ties(&view(None), Vec::new(), vec![event.contender()]);
    assert_eq!(settled.writes, vec![event.contender().write]);
    assert_eq!(settled.remembered, None);
}
