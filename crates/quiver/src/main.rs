//! The `quiver` command line: one binary whose subcommands run each part of the feature store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Quiver, a real-time feature store for recommender systems.
///
/// ML engineers declare features as YAML files; Quiver ingests Avro events from Kafka into
/// ScyllaDB, ordered by event time, and serves the latest values over gRPC in a few milliseconds.
#[derive(Debug, Parser)]
#[command(
    name = "quiver",
    version,
    about,
    long_about,
    after_help = "More subcommands (plan, apply, ingest, serve, get, quickstart, bench) are being \
                  built; see README.md for what works today."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a folder of feature definitions without touching any store.
    ///
    /// Reads every *.yaml and *.yml file in the folder, checks names, references, types and
    /// aggregations, and checks each source field against its Avro schema (.avsc paths are
    /// relative to the file that names them). Prints every error with its file, line and column.
    ///
    /// Exit codes: 0 the definitions are valid; 1 they are not, or the folder cannot be read.
    Validate {
        /// The folder holding the definition files.
        #[arg(long, value_name = "FOLDER")]
        dir: PathBuf,
    },
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary's output"
)]
fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { dir } => match quiver_definitions::load_dir(&dir) {
            Ok(definitions) => {
                let features: usize = definitions
                    .feature_views
                    .iter()
                    .map(|view| view.features.len())
                    .sum();
                println!(
                    "{}: valid: {} entities, {} feature views ({features} features), {} feature services",
                    dir.display(),
                    definitions.entities.len(),
                    definitions.feature_views.len(),
                    definitions.feature_services.len(),
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
