//! Feature definitions from a folder of YAML files, checked so that an ML engineer can act on
//! every error.
//!
//! [`load_dir`] reads every `*.yaml` and `*.yml` file in a folder (not its subfolders), in name
//! order, and returns the [`Definitions`](quiver_core::definition::Definitions) they declare, or
//! every error found, each with its file, line and column. Unknown keys are errors; feature types,
//! key fields and event times are checked against the sources' Avro schemas.

mod decode;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use decode::load_dir;

/// A 1-based line and column in a definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One problem in the definitions, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub file: PathBuf,
    pub at: Position,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.at.line,
            self.at.column,
            self.message
        )
    }
}

/// Every problem found, in file and position order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.0 {
            writeln!(f, "{error}")?;
        }
        write!(f, "{} error(s) in the definitions", self.0.len())
    }
}

impl DefinitionErrors {
    fn single(file: &Path, message: String) -> Self {
        DefinitionErrors(vec![DefinitionError {
            file: file.to_owned(),
            at: Position { line: 1, column: 1 },
            message,
        }])
    }
}
