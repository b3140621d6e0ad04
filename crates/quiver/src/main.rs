//! The `quiver` command line: one binary whose subcommands run each part of the feature store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use quiver_core::apply::ApplyError;
use quiver_core::definition::Definitions;
use quiver_scylla::{ScyllaConfig, ScyllaStore};
use scylla::statement::Consistency;

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
    after_help = "More subcommands (ingest, serve, get, quickstart, bench) are being built; see \
                  README.md for what works today."
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
    /// Show what `apply` would change in the registry, without changing anything.
    ///
    /// Validates the folder, reads the applied registry from the online store, and prints one
    /// line per entity, feature view and feature service to add (+), change (~) or remove (-).
    /// Each detail of a change is marked [safe] (applied in place) or [breaking] (stored data
    /// would be misread, so the view needs a new version: `apply --new-version`).
    ///
    /// Exit codes: 0 no changes; 1 invalid definitions or store error; 2 bad command line;
    /// 3 safe changes to apply; 4 changes that include breaking ones.
    Plan {
        /// The folder holding the definition files.
        #[arg(long, value_name = "FOLDER")]
        dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Register the definitions in the online store and create the tables of new view versions.
    ///
    /// Prints the plan, creates or extends the tables, then publishes the new registry with a
    /// compare-and-set on its revision: of two applies racing from two processes one wins and
    /// the other fails, asking for a new plan. Applying the same folder twice changes nothing.
    /// A breaking change is refused, and nothing is changed, unless --new-version is given; the
    /// view then gets version N+1 in a new table, and version N stays readable.
    ///
    /// Exit codes: 0 applied, or nothing to apply; 1 invalid definitions, store error or a
    /// concurrent apply won; 2 bad command line; 4 breaking changes refused.
    Apply {
        /// The folder holding the definition files.
        #[arg(long, value_name = "FOLDER")]
        dir: PathBuf,
        /// Apply breaking changes to a view as a new version of it, in a new table.
        #[arg(long)]
        new_version: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the online store is.
#[derive(Debug, Args)]
struct StoreArgs {
    /// CQL contact points of the ScyllaDB cluster, comma-separated host:port.
    #[arg(
        long,
        env = "QUIVER_CQL_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:9042"
    )]
    cql_nodes: Vec<String>,
    /// The keyspace holding Quiver's tables. It must exist: its replication is yours to choose.
    #[arg(long, env = "QUIVER_KEYSPACE", default_value = "quiver")]
    keyspace: String,
    /// Consistency level of reads and writes: one, local_one, quorum or local_quorum.
    #[arg(long, env = "QUIVER_CONSISTENCY", default_value = "local_quorum", value_parser = parse_consistency)]
    consistency: Consistency,
    /// Seconds a single request to the store may take.
    #[arg(long, env = "QUIVER_CQL_TIMEOUT_SECS", default_value_t = 10)]
    cql_timeout_secs: u64,
    /// Create the keyspace if it is missing (plan does too), with one replica (SimpleStrategy). For a laptop or
    /// a test cluster only: in production, create it with the replication you need.
    #[arg(long)]
    create_keyspace: bool,
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    match text.to_ascii_lowercase().as_str() {
        "one" => Ok(Consistency::One),
        "local_one" => Ok(Consistency::LocalOne),
        "quorum" => Ok(Consistency::Quorum),
        "local_quorum" => Ok(Consistency::LocalQuorum),
        _ => Err(format!(
            "`{text}` is not a consistency level; use one, local_one, quorum or local_quorum"
        )),
    }
}

impl StoreArgs {
    async fn connect(&self) -> anyhow::Result<ScyllaStore> {
        let config = ScyllaConfig {
            nodes: self.cql_nodes.clone(),
            keyspace: self.keyspace.clone(),
            consistency: self.consistency,
            request_timeout: Duration::from_secs(self.cql_timeout_secs),
            create_keyspace: self.create_keyspace,
        };
        ScyllaStore::connect(&config)
            .await
            .context("cannot open the online store")
    }
}

const EXIT_CHANGES: u8 = 3;
const EXIT_BREAKING: u8 = 4;

#[allow(clippy::print_stderr, reason = "the binary reports its errors")]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the definitions, or prints their errors and gives `None`.
#[allow(clippy::print_stderr, reason = "the binary reports definition errors")]
fn load(dir: &std::path::Path) -> Option<Definitions> {
    quiver_definitions::load_dir(dir)
        .map_err(|errors| eprintln!("{errors}"))
        .ok()
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary's output"
)]
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { dir } => {
            let Some(definitions) = load(&dir) else {
                return Ok(ExitCode::FAILURE);
            };
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { dir, store } => {
            let Some(definitions) = load(&dir) else {
                return Ok(ExitCode::FAILURE);
            };
            let store = store.connect().await?;
            let (_, plan) = quiver_core::apply::plan(&store, &definitions)
                .await
                .context("cannot read the registry")?;
            print!("{plan}");
            Ok(if plan.is_empty() {
                ExitCode::SUCCESS
            } else if plan.breaking_views().is_empty() {
                ExitCode::from(EXIT_CHANGES)
            } else {
                ExitCode::from(EXIT_BREAKING)
            })
        }
        Command::Apply {
            dir,
            new_version,
            store,
        } => {
            let Some(definitions) = load(&dir) else {
                return Ok(ExitCode::FAILURE);
            };
            let store = store.connect().await?;
            match quiver_core::apply::apply(&store, &definitions, new_version).await {
                Ok(applied) if applied.plan.is_empty() => {
                    print!("{}", applied.plan);
                    Ok(ExitCode::SUCCESS)
                }
                Ok(applied) => {
                    print!("{}", applied.plan);
                    println!(
                        "Applied: the registry is at revision {}.",
                        applied.registry.revision
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(refused @ ApplyError::Refused(_)) => {
                    eprintln!("error: {refused}");
                    Ok(ExitCode::from(EXIT_BREAKING))
                }
                Err(error) => Err(error.into()),
            }
        }
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

    #[test]
    fn consistency_levels_parse_and_a_bad_one_is_named() {
        assert_eq!(
            parse_consistency("LOCAL_QUORUM"),
            Ok(Consistency::LocalQuorum)
        );
        assert_eq!(parse_consistency("one"), Ok(Consistency::One));
        let error = parse_consistency("all-of-them").unwrap_err();
        assert!(error.contains("all-of-them"), "{error}");
    }
}
