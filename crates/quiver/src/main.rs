//! The `quiver` command line: one binary whose subcommands run each part of the feature store.

mod files;
mod kafka;
mod quickstart;
mod serving;
mod store;
mod training;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use quiver_core::apply::ApplyError;
use quiver_core::definition::Definitions;
use store::StoreArgs;

/// glibc's allocator spent about a third of the serving benchmark's CPU on its own bookkeeping and
/// arena locks; mimalloc more than doubled cache-hit throughput (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quiver, a real-time feature store for recommender systems.
///
/// ML engineers declare features as YAML files; Quiver ingests Avro events from Kafka (or Avro
/// files) into ScyllaDB or an embedded local store, ordered by event time, and serves the latest
/// values over gRPC in a few milliseconds.
#[derive(Debug, Parser)]
#[command(
    name = "quiver",
    version,
    about,
    long_about,
    after_help = "New here? Run `quiver quickstart` from the repository root. The online store \
                  is a local file by default (--store embedded); --store scylla uses a ScyllaDB \
                  cluster. Logs go to stderr (--log-format json for a log pipeline); set RUST_LOG \
                  (such as RUST_LOG=debug) to change how much."
)]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with the structured fields) for a log pipeline.
    #[arg(
        long,
        global = true,
        env = "QUIVER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Quiver end to end on this machine, with no Kafka and no ScyllaDB: start here.
    ///
    /// Creates --data-dir with an embedded online store, applies the example definitions in
    /// <EXAMPLES>/features, ingests the sample Avro files in <EXAMPLES>/events (once: a restart
    /// serves what the last run stored), then serves them over gRPC, prints the commands to try
    /// with one lookup's result, and serves until Ctrl-C.
    Quickstart(Box<quickstart::QuickstartArgs>),
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
    /// Consume Avro events from Kafka into the online store, until SIGTERM or Ctrl-C; or, with
    /// --from-file, read Avro object container files and stop.
    ///
    /// Reads the applied registry, subscribes to the topic of every feature view in one consumer
    /// group, and for each batch: decodes each record (resolving its writer schema against the
    /// view's schema), writes the feature values with their event time as the write timestamp,
    /// sends unusable records to the dead-letter topic, and commits offsets only after all of
    /// that is durable. While the store is unavailable it retries with backoff and reads nothing
    /// new. On SIGTERM it finishes the batches in hand, commits and leaves the group. Newly
    /// applied views are picked up within --registry-refresh-secs, without a restart.
    ///
    /// With --from-file, each file's records go through the same decoding (resolved to the
    /// view's schema) and mapping as Kafka records of the views that read that schema (or
    /// --topic); a progress bar shows each file, and a summary gives the rows written and the
    /// records rejected, by reason. Nothing is dead-lettered to Kafka.
    ///
    /// Exit codes: 0 stopped by a signal, or all files read; 1 error (including an unusable
    /// record with --stop-on-invalid); 2 bad command line.
    Ingest {
        #[command(flatten)]
        kafka: Box<IngestArgs>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Serve feature values over gRPC (quiver.v1.FeatureService), until SIGTERM or Ctrl-C.
    ///
    /// Answers GetOnlineFeatures for a feature service or `view:feature` references and a batch
    /// of entity keys, from an in-process cache backed by the online store, and WriteFeatures
    /// to push rows of a view (checked whole before anything is written); also the gRPC health
    /// checking protocol and server reflection (grpcurl needs no proto files), and Prometheus
    /// metrics. Limits: --max-entities and --max-request-bytes (INVALID_ARGUMENT),
    /// --max-in-flight (RESOURCE_EXHAUSTED), the client's deadline or --call-timeout-ms
    /// (DEADLINE_EXCEEDED) and, if set, --read-timeout-ms per store read (UNAVAILABLE). Replies
    /// carry a Value per row, or one typed array per column where the request asks for
    /// VALUE_FORMAT_TYPED. Newly applied views are served within
    /// --registry-refresh-secs, without a restart.
    Serve {
        #[command(flatten)]
        serve: Box<serving::ServeArgs>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Ask a running server for features and print them, one line per entity and feature, with
    /// each value's status and age.
    ///
    /// Example: quiver get --service ranker_v1 --entity user_id=42 --entity user_id=7
    Get(serving::GetArgs),
    /// Ask a running server whether it is serving, by the gRPC health checking protocol: for
    /// scripts, container probes and `helm test`.
    ///
    /// Exit codes: 0 serving; 1 not serving, unreachable, or no answer within --timeout-secs.
    Health(serving::HealthArgs),
    /// Build point-in-time correct training data from the offline log.
    ///
    /// For each row of --entities (the entity's key columns and a timestamp), computes every
    /// requested feature as serving would have answered it at that timestamp: a stored feature
    /// is the newest value at or before it, within the view's TTL (of one millisecond's events,
    /// the one with the greater event id or offset, as online); an aggregate is its window at
    /// that instant, folded and evaluated by the code serving uses. The views come from the log
    /// itself, as the ingester last recorded them, so no online store is needed.
    ///
    /// OUT is Parquet: the columns of --entities, then per feature `VIEW:FEATURE` (its declared
    /// type), `VIEW:FEATURE__event_time` and `VIEW:FEATURE__status` (ok or not_found).
    ///
    /// Example: quiver historical --service ranker_v1 --entities rows.csv --out training.parquet
    ///
    /// Exit codes: 0 written; 1 an unreadable log or rows file, a missing column, or an unknown
    /// feature or service; 2 bad command line.
    Historical(training::HistoricalArgs),
    /// Compute the tiles of aggregates from the offline log and write them to the online store,
    /// so that a window added to a running view is complete on the day it is applied.
    ///
    /// Each log file records the aggregates its events were counted into when ingested; an
    /// event is counted here only into the aggregates its file does not list, under tiles of
    /// their own (source `backfill:<partition>`), which the live ingester never overwrites. An
    /// event id counted live counts no more, so nothing is counted twice where the backfill and
    /// the stream meet. Running it again changes nothing. Apply the new feature first, and let
    /// the ingester run with it: events it logs from then on are counted live.
    ///
    /// Example: quiver backfill --view user_activity --feature passes_7d
    ///
    /// Exit codes: 0 done; 1 an unknown view or feature, an unreadable log or a store error; 2
    /// bad command line.
    Backfill {
        #[command(flatten)]
        backfill: training::BackfillArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check that the online store serves what the offline log says it should.
    ///
    /// Takes up to --sample entities of each view the features read (spread over those the log
    /// holds), reads their values from the online store now, as serving does, and recomputes
    /// them from the log at the same instant, as `historical` does; then prints, per feature, how
    /// many matched, with the first mismatches. Floats match within a relative 1e-9.
    ///
    /// Example: quiver consistency --service ranker_v1 --sample 500
    ///
    /// Exit codes: 0 everything matched; 3 a mismatch was found; 1 an unreadable log, a store
    /// error, or an unknown feature or service; 2 bad command line.
    Consistency {
        #[command(flatten)]
        consistency: training::ConsistencyArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// How `ingest` reads Kafka, or files.
#[derive(Debug, Args)]
struct IngestArgs {
    /// Read this Avro object container file instead of Kafka; repeat for several files.
    #[arg(long, value_name = "FILE.avro")]
    from_file: Vec<PathBuf>,
    /// The topic the files' events belong to: the views reading it are written. By default,
    /// the views whose schema has the file's schema's full name.
    #[arg(long, requires = "from_file")]
    topic: Option<String>,
    /// Shift the event times of each file by one amount so that its newest event happened now:
    /// a recorded sample replays as if live and TTLs count from today. Not for backfills.
    #[arg(long, requires = "from_file")]
    rebase_event_times: bool,
    #[command(flatten)]
    connection: kafka::KafkaArgs,
    /// Consumer group id. Ingesters sharing it split the partitions, so run at most as many as
    /// the topics have partitions.
    #[arg(long, env = "QUIVER_GROUP_ID", default_value = "quiver-ingest")]
    group_id: String,
    /// Record values are Confluent-framed Avro whose writer schema ids are given by --schema-id
    /// (`confluent`), or bare Avro datums written with each view's own schema (`plain`).
    #[arg(long, value_enum, default_value = "confluent")]
    wire_format: WireFormatArg,
    /// A Confluent-compatible Schema Registry (http://host:port): writer schemas of ids not
    /// given by --schema-id are fetched from it, and views that name a `subject` read its
    /// latest schema.
    #[arg(long, env = "QUIVER_SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    /// A writer schema for the Confluent format: `ID=PATH.avsc`, such as the files in
    /// schemas/. Repeat for each schema id producers use; a record with an id neither given here
    /// nor in the schema registry is dead-lettered as unknown_schema_id.
    #[arg(long = "schema-id", value_name = "ID=PATH", value_parser = parse_schema_id)]
    schema_ids: Vec<(u32, PathBuf)>,
    /// Topic for records that cannot be used (undecodable, unknown schema id, missing key,
    /// wrong type, missing or absurd event time), with headers naming the reason and source.
    #[arg(
        long,
        env = "QUIVER_DEAD_LETTER_TOPIC",
        default_value = "quiver-dead-letters"
    )]
    dead_letter_topic: String,
    /// Stop at the first unusable record instead of dead-lettering it; it is not committed, so it
    /// is read again after a fix.
    #[arg(long, conflicts_with = "dead_letter_topic")]
    stop_on_invalid: bool,
    /// A topic of upsert commands (schemas/feature_upsert.avsc: feature_view, keys, values,
    /// event_time) for features computed elsewhere, such as by Flink or a batch job. With the
    /// Confluent format, give its writer schema with --schema-id too.
    #[arg(long, env = "QUIVER_UPSERT_TOPIC")]
    upsert_topic: Option<String>,
    /// A topic of deletion commands (schemas/entity_deleted.avsc: entity, keys, event_time),
    /// such as deleted user accounts: the entity's values older than the command are removed
    /// from every view. With the Confluent format, give its writer schema with --schema-id too.
    #[arg(long, env = "QUIVER_DELETION_TOPIC")]
    deletion_topic: Option<String>,
    /// Where each done deletion is announced, as a bare Avro datum of
    /// schemas/entity_deleted.avsc keyed by the entity key, so serving nodes drop it from
    /// their caches.
    #[arg(long, env = "QUIVER_INVALIDATION_TOPIC", requires = "deletion_topic")]
    invalidation_topic: Option<String>,
    /// Address of the Prometheus endpoint, served at /metrics.
    #[arg(long, env = "QUIVER_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    metrics_addr: std::net::SocketAddr,
    /// Seconds between reloads of the registry: a `quiver apply` reaches a running ingester
    /// within this, and views with new topics are subscribed to.
    #[arg(long, default_value_t = 5)]
    registry_refresh_secs: u64,
    /// Most records per batch; each batch is written, then its offsets are committed.
    #[arg(long, default_value_t = 2_000)]
    batch_size: usize,
    /// Milliseconds to wait for a batch to fill.
    #[arg(long, default_value_t = 20)]
    batch_linger_ms: u64,
    /// Also write every accepted event to this offline log, for training data (`quiver
    /// historical`): a local folder or file:// URL, holding Hive-partitioned Parquet
    /// (view=NAME/version=N/date=YYYY-MM-DD). A batch's offsets are committed only once its
    /// log files are written. Not written when not given.
    #[arg(long, env = "QUIVER_OFFLINE_LOG", value_name = "LOCATION")]
    offline_log: Option<String>,
}

impl IngestArgs {
    /// The offline log the flags name, if any.
    fn offline_log(&self) -> anyhow::Result<Option<std::sync::Arc<quiver_offline::OfflineLog>>> {
        self.offline_log
            .as_deref()
            .map(|location| {
                quiver_offline::OfflineLog::open(location)
                    .map(std::sync::Arc::new)
                    .context("--offline-log")
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WireFormatArg {
    Confluent,
    Plain,
}

fn parse_schema_id(text: &str) -> Result<(u32, PathBuf), String> {
    let (id, path) = text.split_once('=').ok_or_else(|| {
        format!("`{text}` must look like ID=PATH, such as 7=schemas/match_event.avsc")
    })?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("`{id}` in `{text}` is not a schema id (a whole number)"))?;
    Ok((id, PathBuf::from(path.trim())))
}

const EXIT_CHANGES: u8 = 3;
const EXIT_BREAKING: u8 = 4;
/// `consistency` found online values that differ from the offline log's.
const EXIT_MISMATCHES: u8 = 3;

#[allow(clippy::print_stderr, reason = "the binary reports its errors")]
fn main() -> ExitCode {
    // Before anything is decoded, since only the first bound set in a process holds.
    quiver_avro::decode::limit_decoded_lengths();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; none in a file or a log pipeline.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
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
        Command::Ingest { kafka, store } if !kafka.from_file.is_empty() => {
            let store = store.connect().await?;
            let registry = quiver_core::store::OnlineStore::load_registry(&store)
                .await
                .context("cannot read the registry")?
                .context("nothing is applied yet; run `quiver apply` first")?;
            let options = quiver_ingest::file::FileOptions {
                topic: kafka.topic.clone(),
                rebase_event_times: kafka.rebase_event_times,
                batch_size: kafka.batch_size.max(1),
                offline_log: kafka.offline_log()?,
            };
            let summaries =
                files::ingest_files(&kafka.from_file, &options, &registry, &store).await?;
            for (path, summary) in &summaries {
                println!("{}", files::describe(path, summary));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { kafka, store } => {
            let mut writer_schemas = std::collections::HashMap::new();
            for (id, path) in &kafka.schema_ids {
                let schema = quiver_avro::schema_file::read_schema_file(path)?;
                writer_schemas.insert(*id, schema);
            }
            let config = quiver_ingest::IngestConfig {
                kafka: kafka.connection.connection()?,
                group_id: kafka.group_id.clone(),
                wire_format: match kafka.wire_format {
                    WireFormatArg::Confluent => quiver_ingest::WireFormat::Confluent {
                        writer_schemas,
                        schema_registry: kafka
                            .schema_registry_url
                            .as_deref()
                            .map(quiver_ingest::SchemaRegistry::new)
                            .transpose()?,
                    },
                    WireFormatArg::Plain => quiver_ingest::WireFormat::Plain,
                },
                on_invalid: if kafka.stop_on_invalid {
                    quiver_ingest::OnInvalid::Stop
                } else {
                    quiver_ingest::OnInvalid::DeadLetter {
                        topic: kafka.dead_letter_topic.clone(),
                    }
                },
                upsert_topic: kafka.upsert_topic.clone(),
                deletion_topic: kafka.deletion_topic.clone(),
                invalidation_topic: kafka.invalidation_topic.clone(),
                batch_size: kafka.batch_size.max(1),
                batch_linger: Duration::from_millis(kafka.batch_linger_ms),
                offline_log: kafka.offline_log()?,
            };
            let store = std::sync::Arc::new(store.connect().await?);
            let watcher = quiver_registry::RegistryWatcher::start(
                store.clone(),
                Duration::from_secs(kafka.registry_refresh_secs.max(1)),
            )
            .await
            .context("cannot read the registry")?;
            let mut metrics_registry = prometheus_client::registry::Registry::default();
            let metrics = quiver_ingest::IngestMetrics::register(&mut metrics_registry);
            let stopper = Stopper::on_signal();
            let metrics_server = stopper
                .serve_metrics(kafka.metrics_addr, metrics_registry)
                .await?;
            let summary = quiver_ingest::run(
                &config,
                watcher.subscribe(),
                &*store,
                &metrics,
                stopper.stopped(),
            )
            .await?;
            metrics_server.abort();
            eprintln!(
                "ingested {} records: {} rows written, {} entities deleted, dead-lettered {:?}",
                summary.records,
                summary.rows_written,
                summary.entities_deleted,
                summary.dead_lettered
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Quickstart(args) => {
            quickstart::run(*args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { serve, store } => {
            serving::serve(*serve, store).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(args) => {
            serving::get(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill { backfill, store } => {
            let store = store.connect().await?;
            training::backfill(backfill, &store).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Consistency { consistency, store } => {
            let store = store.connect().await?;
            Ok(if training::consistency(consistency, &store).await? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_MISMATCHES)
            })
        }
        Command::Historical(args) => {
            training::historical(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => Ok(if serving::health(args).await? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
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

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
/// Tells a long-running command when SIGTERM or Ctrl-C came.
#[derive(Debug, Clone)]
struct Stopper {
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl Stopper {
    fn on_signal() -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        Stopper { stopped }
    }

    /// Resolves once a signal came.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    }

    /// Serves `registry` at `address` under /metrics until a signal came.
    async fn serve_metrics(
        &self,
        address: std::net::SocketAddr,
        registry: prometheus_client::registry::Registry,
    ) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for metrics"))?;
        Ok(tokio::spawn(quiver_metrics::serve(
            listener,
            std::sync::Arc::new(registry),
            self.stopped(),
        )))
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use scylla::statement::Consistency;
    use store::parse_consistency;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn schema_ids_parse_and_a_bad_one_says_the_shape() {
        assert_eq!(
            parse_schema_id("7=schemas/match_event.avsc"),
            Ok((7, PathBuf::from("schemas/match_event.avsc")))
        );
        assert!(
            parse_schema_id("schemas/match_event.avsc")
                .unwrap_err()
                .contains("ID=PATH")
        );
        assert!(
            parse_schema_id("seven=x.avsc")
                .unwrap_err()
                .contains("not a schema id")
        );
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
