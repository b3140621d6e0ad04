//! `quiver historical`, `backfill` and `consistency`: training data, filled windows and checks
//! from the offline log, each with a spinner while it works and a summary of what it did.

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use quiver_core::definition::Registry;
use quiver_core::name::Name;
use quiver_core::read::{ReadPlan, plan_features, plan_service};
use quiver_offline::{EntityRows, OfflineLog, retrieve, write_parquet};

use crate::store::Store;

/// The offline log a command reads.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// The offline log that `quiver ingest --offline-log` (and the quickstart, in
    /// quiver-data/offline-log) writes: a local folder or file:// URL.
    #[arg(
        long,
        env = "QUIVER_OFFLINE_LOG",
        value_name = "LOCATION",
        default_value = "quiver-data/offline-log"
    )]
    offline_log: String,
}

impl LogArgs {
    fn open(&self) -> anyhow::Result<OfflineLog> {
        OfflineLog::open(&self.offline_log).context("--offline-log")
    }
}

/// The features a command computes: a service's, or references.
#[derive(Debug, Args)]
pub(crate) struct FeatureArgs {
    /// A feature service whose features to compute.
    #[arg(
        long,
        conflicts_with = "features",
        required_unless_present = "features"
    )]
    service: Option<String>,
    /// A `view:feature` (or `view@2:feature`) reference to compute; repeat for more.
    #[arg(long = "feature", value_name = "VIEW:FEATURE")]
    features: Vec<String>,
}

impl FeatureArgs {
    fn plan<'r>(&self, registry: &'r Registry) -> anyhow::Result<ReadPlan<'r>> {
        Ok(match &self.service {
            Some(service) => plan_service(registry, service)?,
            None => plan_features(registry, self.features.clone())?,
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct HistoricalArgs {
    #[command(flatten)]
    features: FeatureArgs,
    /// The rows to answer, a .parquet or .csv file: one column per entity key (named as the
    /// entity's key, such as user_id) and a timestamp column.
    #[arg(long, value_name = "ROWS")]
    entities: PathBuf,
    /// The column of --entities holding each row's instant: a timestamp in Parquet, RFC 3339
    /// text (2026-12-01T09:30:00Z) in CSV.
    #[arg(long, default_value = "timestamp")]
    timestamp_column: String,
    /// Where to write the training data, as Parquet; replaced if it exists.
    #[arg(long, value_name = "OUT")]
    out: PathBuf,
    #[command(flatten)]
    log: LogArgs,
}

#[allow(clippy::print_stdout, reason = "the summary is the command's output")]
pub(crate) async fn historical(args: HistoricalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let log = args.log.open()?;
    let registry = log.registry().await?.with_context(|| {
        format!(
            "the offline log in {} holds no events yet; ingest with --offline-log first",
            args.log.offline_log
        )
    })?;
    let plan = args.features.plan(&registry)?;
    let rows = EntityRows::read(&args.entities, &args.timestamp_column)?;
    let message = format!(
        "computing {} features for {} rows",
        plan.columns.len(),
        rows.len()
    );
    let retrieval = with_spinner(message, retrieve(&log, &plan, &rows)).await?;
    write_parquet(&args.out, &retrieval.batch)?;
    println!(
        "{}: {} rows × {} features, from {} logged events, in {:.1} s",
        args.out.display(),
        rows.len(),
        plan.columns.len(),
        retrieval.events_read,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// The feature view whose aggregates to backfill (its latest version).
    #[arg(long)]
    view: String,
    /// An aggregate feature of the view to backfill; repeat for more. All of them when not
    /// given.
    #[arg(long = "feature", value_name = "FEATURE")]
    features: Vec<String>,
    #[command(flatten)]
    log: LogArgs,
}

#[allow(clippy::print_stdout, reason = "the summary is the command's output")]
pub(crate) async fn backfill(args: BackfillArgs, store: &Store) -> anyhow::Result<()> {
    let started = Instant::now();
    let log = args.log.open()?;
    let registry = applied_registry(store).await?;
    let name: Name = parse_name("--view", &args.view)?;
    let view = registry
        .latest_view(&name)
        .with_context(|| format!("feature view `{name}` is not in the registry"))?;
    let entity = registry
        .entity(&view.view.entity)
        .with_context(|| format!("feature view `{name}` names a missing entity"))?;
    let features = args
        .features
        .iter()
        .map(|feature| parse_name("--feature", feature))
        .collect::<anyhow::Result<Vec<Name>>>()?;
    let backfilled = quiver_offline::backfill(&log, store, entity, view, &features, now_micros());
    let summary = with_spinner(format!("backfilling {name}"), backfilled).await?;
    println!(
        "{name}: {} logged events of {} entities counted, {} tiles written, {} duplicates \
         skipped, in {:.1} s",
        summary.events,
        summary.entities,
        summary.tiles_written,
        summary.duplicates,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ConsistencyArgs {
    #[command(flatten)]
    features: FeatureArgs,
    /// How many entities of each view to check, spread over those the log holds.
    #[arg(long, default_value_t = 1_000)]
    sample: usize,
    #[command(flatten)]
    log: LogArgs,
}

/// Checks a sample; returns whether every feature matched everywhere.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
pub(crate) async fn consistency(args: ConsistencyArgs, store: &Store) -> anyhow::Result<bool> {
    let log = args.log.open()?;
    let registry = applied_registry(store).await?;
    let plan = args.features.plan(&registry)?;
    let checked = quiver_offline::consistency::check(&log, store, &plan, args.sample, now_micros());
    let reports = with_spinner("comparing online and offline values".into(), checked).await?;
    println!("feature  compared  matched  match rate");
    for (name, report) in &reports {
        println!(
            "{name}  {}  {}  {:.2}%",
            report.compared,
            report.matched,
            100.0 * report.match_rate()
        );
        for (entity, online, offline) in &report.mismatches {
            println!("  mismatch at {entity}: online {online:?}, offline {offline:?}");
        }
    }
    Ok(reports
        .iter()
        .all(|(_, report)| report.matched == report.compared))
}

/// Runs `work` with a spinner saying `message` on stderr (drawn when it is a terminal).
async fn with_spinner<T>(message: String, work: impl Future<Output = T>) -> T {
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let done = work.await;
    spinner.finish_and_clear();
    done
}

async fn applied_registry(store: &Store) -> anyhow::Result<Registry> {
    quiver_core::store::OnlineStore::load_registry(store)
        .await
        .context("cannot read the registry")?
        .context("nothing is applied yet; run `quiver apply` first")
}

fn parse_name(flag: &str, text: &str) -> anyhow::Result<Name> {
    text.parse()
        .map_err(|error| anyhow::anyhow!("{flag} `{text}`: {error}"))
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64)
}
