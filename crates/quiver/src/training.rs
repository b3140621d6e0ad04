//! `quiver historical`: point-in-time correct training data from the offline log, with a
//! spinner while it works and a summary of what it wrote.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use quiver_core::read::{plan_features, plan_service};
use quiver_offline::{EntityRows, OfflineLog, retrieve, write_parquet};

#[derive(Debug, Args)]
pub(crate) struct HistoricalArgs {
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

#[allow(clippy::print_stdout, reason = "the summary is the command's output")]
pub(crate) async fn historical(args: HistoricalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let log = OfflineLog::open(&args.offline_log).context("--offline-log")?;
    let registry = log.registry().await?.with_context(|| {
        format!(
            "the offline log in {} holds no events yet; ingest with --offline-log first",
            args.offline_log
        )
    })?;
    let plan = match &args.service {
        Some(service) => plan_service(&registry, service)?,
        None => plan_features(&registry, args.features.clone())?,
    };
    let rows = EntityRows::read(&args.entities, &args.timestamp_column)?;
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "computing {} features for {} rows",
        plan.columns.len(),
        rows.len()
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let retrieval = retrieve(&log, &plan, &rows).await;
    spinner.finish_and_clear();
    let retrieval = retrieval?;
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
