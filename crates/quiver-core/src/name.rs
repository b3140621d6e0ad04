//! Names of entities, feature views and features, and `view:feature` references.
//!
//! A name becomes part of a CQL table or column name, so the rules are CQL's unquoted identifier
//! rules narrowed to lower case: a letter, then letters, digits or underscores, 48 bytes at most
//! (Cassandra's limit for table names).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The longest name accepted: Cassandra refuses longer table names.
pub const MAX_NAME_LEN: usize = 48;

/// A valid name for an entity, a feature view, a feature or a feature service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("name `{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("name `{0}` must start with a lower-case letter")]
    BadStart(String),
    #[error("name `{name}` has `{character}`; use lower-case letters, digits and underscores only")]
    BadCharacter { name: String, character: char },
    #[error("feature reference `{0}` must look like `view:feature`")]
    BadReference(String),
}

/// Text from a request or a file as an error message quotes it: whole when short, else its
/// first 64 characters and its length, so that a huge input cannot make a huge message.
pub fn excerpt(text: &str) -> String {
    const QUOTED_CHARS: usize = 64;
    match text.char_indices().nth(QUOTED_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let first = text.chars().next().ok_or(NameError::Empty)?;
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(excerpt(text)));
        }
        if !first.is_ascii_lowercase() {
            return Err(NameError::BadStart(excerpt(text)));
        }
        if let Some(character) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(NameError::BadCharacter {
                name: excerpt(text),
                character,
            });
        }
        Ok(Name(text.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reference to one feature of one view, written `view:feature` in requests and services.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureRef {
    pub view: Name,
    pub feature: Name,
}

impl FromStr for FeatureRef {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (view, feature) = text
            .split_once(':')
            .ok_or_else(|| NameError::BadReference(excerpt(text)))?;
        Ok(FeatureRef {
            view: view.parse()?,
            feature: feature.parse()?,
        })
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.view, self.feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn valid_names_round_trip(text in "[a-z][a-z0-9_]{0,47}") {
            prop_assert_eq!(text.parse::<Name>().map(|name| name.to_string()), Ok(text));
        }
    }

    #[test]
    fn refuses_names_that_cql_would_not_take_unquoted() {
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        assert_eq!(
            "9lives".parse::<Name>(),
            Err(NameError::BadStart("9lives".into()))
        );
        assert_eq!(
            "user-activity".parse::<Name>(),
            Err(NameError::BadCharacter {
                name: "user-activity".into(),
                character: '-'
            })
        );
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(long.parse::<Name>(), Err(NameError::TooLong(long.clone())));
    }

    #[test]
    fn errors_quote_a_huge_input_by_its_start_and_length() {
        let huge = "b".repeat(4_000_000);
        let message = huge.parse::<Name>().unwrap_err().to_string();
        assert!(message.len() < 200, "{} bytes", message.len());
        assert!(message.contains("(4000000 bytes)"), "{message}");
        assert_eq!(excerpt("é".repeat(64).as_str()), "é".repeat(64));
        assert!(excerpt("é".repeat(65).as_str()).ends_with("… (130 bytes)"));
    }

    #[test]
    fn reads_view_feature_references() {
        let reference: FeatureRef = "user_activity:matches_1h".parse().unwrap();
        assert_eq!(reference.view.as_str(), "user_activity");
        assert_eq!(reference.feature.as_str(), "matches_1h");
        assert_eq!(reference.to_string(), "user_activity:matches_1h");

        assert_eq!(
            "matches_1h".parse::<FeatureRef>(),
            Err(NameError::BadReference("matches_1h".into()))
        );
        assert_eq!(
            "user_activity:Matches".parse::<FeatureRef>(),
            Err(NameError::BadStart("Matches".into()))
        );
    }
}
