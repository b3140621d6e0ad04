//! Avro object container files as a source, for backfills, producers without Kafka and the
//! quickstart: each record is resolved to a view's schema and projected exactly as a Kafka
//! record of that view's topic is.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use apache_avro::types::Value as Avro;
use prometheus_client::metrics::counter::Counter;
use quiver_core::definition::Registry;
use quiver_core::store::{FeatureStore, FeatureWrite};

use crate::route::{DeadLetterReason, Projected, Route, ViewBatch, routes};
use crate::tiles::{Watermarks, store_tiles};
use crate::{IngestError, now_micros};

/// How to read one file.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// The topic the file's events belong to: the views of that topic are written. `None` picks
    /// the views whose schema has the file's schema's full name.
    pub topic: Option<String>,
    /// Shift every event time by one amount so that the newest event in the file happened
    /// now: a recorded sample replays as if live, and TTLs count from today. Off for backfills;
    /// finding the newest event costs a first pass over the file.
    pub rebase_event_times: bool,
    /// Most rows per store write.
    pub batch_size: usize,
}

/// What one file gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileSummary {
    pub records: u64,
    pub rows_written: u64,
    /// Records (times views) that could not be used, by reason, as the Kafka path would
    /// dead-letter them.
    pub rejected: BTreeMap<&'static str, u64>,
    /// The first few rejections: record number (from 0), reason and detail.
    pub first_rejections: Vec<(u64, &'static str, String)>,
}

/// How many rejections a summary describes one by one.
const REJECTIONS_DESCRIBED: usize = 5;

/// Counts the bytes read through it, for a progress bar.
struct Counting<'p, R> {
    inner: R,
    read: u64,
    progress: &'p (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.read += count as u64;
        (self.progress)(self.read);
        Ok(count)
    }
}

fn file_error(path: &Path, detail: impl std::fmt::Display) -> IngestError {
    IngestError::File(format!("{}: {detail}", path.display()))
}

/// The views `path`'s records feed, chosen by `topic` or by the schema's full name.
fn file_routes(
    path: &Path,
    registry: &Registry,
    topic: Option<&str>,
    writer: &apache_avro::Schema,
) -> Result<Vec<std::sync::Arc<Route>>, IngestError> {
    let by_topic = routes(registry, &Default::default())?;
    let chosen: Vec<_> = match topic {
        Some(topic) => by_topic.get(topic).cloned().unwrap_or_default(),
        None => by_topic
            .into_values()
            .flatten()
            .filter(|route| route.decoder.reader().name() == writer.name())
            .collect(),
    };
    if chosen.is_empty() {
        let views: Vec<String> = registry
            .latest_views()
            .iter()
            .map(|view| format!("{} (topic {})", view.view.name, view.view.source.topic))
            .collect();
        let wanted = match (topic, writer.name()) {
            (Some(topic), _) => format!("topic `{topic}`"),
            (None, Some(name)) => format!("events of schema `{}`", name.fullname(None)),
            (None, None) => "events of an unnamed schema".to_owned(),
        };
        return Err(file_error(
            path,
            format!(
                "no applied feature view reads {wanted}; the views are: {}",
                views.join(", ")
            ),
        ));
    }
    Ok(chosen)
}

/// Reads every record of the Avro object container file at `path` into the views it feeds.
/// `progress` is told how many bytes of the file have been read so far.
pub async fn ingest_file(
    path: &Path,
    options: &FileOptions,
    registry: &Registry,
    store: &impl FeatureStore,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FileSummary, IngestError> {
    let open = || std::fs::File::open(path).map_err(|error| file_error(path, error));
    let not_a_container =
        |error| file_error(path, format!("not an Avro object container file: {error}"));
    let counting = Counting {
        inner: std::io::BufReader::new(open()?),
        read: 0,
        progress,
    };
    let reader = apache_avro::Reader::new(counting).map_err(not_a_container)?;
    let writer = reader.writer_schema().clone();
    let routes = file_routes(path, registry, options.topic.as_deref(), &writer)?;
    let shift = if options.rebase_event_times {
        let first_pass =
            apache_avro::Reader::new(std::io::BufReader::new(open()?)).map_err(not_a_container)?;
        newest_event_time(path, &routes, first_pass)?.map_or(0, |newest| now_micros() - newest)
    } else {
        0
    };
    let mut summary = FileSummary::default();
    let mut pending: Vec<ViewBatch> = routes.iter().cloned().map(ViewBatch::new).collect();
    let source = format!(
        "file:{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut watermarks = Watermarks::default();
    for (number, record) in reader.enumerate() {
        let number = number as u64;
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                // What came before the damage is kept, as the message says.
                for batch in &mut pending {
                    flush(store, batch).await?;
                }
                return Err(file_error(
                    path,
                    format!(
                        "record {number} cannot be decoded ({error}); the {number} records \
                         before it were ingested"
                    ),
                ));
            }
        };
        summary.records += 1;
        let now = now_micros();
        for batch in &mut pending {
            let route = &batch.route;
            let projected =
                project_record(route, &writer, &record, now).and_then(|mut projected| {
                    projected.write.event_time_micros += shift;
                    watermarks.admit(route, &source, projected.write.event_time_micros)?;
                    Ok(projected)
                });
            match projected {
                Ok(projected) => {
                    batch.push(projected, &source, number as i64);
                    if batch.writes.len() >= options.batch_size.max(1) {
                        summary.rows_written += flush(store, batch).await?;
                    }
                }
                Err(rejection) => {
                    *summary.rejected.entry(rejection.reason).or_default() += 1;
                    if summary.first_rejections.len() < REJECTIONS_DESCRIBED {
                        summary
                            .first_rejections
                            .push((number, rejection.reason, rejection.detail));
                    }
                }
            }
        }
    }
    for batch in &mut pending {
        summary.rows_written += flush(store, batch).await?;
    }
    Ok(summary)
}

/// Writes the rows and tiles a file has given one view so far and empties `batch`; returns the
/// rows written.
async fn flush(store: &impl FeatureStore, batch: &mut ViewBatch) -> Result<u64, IngestError> {
    let rows = write_rows(store, &batch.route, std::mem::take(&mut batch.writes)).await?;
    store_tiles(store, batch, &Counter::default()).await?;
    batch.contributions.clear();
    Ok(rows)
}

/// Resolves `record` from the file's schema to the route's, then projects it as the Kafka path
/// does.
fn project_record(
    route: &Route,
    writer: &apache_avro::Schema,
    record: &Avro,
    now_micros: i64,
) -> Result<Projected, DeadLetterReason> {
    let reader = route.decoder.reader();
    let resolved;
    let event = if writer == reader {
        record
    } else {
        resolved = record
            .clone()
            .resolve(reader)
            .map_err(|error| DeadLetterReason {
                reason: "undecodable",
                detail: format!("does not resolve to the view's schema: {error}"),
            })?;
        &resolved
    };
    route.project(event, now_micros)
}

/// The newest event time of the records any route accepts.
fn newest_event_time<R: Read>(
    path: &Path,
    routes: &[std::sync::Arc<Route>],
    reader: apache_avro::Reader<'_, R>,
) -> Result<Option<i64>, IngestError> {
    let writer = reader.writer_schema().clone();
    let now = now_micros();
    let mut newest = None;
    for record in reader {
        let record = record.map_err(|error| file_error(path, error))?;
        for route in routes {
            if let Ok(projected) = project_record(route, &writer, &record, now) {
                newest = newest.max(Some(projected.write.event_time_micros));
            }
        }
    }
    Ok(newest)
}

async fn write_rows(
    store: &impl FeatureStore,
    route: &Route,
    writes: Vec<FeatureWrite>,
) -> Result<u64, IngestError> {
    if writes.is_empty() {
        return Ok(0);
    }
    store
        .write_features(&route.entity, &route.view, &writes)
        .await
        .map_err(IngestError::Store)?;
    Ok(writes.len() as u64)
}
