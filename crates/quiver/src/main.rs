//! The `quiver` command line: one binary whose subcommands run each part of the feature store.

use clap::Parser;

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
    after_help = "Subcommands (plan, apply, ingest, serve, get, quickstart, bench) are being built; \
                  this release offers --help and --version only."
)]
struct Cli {}

fn main() {
    Cli::parse();
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
