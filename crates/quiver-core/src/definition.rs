//! The feature definitions an ML engineer declares, and the versioned registry they become.
//!
//! [`Definitions`] is what a folder of YAML files says now; [`Registry`] is what has been applied,
//! where every feature view carries the version whose table holds its data. The loader
//! (`quiver-definitions`) builds `Definitions` and checks them against their sources; the planner
//! ([`crate::plan`]) compares them with the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::filter::Filter;
use crate::name::Name;
use crate::value::{ScalarType, Value, ValueType};

/// Everything declared in one folder of definition files.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Definitions {
    pub entities: Vec<Entity>,
    pub feature_views: Vec<FeatureView>,
    pub feature_services: Vec<FeatureService>,
}

/// A kind of thing that has features, such as a user or a (user, item) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub name: Name,
    pub description: String,
    /// One or more key fields; several make a composite key, in this order.
    pub keys: Vec<KeyField>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyField {
    pub name: Name,
    pub key_type: ScalarType,
}

/// The scalar types an entity key may have: exact equality rules out floats, and bools would
/// make a two-entity table.
pub const KEY_TYPES: [ScalarType; 4] = [
    ScalarType::Int32,
    ScalarType::Int64,
    ScalarType::String,
    ScalarType::Bytes,
];

/// A set of features of one entity, fed by one Kafka topic and stored in one table.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    pub name: Name,
    pub entity: Name,
    pub source: Source,
    /// Values older than this are served as expired; `None` keeps them forever.
    pub ttl: Option<Seconds>,
    /// How far an event may trail the newest event seen on its partition before it is
    /// dead-lettered as late; `None` takes events however late they come.
    pub allowed_lateness: Option<Seconds>,
    /// How long an event's id is remembered once its aggregates have counted it, from its event
    /// time: within it, the same event resent (at a later offset, on another partition, in a
    /// second production of the stream) changes no aggregate. Set exactly when the source
    /// declares an [`Source::event_id`].
    pub dedup: Option<Seconds>,
    pub description: String,
    pub owner: String,
    pub tags: BTreeMap<String, String>,
    pub features: Vec<Feature>,
}

/// Where a view's events come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub topic: String,
    pub schema: SchemaRef,
    /// Avro field paths giving the entity key, one per key field of the entity, in its order.
    pub key_fields: Vec<String>,
    /// Avro field path of the event time.
    pub event_time: String,
    /// Avro field path of the event's identity, which a resent event keeps; `None` when the
    /// events have none, and then a resent event counts again.
    pub event_id: Option<String>,
}

/// The reader schema of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaRef {
    /// An `.avsc` file: its path, relative to the definition file that names it, and its text,
    /// kept so that ingesters need no schema files.
    File { path: String, avsc: String },
    /// A subject in a Confluent-compatible Schema Registry, resolved at ingest time.
    Subject(String),
}

/// One feature: a typed column of its view.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: Name,
    pub value_type: ValueType,
    pub derivation: Derivation,
    /// Served instead of a missing value when the event lacks the field.
    pub default: Option<Value>,
    pub description: String,
    /// Only events that pass it feed the feature: a field feature keeps the latest value among
    /// them, an aggregate aggregates them alone. `None` takes every event.
    pub filter: Option<Filter>,
}

/// How a feature's value is computed from events.
#[derive(Debug, Clone, PartialEq)]
pub enum Derivation {
    /// The latest value of an Avro field path.
    Field(String),
    /// A windowed or lifetime aggregate.
    Aggregate(Aggregate),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub function: AggregateFunction,
    /// The aggregated Avro field path; `None` only for `count`, which then counts every event
    /// (with `of`, the events where the field is present).
    pub of: Option<String>,
    /// The sliding window; `None` is a lifetime aggregate.
    pub window: Option<Seconds>,
    /// How far the window slides at a time, and the size of its tiles; the loader fills in
    /// [`crate::aggregate::default_resolution`] when none is declared. Unused by lifetime
    /// aggregates.
    pub resolution: Option<Seconds>,
}

/// The dedup horizon of a view that declares an event id and no `dedup`.
pub const DEFAULT_DEDUP: Seconds = Seconds(7 * 86_400);

/// The longest window accepted, 30 days.
pub const MAX_WINDOW: Seconds = Seconds(30 * 86_400);
/// The largest `k` of `last_k`.
pub const MAX_LAST_K: u32 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    /// The latest `k` values, newest first.
    LastK(u32),
    /// HyperLogLog estimate of the number of distinct values.
    ApproxDistinct,
}

impl AggregateFunction {
    pub const NAMES: &'static str =
        "count, sum, min, max, avg, first, last, last_k, approx_distinct";

    /// Parses a function name; `last_k` takes its `k` separately.
    pub fn from_name(name: &str, k: Option<u32>) -> Option<Self> {
        Some(match name {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "min" => Self::Min,
            "max" => Self::Max,
            "avg" => Self::Avg,
            "first" => Self::First,
            "last" => Self::Last,
            "last_k" => Self::LastK(k?),
            "approx_distinct" => Self::ApproxDistinct,
            _ => return None,
        })
    }

    /// The declared feature type this function produces from an input of `input` type, or why
    /// the combination makes no sense. `input` is `None` for `count`.
    pub fn output_type(self, input: Option<ValueType>) -> Result<ValueType, String> {
        use ScalarType::*;
        let Some(input) = input else {
            return match self {
                Self::Count => Ok(ValueType::Scalar(Int64)),
                other => Err(format!("`{other}` needs `of`, the field it aggregates")),
            };
        };
        let ValueType::Scalar(scalar) = input else {
            if self == Self::Count {
                return Ok(ValueType::Scalar(Int64));
            }
            return Err(format!("`{self}` aggregates scalar fields, not {input}"));
        };
        let numeric = matches!(scalar, Int32 | Int64 | Float32 | Float64);
        match self {
            // With `of`, a count counts the events where the field is present.
            Self::Count => Ok(ValueType::Scalar(Int64)),
            Self::Sum if matches!(scalar, Int32 | Int64) => Ok(ValueType::Scalar(Int64)),
            Self::Sum if numeric => Ok(ValueType::Scalar(Float64)),
            Self::Avg if numeric => Ok(ValueType::Scalar(Float64)),
            Self::Sum | Self::Avg => Err(format!("`{self}` needs a numeric field, not {scalar}")),
            Self::Min | Self::Max if numeric || scalar == Timestamp => Ok(input),
            Self::Min | Self::Max => Err(format!(
                "`{self}` needs a numeric or timestamp field, not {scalar}"
            )),
            Self::First | Self::Last => Ok(input),
            Self::LastK(_) => Ok(ValueType::List(scalar)),
            Self::ApproxDistinct => Ok(ValueType::Scalar(Int64)),
        }
    }
}

impl fmt::Display for AggregateFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Avg => "avg",
            Self::First => "first",
            Self::Last => "last",
            Self::LastK(_) => "last_k",
            Self::ApproxDistinct => "approx_distinct",
        })
    }
}

/// A named bundle of features that a recommender requests in one call.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureService {
    pub name: Name,
    pub description: String,
    pub features: Vec<ServiceFeature>,
}

/// `view:feature`, or `view@version:feature` to pin a view version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFeature {
    pub view: Name,
    pub version: Option<u32>,
    pub feature: Name,
}

impl FromStr for ServiceFeature {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || format!("`{text}` must look like `view:feature` or `view@2:feature`");
        let (view, feature) = text.split_once(':').ok_or_else(usage)?;
        let (view, version) = match view.split_once('@') {
            Some((view, version)) => (view, Some(version.parse().map_err(|_| usage())?)),
            None => (view, None),
        };
        Ok(ServiceFeature {
            view: view.parse().map_err(|error| format!("{error}"))?,
            version,
            feature: feature.parse().map_err(|error| format!("{error}"))?,
        })
    }
}

impl fmt::Display for ServiceFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}@{version}:{}", self.view, self.feature),
            None => write!(f, "{}:{}", self.view, self.feature),
        }
    }
}

/// A whole number of seconds, written `45s`, `30m`, `1h` or `7d` in definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "`{0}` is not a duration; write a whole number with s, m, h or d, such as 90s, 30m, 1h or 7d"
)]
pub struct DurationError(pub String);

impl FromStr for Seconds {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || DurationError(text.to_owned());
        let split = text.len().checked_sub(1).ok_or_else(error)?;
        let (number, unit) = text.split_at(split);
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(error()),
        };
        let number: u64 = number.parse().map_err(|_| error())?;
        match number.checked_mul(unit_secs) {
            Some(secs) if secs > 0 => Ok(Seconds(secs)),
            _ => Err(error()),
        }
    }
}

impl fmt::Display for Seconds {
    /// The largest unit that divides exactly: `86400` shows as `1d`, `5400` as `90m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs > 0 && secs.is_multiple_of(size) {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

/// What has been applied: every version of every view, and the current entities and services.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registry {
    /// Incremented by every apply that changes something; the store's compare-and-set key.
    pub revision: u64,
    pub entities: Vec<Entity>,
    /// All versions of all views; a view's versions stay readable after a newer one is applied.
    pub feature_views: Vec<VersionedView>,
    pub feature_services: Vec<FeatureService>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VersionedView {
    pub version: u32,
    pub view: FeatureView,
}

impl Registry {
    /// The newest version of the view called `name`.
    pub fn latest_view(&self, name: &Name) -> Option<&VersionedView> {
        self.feature_views
            .iter()
            .filter(|versioned| &versioned.view.name == name)
            .max_by_key(|versioned| versioned.version)
    }

    /// Version `version` of the view called `name`, or its newest version when `None`.
    pub fn view(&self, name: &Name, version: Option<u32>) -> Option<&VersionedView> {
        match version {
            None => self.latest_view(name),
            Some(version) => self
                .feature_views
                .iter()
                .find(|versioned| &versioned.view.name == name && versioned.version == version),
        }
    }

    /// The newest version of every view, in name order.
    pub fn latest_views(&self) -> Vec<&VersionedView> {
        let mut names: Vec<&Name> = self.feature_views.iter().map(|v| &v.view.name).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| self.latest_view(name))
            .collect()
    }

    pub fn entity(&self, name: &Name) -> Option<&Entity> {
        self.entities.iter().find(|entity| &entity.name == name)
    }
}

/// The name of the table holding one version of a view: `<view>_v<version>`.
pub fn view_table_name(view: &Name, version: u32) -> String {
    format!("{view}_v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn durations_round_trip(secs in 1u64..100_000_000) {
            let seconds = Seconds(secs);
            prop_assert_eq!(seconds.to_string().parse::<Seconds>(), Ok(seconds));
        }
    }

    #[test]
    fn reads_durations_as_engineers_write_them() {
        assert_eq!("7d".parse(), Ok(Seconds(7 * 86_400)));
        assert_eq!(
            "90s".parse::<Seconds>().map(|s| s.to_string()),
            Ok("90s".into())
        );
        for bad in ["", "7", "1w", "-1h", "0m", "1.5h"] {
            assert_eq!(
                bad.parse::<Seconds>(),
                Err(DurationError(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn aggregate_output_types_follow_their_inputs() {
        use ScalarType::*;
        let scalar = ValueType::Scalar;
        assert_eq!(
            AggregateFunction::Count.output_type(None),
            Ok(scalar(Int64))
        );
        assert_eq!(
            AggregateFunction::Sum.output_type(Some(scalar(Int32))),
            Ok(scalar(Int64))
        );
        assert_eq!(
            AggregateFunction::Sum.output_type(Some(scalar(Float32))),
            Ok(scalar(Float64))
        );
        assert_eq!(
            AggregateFunction::LastK(5).output_type(Some(scalar(String))),
            Ok(ValueType::List(String))
        );
        let error = AggregateFunction::Avg
            .output_type(Some(scalar(String)))
            .unwrap_err();
        assert_eq!(error, "`avg` needs a numeric field, not string");
        assert_eq!(
            AggregateFunction::Count.output_type(Some(scalar(String))),
            Ok(scalar(Int64)),
            "a count of a field counts the events that have it"
        );
        let error = AggregateFunction::Sum.output_type(None).unwrap_err();
        assert!(error.contains("needs `of`"), "{error}");
    }

    #[test]
    fn reads_service_feature_references_with_optional_versions() {
        let pinned: ServiceFeature = "user_profile@2:country".parse().unwrap();
        assert_eq!(pinned.version, Some(2));
        assert_eq!(pinned.to_string(), "user_profile@2:country");
        let latest: ServiceFeature = "user_profile:country".parse().unwrap();
        assert_eq!(latest.version, None);
        assert!("user_profile@x:country".parse::<ServiceFeature>().is_err());
        assert!("country".parse::<ServiceFeature>().is_err());
    }
}
