//! The samples that the storage format's golden files hold, and those files' committed bytes.
//!
//! `quiver-format` checks that encoding these samples gives the golden bytes and that decoding
//! the bytes gives the samples back; each online store adapter checks that it reads a golden
//! registry and tile written into it as they would have been stored.

use std::collections::BTreeMap;

use quiver_core::aggregate::{
    AppliedEvent, HyperLogLog, LIFETIME_TILE_START, Partial, Stamped, Tile,
};
use quiver_core::definition::{
    Aggregate, AggregateFunction, Derivation, Entity, Feature, FeatureService, FeatureView,
    KeyField, Registry, SchemaRef, Seconds, ServiceFeature, Source, VersionedView,
};
use quiver_core::filter::{CompareOp, Filter};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::name::Name;
use quiver_core::ties::{Tiebreak, TiedEvent};
use quiver_core::value::{ScalarType, Value, ValueType};

/// The registry of format version 1, as both adapters store it.
pub const REGISTRY_V1: &str = include_str!("../../quiver-format/golden/registry-v1.json");
/// The same registry as stores wrote it before the format version was recorded.
pub const REGISTRY_UNVERSIONED: &str =
    include_str!("../../quiver-format/golden/registry-unversioned.json");
/// One tile cell of format version 2 per line, in [`sample_tiles`] order.
pub const TILES_V2: &str = include_str!("../../quiver-format/golden/tiles-v2.jsonl");
/// The same tiles in format version 1, which kept no tiebreaks: [`sample_tiles_v1`].
pub const TILES_V1: &str = include_str!("../../quiver-format/golden/tiles-v1.jsonl");
/// The remembered ties of [`sample_ties`], in format version 1.
pub const TIES_V1: &str = include_str!("../../quiver-format/golden/ties-v1.json");
/// The applied event ids of [`sample_applied`], each entry of format version 1 on its own line
/// in hex.
pub const APPLIED_V1: &str = include_str!("../../quiver-format/golden/applied-v1.hex");
/// One stored value per line, in [`sample_values`] order.
pub const VALUES_V1: &str = include_str!("../../quiver-format/golden/values-v1.jsonl");

fn name(text: &str) -> Name {
    text.parse().expect("a valid sample name")
}

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

/// A registry that uses every kind of definition the format stores: composite keys, both kinds
/// of schema, every aggregate function, every filter, defaults, tags and pinned services.
pub fn sample_registry() -> Registry {
    Registry {
        revision: 7,
        entities: vec![
            Entity {
                name: name("user"),
                description: "A person who swipes".to_owned(),
                keys: vec![KeyField {
                    name: name("user_id"),
                    key_type: ScalarType::Int64,
                }],
            },
            Entity {
                name: name("user_item"),
                description: String::new(),
                keys: vec![
                    KeyField {
                        name: name("user_id"),
                        key_type: ScalarType::Int64,
                    },
                    KeyField {
                        name: name("item_id"),
                        key_type: ScalarType::String,
                    },
                ],
            },
        ],
        feature_views: vec![
            VersionedView {
                version: 1,
                view: activity_view(),
            },
            VersionedView {
                version: 2,
                view: FeatureView {
                    features: activity_features(),
                    ..activity_view()
                },
            },
            VersionedView {
                version: 1,
                view: pair_view(),
            },
        ],
        feature_services: vec![FeatureService {
            name: name("ranker"),
            description: "The ranking model's features".to_owned(),
            features: vec![
                ServiceFeature {
                    view: name("user_activity"),
                    version: None,
                    feature: name("likes_1h"),
                },
                ServiceFeature {
                    view: name("user_activity"),
                    version: Some(1),
                    feature: name("last_country"),
                },
            ],
        }],
    }
}

fn activity_view() -> FeatureView {
    FeatureView {
        name: name("user_activity"),
        entity: name("user"),
        source: Source {
            topic: "swipes".to_owned(),
            schema: SchemaRef::File {
                path: "schemas/swipe.avsc".to_owned(),
                avsc: r#"{"type":"record","name":"Swipe","fields":[]}"#.to_owned(),
            },
            key_fields: vec!["user_id".to_owned()],
            event_time: "ts".to_owned(),
            event_id: Some("event_id".to_owned()),
        },
        ttl: Some(Seconds(7 * 86_400)),
        allowed_lateness: Some(Seconds(600)),
        dedup: Some(Seconds(7 * 86_400)),
        description: "What a user did".to_owned(),
        owner: "ranking@example.com".to_owned(),
        tags: BTreeMap::from([("team".to_owned(), "ranking".to_owned())]),
        features: vec![field(
            "last_country",
            ValueType::Scalar(ScalarType::String),
            "country",
        )],
    }
}

fn field(feature: &str, value_type: ValueType, path: &str) -> Feature {
    Feature {
        name: name(feature),
        value_type,
        derivation: Derivation::Field(path.to_owned()),
        default: None,
        description: String::new(),
        filter: None,
    }
}

fn aggregate(
    feature: &str,
    value_type: ValueType,
    function: AggregateFunction,
    of: Option<&str>,
    window: Option<u64>,
) -> Feature {
    Feature {
        derivation: Derivation::Aggregate(Aggregate {
            function,
            of: of.map(str::to_owned),
            window: window.map(Seconds),
            resolution: window.map(|window| Seconds(window / 12)),
        }),
        ..field(feature, value_type, "")
    }
}

fn activity_features() -> Vec<Feature> {
    let scalar = ValueType::Scalar;
    let compare = |field: &str, op, literal| Filter::Compare {
        field: field.to_owned(),
        op,
        literal,
    };
    vec![
        Feature {
            default: Some(string("unknown")),
            description: "The country of the latest swipe".to_owned(),
            filter: Some(Filter::NotNull("country".to_owned())),
            ..field("last_country", scalar(ScalarType::String), "country")
        },
        field(
            "embedding",
            ValueType::Embedding { dimension: 4 },
            "profile.embedding",
        ),
        Feature {
            filter: Some(compare("action", CompareOp::Eq, string("LIKE"))),
            ..aggregate(
                "likes_1h",
                scalar(ScalarType::Int64),
                AggregateFunction::Count,
                None,
                Some(3_600),
            )
        },
        aggregate(
            "dwell_count",
            scalar(ScalarType::Int64),
            AggregateFunction::Count,
            Some("dwell_ms"),
            None,
        ),
        Feature {
            filter: Some(Filter::All(vec![
                compare("dwell_ms", CompareOp::Ge, Value::Int64(60)),
                compare("dwell_ms", CompareOp::Lt, Value::Int64(3_600)),
                Filter::Any(vec![
                    Filter::In {
                        field: "country".to_owned(),
                        literals: vec![string("DE"), string("US")],
                    },
                    Filter::IsNull("device".to_owned()),
                    compare("score", CompareOp::Gt, Value::Float64(0.5)),
                    compare("action", CompareOp::Ne, string("PASS")),
                    compare("dwell_ms", CompareOp::Le, Value::Int32(10)),
                ]),
            ])),
            ..aggregate(
                "dwell_sum_24h",
                scalar(ScalarType::Int64),
                AggregateFunction::Sum,
                Some("dwell_ms"),
                Some(86_400),
            )
        },
        aggregate(
            "score_min_1h",
            scalar(ScalarType::Float64),
            AggregateFunction::Min,
            Some("score"),
            Some(3_600),
        ),
        aggregate(
            "score_max_1h",
            scalar(ScalarType::Float64),
            AggregateFunction::Max,
            Some("score"),
            Some(3_600),
        ),
        aggregate(
            "score_avg_1h",
            scalar(ScalarType::Float64),
            AggregateFunction::Avg,
            Some("score"),
            Some(3_600),
        ),
        aggregate(
            "first_target",
            scalar(ScalarType::Int64),
            AggregateFunction::First,
            Some("target_id"),
            None,
        ),
        aggregate(
            "last_target",
            scalar(ScalarType::Int64),
            AggregateFunction::Last,
            Some("target_id"),
            None,
        ),
        aggregate(
            "last_5_targets",
            ValueType::List(ScalarType::Int64),
            AggregateFunction::LastK(5),
            Some("target_id"),
            Some(86_400),
        ),
        aggregate(
            "distinct_targets_7d",
            scalar(ScalarType::Int64),
            AggregateFunction::ApproxDistinct,
            Some("target_id"),
            Some(7 * 86_400),
        ),
    ]
}

fn pair_view() -> FeatureView {
    FeatureView {
        name: name("user_item"),
        entity: name("user_item"),
        source: Source {
            topic: "views".to_owned(),
            schema: SchemaRef::Subject("views-value".to_owned()),
            key_fields: vec!["user_id".to_owned(), "item_id".to_owned()],
            event_time: "ts".to_owned(),
            event_id: None,
        },
        ttl: None,
        allowed_lateness: None,
        dedup: None,
        description: String::new(),
        owner: String::new(),
        tags: BTreeMap::new(),
        features: vec![Feature {
            default: Some(Value::Bool(false)),
            ..field("viewed", ValueType::Scalar(ScalarType::Bool), "viewed")
        }],
    }
}

/// One tile of every kind of partial aggregate, sparse and dense sketches included, and
/// tiebreaks of both kinds.
pub fn sample_tiles() -> Vec<Tile> {
    let mut ties = [
        Tiebreak::EventId("e-0007".to_owned()),
        Tiebreak::Offset(41),
        Tiebreak::EventId("2f1c9a4e".to_owned()),
        Tiebreak::Offset(-1),
    ]
    .into_iter()
    .cycle();
    let mut stamped = |micros, value| Stamped {
        event_time_micros: micros,
        tiebreak: ties.next(),
        value,
    };
    let mut sparse = HyperLogLog::default();
    let mut dense = HyperLogLog::default();
    for target in 0..5 {
        sparse.insert(&Value::Int64(target));
    }
    for target in 0..4_000 {
        dense.insert(&Value::Int64(target));
    }
    let partials = [
        ("likes_1h", Partial::Count(3)),
        ("dwell_sum_24h", Partial::IntSum(-42)),
        ("score_sum", Partial::FloatSum(2.5)),
        ("score_min_1h", Partial::Min(Value::Float64(-0.25))),
        ("score_max_1h", Partial::Max(Value::Float64(0.75))),
        ("score_avg_1h", Partial::Avg { sum: 1.5, count: 4 }),
        (
            "first_target",
            Partial::First(stamped(1_764_000_000_000_000, Value::Int64(11))),
        ),
        (
            "last_target",
            Partial::Last(stamped(1_764_000_000_001_000, Value::Int64(12))),
        ),
        (
            "last_5_targets",
            Partial::LastK {
                k: 5,
                newest: vec![
                    stamped(1_764_000_000_002_000, Value::Int64(13)),
                    stamped(1_764_000_000_001_000, Value::Int64(12)),
                ],
            },
        ),
        ("distinct_targets_7d", Partial::Distinct(sparse)),
        ("distinct_targets_30d", Partial::Distinct(dense)),
    ];
    partials
        .into_iter()
        .enumerate()
        .map(|(index, (feature, partial))| Tile {
            feature: name(feature),
            start_micros: if index % 3 == 0 {
                LIFETIME_TILE_START
            } else {
                1_763_999_700_000_000
            },
            source: format!("swipes/{index}"),
            through_offset: 1_000 + index as i64,
            newest_event_micros: 1_764_000_000_002_000,
            partial,
        })
        .collect()
}

/// [`sample_tiles`] as format 1 kept them, and as the tiles stored before versions were
/// recorded read: without tiebreaks.
pub fn sample_tiles_v1() -> Vec<Tile> {
    let untied = |newest: &mut Vec<Stamped>| {
        for stamped in newest {
            stamped.tiebreak = None;
        }
    };
    let mut tiles = sample_tiles();
    for tile in &mut tiles {
        match &mut tile.partial {
            Partial::First(stamped) | Partial::Last(stamped) => stamped.tiebreak = None,
            Partial::LastK { newest, .. } => untied(newest),
            Partial::Count(_)
            | Partial::IntSum(_)
            | Partial::FloatSum(_)
            | Partial::Min(_)
            | Partial::Max(_)
            | Partial::Avg { .. }
            | Partial::Distinct(_) => {}
        }
    }
    tiles
}

/// Remembered events of one entity: two at one millisecond, one of them setting no feature it
/// won, and one without an event id.
pub fn sample_ties() -> Vec<TiedEvent> {
    vec![
        TiedEvent {
            event_time_micros: 1_764_000_000_001_000,
            tiebreak: Tiebreak::EventId("e-0002".to_owned()),
            slot: 0,
            features: [0, 1, 4].into(),
        },
        TiedEvent {
            event_time_micros: 1_764_000_000_001_000,
            tiebreak: Tiebreak::EventId("e-0001".to_owned()),
            slot: 1,
            features: [1].into(),
        },
        TiedEvent {
            event_time_micros: 1_764_000_000_000_000,
            tiebreak: Tiebreak::Offset(i64::MAX),
            slot: 999,
            features: [].into(),
        },
    ]
}

/// Applied event ids, one with an empty source and negative offset at the edges of the range.
pub fn sample_applied() -> Vec<AppliedEvent> {
    vec![
        AppliedEvent {
            event_id: "e-0001".to_owned(),
            source: "swipes/3".to_owned(),
            offset: 42,
            expires_micros: 1_764_604_800_000_000,
        },
        AppliedEvent {
            event_id: "2f1c9a4e-7b7d-4d52-9d8e-0c5b2a1e9f30".to_owned(),
            source: String::new(),
            offset: -1,
            expires_micros: i64::MAX,
        },
    ]
}

/// One value of every variant.
pub fn sample_values() -> Vec<Value> {
    vec![
        Value::Bool(true),
        Value::Int32(-7),
        Value::Int64(9_007_199_254_740_993),
        Value::Float32(0.5),
        Value::Float64(-1.25e-3),
        string("München \"quoted\""),
        Value::Bytes(vec![0, 1, 254, 255]),
        Value::Timestamp(1_764_000_000_000_000),
        Value::BoolList(vec![true, false]),
        Value::Int32List(vec![1, -2]),
        Value::Int64List(vec![]),
        Value::Float32List(vec![0.25, -0.5, 1.0, 2.0]),
        Value::Float64List(vec![3.5]),
        Value::StringList(vec!["a".to_owned(), "b".to_owned()]),
        Value::BytesList(vec![vec![9], vec![]]),
        Value::TimestampList(vec![0, 1]),
    ]
}

/// The entity, view version and key under which adapters store the golden tiles: user 1 of
/// `user_activity` version 2 in [`sample_registry`].
pub fn tiled_entity() -> (Entity, VersionedView, EntityKey) {
    let registry = sample_registry();
    let view = registry
        .view(&name("user_activity"), Some(2))
        .expect("the sample has version 2")
        .clone();
    let key = EntityKey::new(vec![KeyPart::Int64(1)]).expect("a valid key");
    (registry.entities[0].clone(), view, key)
}

/// Tiles in the order of their feature, source and start, as two reads of a store compare.
pub fn sorted_tiles(mut tiles: Vec<Tile>) -> Vec<Tile> {
    tiles.sort_by(|a, b| {
        (&a.feature, &a.source, a.start_micros).cmp(&(&b.feature, &b.source, b.start_micros))
    });
    tiles
}
