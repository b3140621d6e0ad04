//! Which events feed a feature: a condition over an event's fields, declared as `where:`.
//!
//! A filter reads field values through a lookup, so this module knows nothing of Avro: the
//! adapter that decodes events (`quiver-avro`) answers the lookup, and the loader checks each
//! literal against the field's type before a filter is built. Comparisons follow SQL: a field
//! that is missing or null makes every comparison false, `ne` and `in` included; only `is null`
//! holds for it.

use std::cmp::Ordering;
use std::fmt;

use crate::value::Value;

/// A condition over an event's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every condition holds; several keys of one `where:` mapping, or `and: [...]`.
    All(Vec<Filter>),
    /// At least one condition holds: `or: [...]`.
    Any(Vec<Filter>),
    /// The field compares to the literal as `op` says.
    Compare {
        field: String,
        op: CompareOp,
        literal: Value,
    },
    /// The field equals one of the literals.
    In { field: String, literals: Vec<Value> },
    /// The field is missing or null.
    IsNull(String),
    /// The field is present and not null.
    NotNull(String),
}

/// A comparison of a field with a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    /// The names a `where:` mapping uses, as in `{dwell_ms: {gt: 500}}`.
    pub const NAMES: &'static str = "eq, ne, lt, le, gt, ge, in";

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "lt" => Self::Lt,
            "le" => Self::Le,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            _ => return None,
        })
    }

    /// Whether `ordering`, of a field against a literal, satisfies this operator.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering == Ordering::Equal,
            Self::Ne => ordering != Ordering::Equal,
            Self::Lt => ordering == Ordering::Less,
            Self::Le => ordering != Ordering::Greater,
            Self::Gt => ordering == Ordering::Greater,
            Self::Ge => ordering != Ordering::Less,
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Lt => "lt",
            Self::Le => "le",
            Self::Gt => "gt",
            Self::Ge => "ge",
        })
    }
}

impl Filter {
    /// Whether an event passes, given `field`, which answers a field path with the event's
    /// value there (`None` when missing or null). A field's value and a literal of different
    /// types never match; the loader makes sure they agree.
    pub fn matches(&self, field: &impl Fn(&str) -> Option<Value>) -> bool {
        match self {
            Filter::All(conditions) => conditions.iter().all(|c| c.matches(field)),
            Filter::Any(conditions) => conditions.iter().any(|c| c.matches(field)),
            Filter::Compare {
                field: path,
                op,
                literal,
            } => field(path)
                .and_then(|value| compare(&value, literal))
                .is_some_and(|ordering| op.holds(ordering)),
            Filter::In {
                field: path,
                literals,
            } => field(path).is_some_and(|value| {
                literals
                    .iter()
                    .any(|literal| compare(&value, literal) == Some(Ordering::Equal))
            }),
            Filter::IsNull(path) => field(path).is_none(),
            Filter::NotNull(path) => field(path).is_some(),
        }
    }

    /// The field paths the filter reads, in declaration order, each once.
    pub fn fields(&self) -> Vec<&str> {
        let mut paths = Vec::new();
        self.collect_fields(&mut paths);
        paths
    }

    fn collect_fields<'f>(&'f self, paths: &mut Vec<&'f str>) {
        let path = match self {
            Filter::All(conditions) | Filter::Any(conditions) => {
                for condition in conditions {
                    condition.collect_fields(paths);
                }
                return;
            }
            Filter::Compare { field, .. } | Filter::In { field, .. } => field,
            Filter::IsNull(field) | Filter::NotNull(field) => field,
        };
        if !paths.contains(&path.as_str()) {
            paths.push(path);
        }
    }
}

/// How a field's value orders against a literal of the same scalar type, integers and floats
/// comparing as numbers; `None` for values of different types, which no filter compares.
fn compare(value: &Value, literal: &Value) -> Option<Ordering> {
    Some(match (value, literal) {
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Int64(a), Value::Int64(b)) => a.cmp(b),
        (Value::Float64(a), Value::Float64(b)) => a.partial_cmp(b)?,
        // A schema known only at ingest time leaves a literal typed by how YAML wrote it.
        (Value::Int64(a), Value::Float64(b)) => (*a as f64).partial_cmp(b)?,
        (Value::Float64(a), Value::Int64(b)) => a.partial_cmp(&(*b as f64))?,
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(field: &str) -> Option<Value> {
        match field {
            "action" => Some(Value::String("LIKE".into())),
            "dwell_ms" => Some(Value::Int64(800)),
            "score" => Some(Value::Float64(0.5)),
            "premium" => Some(Value::Bool(true)),
            _ => None,
        }
    }

    fn compare(field: &str, op: CompareOp, literal: Value) -> Filter {
        Filter::Compare {
            field: field.into(),
            op,
            literal,
        }
    }

    #[test]
    fn compares_fields_with_literals_of_their_type() {
        use CompareOp::*;
        let like = Value::String("LIKE".into());
        assert!(compare("action", Eq, like.clone()).matches(&event));
        assert!(!compare("action", Ne, like).matches(&event));
        assert!(compare("dwell_ms", Gt, Value::Int64(500)).matches(&event));
        assert!(compare("dwell_ms", Le, Value::Int64(800)).matches(&event));
        assert!(!compare("dwell_ms", Lt, Value::Int64(800)).matches(&event));
        assert!(compare("score", Ge, Value::Float64(0.5)).matches(&event));
        assert!(compare("score", Lt, Value::Int64(1)).matches(&event));
        assert!(compare("dwell_ms", Eq, Value::Float64(800.0)).matches(&event));
        assert!(compare("premium", Eq, Value::Bool(true)).matches(&event));
        // Types that disagree never match, whatever the operator.
        assert!(!compare("dwell_ms", Ne, Value::String("800".into())).matches(&event));
    }

    #[test]
    fn a_missing_field_fails_every_comparison_but_is_null() {
        use CompareOp::*;
        for op in [Eq, Ne, Lt, Le, Gt, Ge] {
            assert!(!compare("country", op, Value::String("SE".into())).matches(&event));
        }
        let any_country = Filter::In {
            field: "country".into(),
            literals: vec![Value::String("SE".into())],
        };
        assert!(!any_country.matches(&event));
        assert!(Filter::IsNull("country".into()).matches(&event));
        assert!(!Filter::NotNull("country".into()).matches(&event));
        assert!(Filter::NotNull("action".into()).matches(&event));
    }

    #[test]
    fn combines_conditions_with_and_and_or() {
        let liked = Filter::In {
            field: "action".into(),
            literals: vec![Value::String("PASS".into()), Value::String("LIKE".into())],
        };
        let long = compare("dwell_ms", CompareOp::Gt, Value::Int64(1_000));
        assert!(!Filter::All(vec![liked.clone(), long.clone()]).matches(&event));
        assert!(Filter::Any(vec![liked.clone(), long.clone()]).matches(&event));
        assert!(Filter::All(Vec::new()).matches(&event));
        assert!(!Filter::Any(Vec::new()).matches(&event));
        let nested = Filter::Any(vec![
            Filter::All(vec![liked, long]),
            Filter::IsNull("x".into()),
        ]);
        assert!(nested.matches(&event));
        assert_eq!(nested.fields(), ["action", "dwell_ms", "x"]);
    }
}
