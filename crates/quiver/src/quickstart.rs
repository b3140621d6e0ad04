//! `quiver quickstart`: the examples applied, the sample events ingested and served, on the
//! embedded store, through the same code as a production deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use quiver_core::store::OnlineStore;
use quiver_embedded::EmbeddedStore;
use quiver_ingest::file::FileOptions;
use quiver_offline::OfflineLog;

use crate::serving::{GetArgs, ServeArgs};
use crate::store::{EMBEDDED_FILE, Store};
use crate::{Stopper, files, serving};

/// Written once the sample events are in the store, so that a restart serves them as stored.
const INGESTED_MARKER: &str = "quickstart-ingested";

/// The folder of the offline log in the data folder.
const OFFLINE_LOG_FOLDER: &str = "offline-log";

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// The folder with `features/` (definitions) and `events/` (sample *.avro files).
    #[arg(long, default_value = "examples")]
    examples: PathBuf,
    /// Where the embedded store keeps its file, and the offline log its Parquet files
    /// (`offline-log/`); delete it to start over.
    #[arg(long, env = "QUIVER_DATA_DIR", default_value = "quiver-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[allow(clippy::print_stdout, reason = "the quickstart talks to the newcomer")]
pub(crate) async fn run(mut args: QuickstartArgs) -> anyhow::Result<()> {
    let features = args.examples.join("features");
    let events = args.examples.join("events");
    if !features.is_dir() || !events.is_dir() {
        anyhow::bail!(
            "{} has no features/ and events/ folders; run the quickstart from the repository \
             root, or give --examples",
            args.examples.display()
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let store = Arc::new(Store::Embedded(
        EmbeddedStore::open(&args.data_dir.join(EMBEDDED_FILE))
            .context("cannot open the embedded store")?,
    ));

    let definitions =
        quiver_definitions::load_dir(&features).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let applied = quiver_core::apply::apply(&*store, &definitions, false).await?;
    println!(
        "1. Applied {}: registry revision {} in {}.",
        features.display(),
        applied.registry.revision,
        args.data_dir.display()
    );

    let marker = args.data_dir.join(INGESTED_MARKER);
    if marker.exists() {
        println!(
            "2. The sample events were ingested by an earlier run; serving what it stored \
             (delete {} to start over).",
            args.data_dir.display()
        );
    } else {
        let registry = store
            .load_registry()
            .await?
            .context("the registry was just applied")?;
        let options = FileOptions {
            topic: None,
            rebase_event_times: true,
            batch_size: 2_000,
            offline_log: Some(Arc::new(
                OfflineLog::open(&offline_log_folder(&args.data_dir))
                    .context("cannot make the offline log")?,
            )),
        };
        let summaries =
            files::ingest_files(&sample_files(&events)?, &options, &registry, &*store).await?;
        println!("2. Ingested the sample events, event times moved so the newest is now:");
        for (path, summary) in &summaries {
            println!("   {}", files::describe(path, summary));
        }
        std::fs::write(&marker, b"")
            .with_context(|| format!("cannot write {}", marker.display()))?;
    }

    let listener = serving::bind(args.serve.listen).await?;
    let listening = listener.local_addr()?;
    // Listening on every interface, it is reached on this machine through the loopback one.
    let address = if listening.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], listening.port()))
    } else {
        listening
    };
    let server = format!("http://{address}");
    println!(
        "3. Serving quiver.v1.FeatureService on {listening}, until Ctrl-C. Try:\n\
         \n   cargo run -p quiver --profile quickstart -- get --server {server} --service ranker_v1 --entity user_id=42 --entity user_id=7\
         \n   grpcurl -plaintext -d '{{\"feature_service\": \"ranker_v1\", \"entities\": {{\"user_id\": {{\"int64_values\": {{\"values\": [42]}}}}}}}}' \\\n     {address} quiver.v1.FeatureService/GetOnlineFeatures\
         \n   grpcurl -plaintext {address} list\n\nOne lookup, user 42 through the feature service ranker_v1:\n"
    );
    let stopper = Stopper::on_signal();
    let lookup = tokio::spawn(async move {
        let sample = GetArgs {
            server,
            service: Some("ranker_v1".into()),
            features: Vec::new(),
            entities: vec![("user_id".into(), "42".into())],
        };
        if let Err(error) = serving::get(sample).await {
            tracing::warn!(%error, "the sample lookup failed");
        }
    });
    // Pushed rows go to the quickstart's log too, unless told otherwise.
    args.serve
        .offline_log
        .get_or_insert_with(|| offline_log_folder(&args.data_dir));
    let served = serving::run_server(&args.serve, store, listener, stopper).await;
    lookup.abort();
    served
}

/// The quickstart's offline log, beside its store: what `quiver historical` reads.
pub(crate) fn offline_log_folder(data_dir: &Path) -> String {
    data_dir
        .join(OFFLINE_LOG_FOLDER)
        .to_string_lossy()
        .into_owned()
}

/// The `*.avro` files in `folder`, in name order.
fn sample_files(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "avro")
        })
        .collect();
    files.sort();
    Ok(files)
}
