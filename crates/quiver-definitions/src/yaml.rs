//! A YAML document as a small tree that remembers where each node and key stood.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::Position;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) at: Position,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order: key, where the key stands, value.
    Map(Vec<(String, Position, Node)>),
}

impl Kind {
    /// What a YAML author would call this kind of node.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "nothing",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "a number",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Parses one YAML document; an empty file is `Null`. A syntax error comes with its position.
pub(crate) fn parse(text: &str) -> Result<Node, (Position, String)> {
    let documents = MarkedYaml::load_from_str(text).map_err(|error| {
        let marker = error.marker();
        (
            Position {
                line: marker.line(),
                column: marker.col() + 1,
            },
            format!("invalid YAML: {}", error.info()),
        )
    })?;
    match documents.as_slice() {
        [] => Ok(Node {
            at: Position { line: 1, column: 1 },
            kind: Kind::Null,
        }),
        [document] => convert(document),
        [_, second, ..] => Err((
            position(second),
            "one YAML document per file; remove the `---` separator".to_owned(),
        )),
    }
}

fn position(node: &MarkedYaml<'_>) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

fn convert(node: &MarkedYaml<'_>) -> Result<Node, (Position, String)> {
    let at = position(node);
    let kind = match &node.data {
        YamlData::Value(Scalar::Null) => Kind::Null,
        YamlData::Value(Scalar::Boolean(value)) => Kind::Bool(*value),
        YamlData::Value(Scalar::Integer(value)) => Kind::Int(*value),
        YamlData::Value(Scalar::FloatingPoint(value)) => Kind::Float(value.into_inner()),
        YamlData::Value(Scalar::String(value)) => Kind::Str(value.to_string()),
        YamlData::Representation(text, _, _) => Kind::Str(text.to_string()),
        YamlData::Sequence(items) => {
            Kind::Seq(items.iter().map(convert).collect::<Result<_, _>>()?)
        }
        YamlData::Mapping(entries) => {
            let mut converted = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let YamlData::Value(Scalar::String(name)) = &key.data else {
                    return Err((
                        position(key),
                        "mapping keys must be plain strings".to_owned(),
                    ));
                };
                converted.push((name.to_string(), position(key), convert(value)?));
            }
            Kind::Map(converted)
        }
        YamlData::Tagged(_, inner) => return convert(inner),
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err((
                at,
                "anchors, aliases and malformed values are not supported".to_owned(),
            ));
        }
    };
    Ok(Node { at, kind })
}
