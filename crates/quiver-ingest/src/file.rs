//! Avro object container files as a source, for backfills, producers without Kafka and the
//! quickstart: a thin driver of [`crate::pipeline`], which resolves each record to a view's
//! schema and stores it exactly as a Kafka record of that view's topic, with the same retries.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use quiver_core::definition::Registry;
use quiver_core::store::FeatureStore;

use crate::pipeline::{
    Inputs, Outputs, Payload, Record, Rules, Sink, SourceRecord, decode, now_micros, store_batch,
};
use crate::route::{DeadLetterReason, Framing, Route, routes};
use crate::tiles::Watermarks;
use crate::{IngestError, IngestMetrics, IngestSummary};
use quiver_offline::OfflineLog;

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
    /// Most records per batch, and so rows per store write of each view.
    pub batch_size: usize,
    /// Where every accepted event is also logged for training data; `None` logs nothing.
    pub offline_log: Option<Arc<OfflineLog>>,
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
) -> Result<Vec<Arc<Route>>, IngestError> {
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

/// One record of a file: its number (from 0) is its offset.
#[derive(Debug, Clone)]
struct FileRecord {
    number: u64,
    datum: Avro,
    writer: Arc<Schema>,
    /// `file:<name>`: the topic the file's routes are found under, and the source of its tiles.
    source: Arc<str>,
}

impl SourceRecord for FileRecord {
    fn record(&self) -> Record<'_> {
        Record {
            topic: &self.source,
            partition: 0,
            offset: self.number as i64,
            source: Cow::Borrowed(&self.source),
            payload: Payload::Decoded {
                writer: &self.writer,
                datum: &self.datum,
            },
        }
    }
}

/// The records a file's views could not use: counted by the pipeline, the first few described.
#[derive(Debug, Default)]
struct Rejections(Mutex<Vec<(u64, &'static str, String)>>);

impl Sink<FileRecord> for Rejections {
    async fn dead_letter(
        &self,
        record: &FileRecord,
        _view: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), IngestError> {
        let mut described = self.0.lock().expect("not poisoned");
        if described.len() < REJECTIONS_DESCRIBED {
            described.push((record.number, reason.reason, reason.detail.clone()));
        }
        Ok(())
    }

    /// Files carry no deletion commands.
    async fn deleted(&self, _entity: &str, _key: &str, _command: &[u8]) -> Result<(), IngestError> {
        Ok(())
    }
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
    quiver_avro::decode::limit_decoded_lengths();
    let open = || std::fs::File::open(path).map_err(|error| file_error(path, error));
    let not_a_container =
        |error| file_error(path, format!("not an Avro object container file: {error}"));
    let counting = Counting {
        inner: std::io::BufReader::new(open()?),
        read: 0,
        progress,
    };
    let reader = apache_avro::Reader::new(counting).map_err(not_a_container)?;
    let writer = Arc::new(reader.writer_schema().clone());
    let routes = file_routes(path, registry, options.topic.as_deref(), &writer)?;
    let shift = if options.rebase_event_times {
        let first_pass =
            apache_avro::Reader::new(std::io::BufReader::new(open()?)).map_err(not_a_container)?;
        // In whole milliseconds, so events that shared a millisecond still do.
        newest_event_time(path, &routes, first_pass)?.map_or(0, |newest| {
            (now_micros() - newest).div_euclid(1_000) * 1_000
        })
    } else {
        0
    };
    let source: Arc<str> = Arc::from(format!(
        "file:{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let metrics = IngestMetrics::register(&mut Default::default());
    let rejections = Rejections::default();
    let outputs =
        Outputs::new(store, &rejections, &metrics).with_log(options.offline_log.as_deref());
    let mut batches = Batches {
        inputs: Inputs::only(Arc::new(registry.clone()), &source, routes),
        rules: Rules {
            framing: &Framing::Plain,
            stop_on_invalid: false,
            event_time_shift_micros: shift,
            keep_events: options.offline_log.is_some(),
        },
        watermarks: Watermarks::default(),
        turn: 0,
        stored: IngestSummary::default(),
    };
    let mut batch = Vec::new();
    for (number, datum) in reader.enumerate() {
        let number = number as u64;
        let datum = match datum {
            Ok(datum) => datum,
            Err(error) => {
                // What came before the damage is kept, as the message says.
                batches.store(batch, &outputs).await?;
                return Err(file_error(
                    path,
                    format!(
                        "record {number} cannot be decoded ({error}); the {number} records \
                         before it were ingested"
                    ),
                ));
            }
        };
        batch.push(FileRecord {
            number,
            datum,
            writer: writer.clone(),
            source: source.clone(),
        });
        if batch.len() >= options.batch_size.max(1) {
            batches.store(std::mem::take(&mut batch), &outputs).await?;
        }
    }
    batches.store(batch, &outputs).await?;
    let IngestSummary {
        records,
        rows_written,
        dead_lettered,
        ..
    } = batches.stored;
    Ok(FileSummary {
        records,
        rows_written,
        rejected: dead_lettered,
        first_rejections: rejections.0.into_inner().expect("not poisoned"),
    })
}

/// A file's batches so far, each decoded and stored before the next.
struct Batches<'a> {
    inputs: Inputs,
    rules: Rules<'a>,
    watermarks: Watermarks,
    turn: u64,
    stored: IngestSummary,
}

impl Batches<'_> {
    /// Decodes and stores one batch of records; durable when this returns.
    async fn store<S: FeatureStore>(
        &mut self,
        batch: Vec<FileRecord>,
        outputs: &Outputs<'_, S, Rejections>,
    ) -> Result<(), IngestError> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = batch.len() as u64;
        let decoded = decode(
            batch,
            self.turn,
            &self.inputs,
            &mut self.watermarks,
            &self.rules,
            outputs.metrics,
        )?;
        self.turn += 1;
        let mut stored = store_batch(&decoded, outputs).await?;
        stored.records = records;
        self.stored.add(stored);
        Ok(())
    }
}

/// The newest event time of the records any route accepts.
fn newest_event_time<R: Read>(
    path: &Path,
    routes: &[Arc<Route>],
    reader: apache_avro::Reader<'_, R>,
) -> Result<Option<i64>, IngestError> {
    let writer = reader.writer_schema().clone();
    let now = now_micros();
    let mut newest = None;
    for datum in reader {
        let datum = datum.map_err(|error| file_error(path, error))?;
        let payload = Payload::Decoded {
            writer: &writer,
            datum: &datum,
        };
        for route in routes {
            if let Ok(projected) = route.write_for(&Framing::Plain, payload, now, false) {
                newest = newest.max(Some(projected.write.event_time_micros));
            }
        }
    }
    Ok(newest)
}
