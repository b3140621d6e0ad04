//! `quiver ingest --from-file`: Avro object container files into the online store, with a
//! progress bar per file and a summary of what was written and what was not.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use quiver_core::definition::Registry;
use quiver_core::store::FeatureStore;
use quiver_ingest::file::{FileOptions, FileSummary, ingest_file};

/// Ingests each file in turn; the progress bars draw on stderr when it is a terminal.
pub(crate) async fn ingest_files(
    paths: &[PathBuf],
    options: &FileOptions,
    registry: &Registry,
    store: &impl FeatureStore,
) -> anyhow::Result<Vec<(PathBuf, FileSummary)>> {
    let mut summaries = Vec::with_capacity(paths.len());
    for path in paths {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let bar = ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(
            path.file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
        );
        let summary = ingest_file(path, options, registry, store, &|read| {
            bar.set_position(read)
        })
        .await?;
        bar.finish_and_clear();
        summaries.push((path.clone(), summary));
    }
    Ok(summaries)
}

/// The summary lines of one file: records, rows written, and rows not written with why.
pub(crate) fn describe(path: &std::path::Path, summary: &FileSummary) -> String {
    let mut text = format!(
        "{}: {} records, {} rows written",
        path.display(),
        summary.records,
        summary.rows_written
    );
    if summary.rejected.is_empty() {
        text.push_str(", none rejected");
    } else {
        let reasons: Vec<String> = summary
            .rejected
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        text.push_str(&format!(", rejected: {}", reasons.join(", ")));
        for (record, reason, detail) in &summary.first_rejections {
            text.push_str(&format!("\n  record {record}: {reason}: {detail}"));
        }
    }
    text
}
