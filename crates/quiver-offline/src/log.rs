//! The offline log: an [`ObjectStore`] location holding, per view version, every event the
//! ingester accepted, as Parquet files in the [`layout`](crate::layout).
//!
//! Each call of [`OfflineLog::append`] writes one file per source and date; a file appears
//! whole or not at all (the object store's put). A replay writes the same events again, after
//! a crash or when a partition moves: the first events a process logs of a source, and any at
//! or before the last it logged there, first remove the files of that source starting at or
//! after them, which the replay rewrites. Readers also keep one event per source and offset, so
//! files that overlap without starting at the same place (two owners of a partition during a
//! rebalance) count each event once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatchReader;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use quiver_core::definition::{Entity, Registry, VersionedView};
use quiver_core::name::Name;
use quiver_core::store::FeatureWrite;

use crate::LogError;
use crate::columns::{LogColumns, LoggedEvent};
use crate::layout::{FileRange, date_of, file_path, version_prefix};

/// One file of the log, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: String,
    pub range: FileRange,
}

/// A view's log, where it is stored, and what this process logged of each source.
#[derive(Debug)]
pub struct OfflineLog {
    store: Arc<dyn ObjectStore>,
    /// Per view version folder and source, the last offset this process logged.
    logged: Mutex<HashMap<(Path, String), i64>>,
    /// The revision of the registry this process last recorded.
    recorded_revision: Mutex<Option<u64>>,
}

/// The registry the log's events were projected with, beside them.
const REGISTRY_FILE: &str = "registry.json";

impl OfflineLog {
    /// The log in a local folder, made if it does not exist: a path or a `file://` URL.
    pub fn open(location: &str) -> Result<Self, LogError> {
        let folder = location.strip_prefix("file://").unwrap_or(location);
        if folder.contains("://") {
            return Err(LogError::Location(format!(
                "`{location}`: this build reads and writes the offline log in a local folder \
                 (a path or a file:// URL) only"
            )));
        }
        std::fs::create_dir_all(folder)
            .map_err(|error| LogError::Location(format!("cannot make `{folder}`: {error}")))?;
        let store = LocalFileSystem::new_with_prefix(folder)?;
        Ok(OfflineLog::of_store(Arc::new(store)))
    }

    /// The log in any object store.
    pub fn of_store(store: Arc<dyn ObjectStore>) -> Self {
        OfflineLog {
            store,
            logged: Mutex::new(HashMap::new()),
            recorded_revision: Mutex::new(None),
        }
    }

    /// Records `registry` beside the events, once per revision, so that the log describes
    /// its own views: readers need no online store. In the registry's storage format.
    pub async fn record_registry(&self, registry: &Registry) -> Result<(), LogError> {
        if *self
            .recorded_revision
            .lock()
            .expect("no panics while locked")
            == Some(registry.revision)
        {
            return Ok(());
        }
        let encoded = quiver_format::encode_registry(registry);
        self.store
            .put(&Path::from(REGISTRY_FILE), PutPayload::from(encoded))
            .await?;
        *self
            .recorded_revision
            .lock()
            .expect("no panics while locked") = Some(registry.revision);
        Ok(())
    }

    /// Logs rows pushed to `view` through `writer` (such as `push:<host>`) at
    /// `ingest_time_micros`, after the online store wrote them.
    pub async fn append_pushes(
        &self,
        entity: &Entity,
        view: &VersionedView,
        writer: &str,
        writes: &[FeatureWrite],
        ingest_time_micros: i64,
    ) -> Result<(), LogError> {
        if writes.is_empty() {
            return Ok(());
        }
        crate::pushes::append(
            self.store.as_ref(),
            entity,
            view,
            writer,
            writes,
            ingest_time_micros,
        )
        .await
    }

    /// Every row pushed to `view`, in no particular order.
    pub async fn pushes(
        &self,
        entity: &Entity,
        view: &VersionedView,
    ) -> Result<Vec<FeatureWrite>, LogError> {
        crate::pushes::read(self.store.as_ref(), entity, view).await
    }

    /// The registry last recorded in the log; `None` before any event was logged.
    pub async fn registry(&self) -> Result<Option<Registry>, LogError> {
        let bytes = match self.store.get(&Path::from(REGISTRY_FILE)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        Ok(Some(quiver_format::decode_registry(&bytes)?))
    }

    /// Logs `events` of version `version` of `view`, written with `columns` and folded into
    /// the aggregates `folded`; returns how many files it wrote. Calls for one source must come
    /// in offset order.
    pub async fn append(
        &self,
        view: &Name,
        version: u32,
        columns: &LogColumns,
        folded: &[Name],
        events: &[LoggedEvent],
    ) -> Result<usize, LogError> {
        self.write(Encoded::of_events(view, version, columns, folded, events)?)
            .await
    }

    /// Writes files encoded already; returns how many. Calls for one source must come in
    /// offset order.
    pub async fn write(&self, encoded: Encoded) -> Result<usize, LogError> {
        for (source, first) in &encoded.first_offsets {
            if self.is_replay(&encoded.prefix, source, *first) {
                self.remove_from(&encoded.prefix, source, *first).await?;
            }
        }
        let written = encoded.files.len();
        for file in encoded.files {
            self.store
                .put(&file.path, PutPayload::from(file.parquet))
                .await?;
            self.remember(&encoded.prefix, &file.range.source, file.range.last_offset);
        }
        Ok(written)
    }

    /// Whether logging `source` from `first` may rewrite files: the first time this process
    /// logs it, or when it goes back.
    fn is_replay(&self, prefix: &Path, source: &str, first: i64) -> bool {
        let logged = self.logged.lock().expect("no panics while locked");
        logged
            .get(&(prefix.clone(), source.to_owned()))
            .is_none_or(|last| first <= *last)
    }

    fn remember(&self, prefix: &Path, source: &str, last: i64) {
        let mut logged = self.logged.lock().expect("no panics while locked");
        let entry = logged
            .entry((prefix.clone(), source.to_owned()))
            .or_insert(last);
        *entry = (*entry).max(last);
    }

    /// Removes the files of `source` that start at or after `first`.
    async fn remove_from(&self, prefix: &Path, source: &str, first: i64) -> Result<(), LogError> {
        for file in self.list_prefix(prefix).await? {
            if file.range.source == source && file.range.first_offset >= first {
                self.store.delete(&Path::from(file.path.as_str())).await?;
            }
        }
        Ok(())
    }

    /// The files of one view version, in path order.
    pub async fn files(&self, view: &Name, version: u32) -> Result<Vec<LogFile>, LogError> {
        self.list_prefix(&version_prefix(view, version)).await
    }

    async fn list_prefix(&self, prefix: &Path) -> Result<Vec<LogFile>, LogError> {
        let listed: Vec<_> = self.store.list(Some(prefix)).try_collect().await?;
        let mut files: Vec<LogFile> = listed
            .into_iter()
            .filter_map(|object| {
                let range = FileRange::of_file_name(object.location.filename()?)?;
                Some(LogFile {
                    path: object.location.to_string(),
                    range,
                })
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Every event logged for version `version` of `view`, once per source and offset.
    pub async fn events(&self, view: &Name, version: u32) -> Result<Vec<LoggedEvent>, LogError> {
        let mut events = Vec::new();
        self.for_each_event(view, version, |event, _| {
            events.push(event);
            Ok(())
        })
        .await?;
        Ok(events)
    }

    /// Hands every event logged for version `version` of `view` to `visit`, with the
    /// aggregates the ingester folded it into, once per source and offset, one file in memory at
    /// a time: an event in the offset range of another batch's file read before, of its source,
    /// is in that batch too.
    pub async fn for_each_event(
        &self,
        view: &Name,
        version: u32,
        mut visit: impl FnMut(LoggedEvent, &[Name]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let mut read: Vec<FileRange> = Vec::new();
        for file in self.files(view, version).await? {
            let bytes = self
                .store
                .get(&Path::from(file.path.as_str()))
                .await?
                .bytes()
                .await?;
            // Almost always none: only a replay cut differently overlaps another batch's files
            // (the files of one batch, one per date, share its range).
            let overlapping: Vec<&FileRange> = read
                .iter()
                .filter(|range| {
                    range.source == file.range.source
                        && **range != file.range
                        && range.first_offset <= file.range.last_offset
                        && file.range.first_offset <= range.last_offset
                })
                .collect();
            let (folded, events) = decode(bytes).map_err(|error| error.in_file(&file.path))?;
            for event in events {
                let repeated = overlapping
                    .iter()
                    .any(|range| (range.first_offset..=range.last_offset).contains(&event.offset));
                if !repeated {
                    visit(event, &folded)?;
                }
            }
            read.push(file.range);
        }
        Ok(())
    }
}

/// A view version's events as Parquet files, ready to be written: encoding is CPU work that
/// need not wait for earlier batches, writing must come in their order.
#[derive(Debug)]
pub struct Encoded {
    prefix: Path,
    files: Vec<EncodedFile>,
    /// The first offset of each source among the events.
    first_offsets: BTreeMap<String, i64>,
}

#[derive(Debug)]
struct EncodedFile {
    path: Path,
    range: FileRange,
    parquet: Bytes,
}

impl Encoded {
    /// `events` of version `version` of `view` with `columns`, folded into the aggregates
    /// `folded`, one file per source and date.
    pub fn of_events(
        view: &Name,
        version: u32,
        columns: &LogColumns,
        folded: &[Name],
        events: &[LoggedEvent],
    ) -> Result<Self, LogError> {
        let mut groups: BTreeMap<(String, &str), Vec<&LoggedEvent>> = BTreeMap::new();
        // Per source, the batch's first and last offsets: every file of the batch is named
        // by them, whatever its date, so that files of one batch are told from a replay's.
        let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for event in events {
            groups
                .entry((date_of(event.event_time_micros), event.source.as_str()))
                .or_default()
                .push(event);
            let range = ranges
                .entry(event.source.as_str())
                .or_insert((event.offset, event.offset));
            *range = (range.0.min(event.offset), range.1.max(event.offset));
        }
        let files = groups
            .into_iter()
            .map(|((date, source), events)| {
                let (first_offset, last_offset) = ranges[source];
                let range = FileRange {
                    source: source.to_owned(),
                    first_offset,
                    last_offset,
                };
                Ok(EncodedFile {
                    path: file_path(view, version, &date, &range),
                    parquet: encode(columns, folded, &events)?,
                    range,
                })
            })
            .collect::<Result<_, LogError>>()?;
        let first_offsets = ranges
            .into_iter()
            .map(|(source, (first, _))| (source.to_owned(), first))
            .collect();
        Ok(Encoded {
            prefix: version_prefix(view, version),
            files,
            first_offsets,
        })
    }
}

/// The file metadata key naming the aggregates a file's events were folded into when they were
/// ingested, comma-separated: what a backfill must not count again.
pub const FOLDED_AGGREGATES_KEY: &str = "quiver.folded_aggregates";

fn encode(
    columns: &LogColumns,
    folded: &[Name],
    events: &[&LoggedEvent],
) -> Result<Bytes, LogError> {
    let batch = columns.batch(events.iter().copied())?;
    let folded: Vec<&str> = folded.iter().map(Name::as_str).collect();
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            FOLDED_AGGREGATES_KEY.to_owned(),
            folded.join(","),
        )]))
        .build();
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, columns.arrow_schema(), Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// A file's events, and the aggregates they were folded into.
fn decode(bytes: Bytes) -> Result<(Vec<Name>, Vec<LoggedEvent>), LogError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let folded = folded_aggregates(builder.metadata().file_metadata().key_value_metadata())?;
    let reader = builder.build()?;
    let columns = LogColumns::of_arrow(reader.schema().as_ref())?;
    let mut events = Vec::new();
    for batch in reader {
        events.extend(columns.events(&batch?)?);
    }
    Ok((folded, events))
}

fn folded_aggregates(metadata: Option<&Vec<KeyValue>>) -> Result<Vec<Name>, LogError> {
    let listed = metadata
        .into_iter()
        .flatten()
        .find(|entry| entry.key == FOLDED_AGGREGATES_KEY)
        .and_then(|entry| entry.value.as_deref())
        .unwrap_or_default();
    listed
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.parse().map_err(|_| {
                LogError::Schema(format!(
                    "{FOLDED_AGGREGATES_KEY} names `{name}`, not a feature"
                ))
            })
        })
        .collect()
}
