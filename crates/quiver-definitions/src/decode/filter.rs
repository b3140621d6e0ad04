//! Reads a `where:` mapping into a [`Filter`], checking each field and literal against the
//! source's Avro schema.
//!
//! `{action: LIKE}` is equality, several keys must all hold, `{action: {in: [LIKE, SUPER]}}`
//! takes any of a list, `{dwell_ms: {gt: 500}}` compares (`eq`, `ne`, `lt`, `le`, `gt`, `ge`),
//! `{country: null}` is "is null" and `{country: {ne: null}}` "is not null"; `and: [...]` and
//! `or: [...]` combine mappings.

use apache_avro::Schema;
use quiver_avro::mapping;
use quiver_core::filter::{CompareOp, Filter};
use quiver_core::value::Value;

use super::Loader;
use crate::yaml::{Kind, Node};

/// What a filtered field holds, as far as literals are concerned.
#[derive(Clone, Copy)]
enum Operand<'s> {
    Bool,
    Integer,
    Float,
    /// A string, or an enum with these symbols.
    Text(Option<&'s [String]>),
    /// A timestamp: it can be tested for null only.
    Timestamp,
    /// A schema known only at ingest time: literals keep the type YAML gives them.
    Unchecked,
}

impl Loader {
    /// Reads the `where:` mapping `node` of `what`, whose events follow `schema` (`None` for a
    /// Schema Registry subject, checked at ingest).
    pub(super) fn filter(
        &mut self,
        node: &Node,
        what: &str,
        schema: Option<&Schema>,
    ) -> Option<Filter> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.at,
                format!(
                    "the `where` of {what} must be a mapping such as `{{action: LIKE}}`, not {}",
                    node.kind.describe()
                ),
            );
            return None;
        };
        if entries.is_empty() {
            self.error(
                node.at,
                format!("the `where` of {what} is empty; give it a condition or remove it"),
            );
            return None;
        }
        let mut conditions = Vec::with_capacity(entries.len());
        let mut valid = true;
        for (key, _, value) in entries {
            let condition = match key.as_str() {
                "and" => self.combined(value, what, schema, "and").map(Filter::All),
                "or" => self.combined(value, what, schema, "or").map(Filter::Any),
                path => self.condition(path, value, what, schema),
            };
            match condition {
                Some(condition) => conditions.push(condition),
                None => valid = false,
            }
        }
        if !valid {
            return None;
        }
        Some(match <[Filter; 1]>::try_from(conditions) {
            Ok([only]) => only,
            Err(conditions) => Filter::All(conditions),
        })
    }

    /// The mappings of an `and:` or `or:` list.
    fn combined(
        &mut self,
        node: &Node,
        what: &str,
        schema: Option<&Schema>,
        word: &str,
    ) -> Option<Vec<Filter>> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.at,
                format!(
                    "`{word}` in the `where` of {what} must be a list of conditions, not {}",
                    node.kind.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                node.at,
                format!("`{word}` in the `where` of {what} needs at least one condition"),
            );
            return None;
        }
        let filters: Vec<Option<Filter>> = items
            .iter()
            .map(|item| self.filter(item, what, schema))
            .collect();
        filters.into_iter().collect()
    }

    /// The condition on the field at `path` that `node` states.
    fn condition(
        &mut self,
        path: &str,
        node: &Node,
        what: &str,
        schema: Option<&Schema>,
    ) -> Option<Filter> {
        let operand = self.operand(path, node, schema)?;
        let field = path.to_owned();
        match &node.kind {
            Kind::Null => Some(Filter::IsNull(field)),
            Kind::Map(entries) => {
                let mut conditions = Vec::with_capacity(entries.len());
                for (op, at, literal) in entries {
                    let condition = if op == "in" {
                        self.in_list(path, literal, operand)
                    } else if let Some(op) = CompareOp::from_name(op) {
                        self.comparison(path, op, literal, operand)
                    } else {
                        self.error(
                            *at,
                            format!(
                                "unknown operator `{op}` on field `{path}` in the `where` of \
                                 {what}; use one of {}",
                                CompareOp::NAMES
                            ),
                        );
                        None
                    };
                    conditions.push(condition?);
                }
                match <[Filter; 1]>::try_from(conditions) {
                    Ok([only]) => Some(only),
                    Err(conditions) if conditions.is_empty() => {
                        self.error(
                            node.at,
                            format!("field `{path}` in the `where` of {what} has no operator"),
                        );
                        None
                    }
                    Err(conditions) => Some(Filter::All(conditions)),
                }
            }
            Kind::Seq(_) => {
                self.error(
                    node.at,
                    format!(
                        "field `{path}` in the `where` of {what} is given a list; write \
                         `{{in: [...]}}` to match any of several values"
                    ),
                );
                None
            }
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => {
                self.comparison(path, CompareOp::Eq, node, operand)
            }
        }
    }

    /// `path` compared with one literal; `eq: null` and `ne: null` test for null.
    fn comparison(
        &mut self,
        path: &str,
        op: CompareOp,
        literal: &Node,
        operand: Operand<'_>,
    ) -> Option<Filter> {
        let field = path.to_owned();
        match (op, &literal.kind) {
            (CompareOp::Eq, Kind::Null) => Some(Filter::IsNull(field)),
            (CompareOp::Ne, Kind::Null) => Some(Filter::NotNull(field)),
            (_, Kind::Null) => {
                self.error(
                    literal.at,
                    format!("`{op}: null` on field `{path}` compares nothing; use `eq` or `ne`"),
                );
                None
            }
            _ => {
                let at = literal.at;
                let literal = self.literal(path, literal, operand)?;
                if matches!(literal, Value::Bool(_)) && !matches!(op, CompareOp::Eq | CompareOp::Ne)
                {
                    self.error(
                        at,
                        format!("field `{path}` is a boolean; compare it with `eq` or `ne`"),
                    );
                    return None;
                }
                Some(Filter::Compare { field, op, literal })
            }
        }
    }

    /// `path` matched against any literal of the list `node`.
    fn in_list(&mut self, path: &str, node: &Node, operand: Operand<'_>) -> Option<Filter> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.at,
                format!(
                    "`in` on field `{path}` takes a list of values, not {}",
                    node.kind.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                node.at,
                format!("`in` on field `{path}` needs at least one value"),
            );
            return None;
        }
        let literals: Vec<Option<Value>> = items
            .iter()
            .map(|item| self.literal(path, item, operand))
            .collect();
        Some(Filter::In {
            field: path.to_owned(),
            literals: literals.into_iter().collect::<Option<_>>()?,
        })
    }

    /// The literal `node` as a value comparable with the field at `path`.
    fn literal(&mut self, path: &str, node: &Node, operand: Operand<'_>) -> Option<Value> {
        let value = match (operand, &node.kind) {
            (Operand::Bool | Operand::Unchecked, Kind::Bool(b)) => Some(Value::Bool(*b)),
            (Operand::Integer | Operand::Unchecked, Kind::Int(i)) => Some(Value::Int64(*i)),
            (Operand::Float, Kind::Int(i)) => Some(Value::Float64(*i as f64)),
            (Operand::Float | Operand::Unchecked, Kind::Float(x)) => Some(Value::Float64(*x)),
            (Operand::Text(None) | Operand::Unchecked, Kind::Str(text)) => {
                Some(Value::String(text.clone()))
            }
            (Operand::Text(Some(symbols)), Kind::Str(text)) => {
                if !symbols.contains(text) {
                    self.error(
                        node.at,
                        format!(
                            "`{text}` is not a symbol of enum field `{path}`; it has: {}",
                            symbols.join(", ")
                        ),
                    );
                    return None;
                }
                Some(Value::String(text.clone()))
            }
            _ => None,
        };
        if value.is_none() {
            let expected = match operand {
                Operand::Bool => "a boolean",
                Operand::Integer => "a whole number",
                Operand::Float => "a number",
                Operand::Text(_) => "a string",
                Operand::Timestamp => "nothing: a timestamp can only be tested for null",
                Operand::Unchecked => "a boolean, number or string",
            };
            self.error(
                node.at,
                format!(
                    "field `{path}` is compared with {}, but it takes {expected}",
                    node.kind.describe()
                ),
            );
        }
        value
    }

    /// What the field at `path` holds, or an error at `node` when it cannot be filtered on.
    fn operand<'s>(
        &mut self,
        path: &str,
        node: &Node,
        schema: Option<&'s Schema>,
    ) -> Option<Operand<'s>> {
        let Some(schema) = schema else {
            return Some(Operand::Unchecked);
        };
        let field = self.avro_field(schema, path, node.at, "filtered field")?;
        let operand = match field.schema {
            Schema::Boolean => Operand::Bool,
            Schema::Int | Schema::Long => Operand::Integer,
            Schema::Float | Schema::Double => Operand::Float,
            Schema::String | Schema::Uuid => Operand::Text(None),
            Schema::Enum(schema) => Operand::Text(Some(&schema.symbols)),
            Schema::TimestampMillis | Schema::TimestampMicros => Operand::Timestamp,
            other => {
                self.error(
                    node.at,
                    format!(
                        "filtered field `{path}` is Avro {}; filter on a boolean, number,                          string, enum or timestamp field",
                        mapping::avro_type_name(other)
                    ),
                );
                return None;
            }
        };
        Some(operand)
    }
}
