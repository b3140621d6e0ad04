//! A read call as a plan: per view, the distinct entities it reads, which entity each request
//! row reads, and what was fetched for each; fetched in one place, then answered as columns.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use quiver_core::aggregate::{aggregate_feature, evaluate};
use quiver_core::definition::{Entity, VersionedView};
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::read::{ReadColumn, ReadPlan, Status as ReadStatus, status};
use quiver_core::value::Value;
use quiver_proto::columns::TypedColumnBuilder;
use quiver_proto::v1 as pb;
use tonic::Status;

use crate::cache::{Row, RowCache, RowKey, row_key, view_table};
use crate::convert;

/// What one read call reads and answers.
pub(crate) struct CallPlan<'r> {
    views: Vec<ViewPlan<'r>>,
    columns: Vec<ReadColumn>,
    rows: usize,
}

/// One view version of a call.
struct ViewPlan<'r> {
    source: ViewSource<'r>,
    /// Per request row, which of `entities` it reads.
    row_entities: Vec<usize>,
    /// The distinct entities, each read once however many rows name it.
    entities: Vec<EntityRead>,
}

/// What reading one view takes, worked out once per call rather than per entity.
pub(crate) struct ViewSource<'r> {
    pub(crate) entity: &'r Entity,
    pub(crate) view: &'r VersionedView,
    /// The view version's table, which the cache's keys name.
    pub(crate) table: Arc<str>,
}

/// One distinct entity of a view, by its cache key, and what was fetched of it.
struct EntityRead {
    key: RowKey,
    fetched: Option<Fetched>,
}

/// Everything stored of an entity in a view as fetched for a call: from the store or the cache, or stale when the
/// store was out of reach.
pub(crate) struct Fetched {
    pub(crate) row: Row,
    pub(crate) stale: bool,
}

impl Fetched {
    /// The status of a value found in this row.
    fn status(&self) -> ReadStatus {
        if self.stale {
            ReadStatus::Stale
        } else {
            ReadStatus::Ok
        }
    }
}

/// How a call answers its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One `Value` message per row.
    Values,
    /// One typed array per column.
    Typed,
}

impl Format {
    pub(crate) fn of(format: pb::ValueFormat) -> Self {
        match format {
            pb::ValueFormat::Unspecified | pb::ValueFormat::Values => Format::Values,
            pb::ValueFormat::Typed => Format::Typed,
        }
    }
}

/// One cell of a reply: its value if it has one, status and event time.
struct Cell<'a> {
    value: Option<Cow<'a, Value>>,
    status: ReadStatus,
    event_time_micros: i64,
}

impl Cell<'_> {
    fn absent(status: ReadStatus) -> Self {
        Cell {
            value: None,
            status,
            event_time_micros: 0,
        }
    }
}

impl<'r> CallPlan<'r> {
    /// The plan of a call reading `plan` for the `rows` entity rows of `entities`.
    pub(crate) fn new(
        plan: ReadPlan<'r>,
        entities: &HashMap<String, pb::KeyColumn>,
        rows: usize,
    ) -> Result<Self, Status> {
        let views = plan
            .views
            .iter()
            .map(|&(entity, view)| {
                let keys = convert::keys(entity, view, entities, rows)?;
                Ok(ViewPlan::new(
                    ViewSource {
                        entity,
                        view,
                        table: view_table(view),
                    },
                    keys,
                ))
            })
            .collect::<Result<_, Status>>()?;
        Ok(CallPlan {
            views,
            columns: plan.columns,
            rows,
        })
    }

    /// Takes each distinct entity that `cache` has, one after another; returns how many it
    /// had. A lookup that finds nothing is cheap, so this is tried first, and [`Self::fetch`]
    /// reads only the rest.
    pub(crate) async fn take_cached(&mut self, cache: &RowCache) -> u64 {
        let mut hits = 0;
        for entity in self.views.iter_mut().flat_map(|view| &mut view.entities) {
            if let Some(row) = cache.get(&entity.key).await {
                entity.fetched = Some(Fetched { row, stale: false });
                hits += 1;
            }
        }
        hits
    }

    /// Fetches each distinct entity of each view not fetched yet through `fetch`, at most
    /// `in_flight` at once. Each read's future is made only when it starts: made up front,
    /// a 10,000-entity call's futures (8.5 KB each before hits stopped holding the load's)
    /// took 170 MB and most of a second before the first read began.
    pub(crate) async fn fetch<'p, F, Read>(
        &'p mut self,
        in_flight: usize,
        fetch: F,
    ) -> Result<(), Status>
    where
        F: Fn(&'p ViewSource<'r>, &'p RowKey) -> Read,
        Read: Future<Output = Result<Fetched, Status>>,
    {
        // A list, not a lazy iterator: a closure held across the awaits below would make the
        // gRPC handler's future fail to be `Send` for every lifetime.
        let mut waiting = Vec::new();
        for ViewPlan {
            source, entities, ..
        } in &mut self.views
        {
            let source: &'p ViewSource<'r> = source;
            for EntityRead { key, fetched } in entities {
                if fetched.is_none() {
                    waiting.push((fetched, source, &*key));
                }
            }
        }
        let mut waiting = waiting.into_iter();
        let fetch = &fetch;
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < in_flight {
                let Some((slot, source, key)) = waiting.next() else {
                    break;
                };
                running.push(async move {
                    *slot = Some(fetch(source, key).await?);
                    Ok::<_, Status>(())
                });
            }
            match running.next().await {
                Some(done) => done?,
                None => return Ok(()),
            }
        }
    }

    /// The reply's columns, in request order, evaluated at `now_micros`.
    pub(crate) fn answer(
        self,
        now_micros: i64,
        format: Format,
    ) -> Result<Vec<pb::FeatureColumn>, Status> {
        let CallPlan {
            views,
            columns,
            rows,
        } = self;
        columns
            .into_iter()
            .map(|column| {
                let view = &views[column.view];
                let mut out = ColumnBuilder::new(column.name.clone(), rows, format, || {
                    feature_type(view.source.view, &column.feature)
                })?;
                let source = view.source_of(&column);
                for &entity in &view.row_entities {
                    out.push(source.cell(&view.entities[entity], now_micros))?;
                }
                Ok(out.finish())
            })
            .collect()
    }
}

impl<'r> ViewPlan<'r> {
    fn new(source: ViewSource<'r>, keys: Vec<EntityKey>) -> Self {
        // foldhash rather than SipHash: every row's key is hashed here once per call.
        let mut seen: HashMap<EntityKey, usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(keys.len(), Default::default());
        let mut entities = Vec::new();
        let row_entities = keys
            .into_iter()
            .map(|key| {
                *seen.entry(key).or_insert_with_key(|key| {
                    entities.push(EntityRead {
                        key: row_key(&source.table, key.clone()),
                        fetched: None,
                    });
                    entities.len() - 1
                })
            })
            .collect();
        ViewPlan {
            source,
            row_entities,
            entities,
        }
    }

    /// Where `column`'s cells come from, worked out once per column rather than per cell.
    fn source_of<'v>(&'v self, column: &ReadColumn) -> CellSource<'v> {
        let view = &self.source.view.view;
        match column.slot {
            Some(slot) => CellSource::Stored {
                slot,
                ttl: view.ttl,
            },
            None => match aggregate_feature(view, &column.feature) {
                Some((feature, aggregate)) => CellSource::Aggregate { feature, aggregate },
                None => CellSource::Unknown,
            },
        }
    }
}

/// Where the cells of one column come from.
enum CellSource<'v> {
    /// A stored feature: its slot in the view's fetched values.
    Stored {
        slot: usize,
        ttl: Option<quiver_core::definition::Seconds>,
    },
    /// An aggregate, evaluated over the fetched tiles.
    Aggregate {
        feature: &'v quiver_core::definition::Feature,
        aggregate: &'v quiver_core::definition::Aggregate,
    },
    /// Neither: nothing to serve.
    Unknown,
}

impl CellSource<'_> {
    /// The cell of one entity: a stored feature from its values, an aggregate evaluated over
    /// its tiles at `now_micros`.
    fn cell<'a>(&self, entity: &'a EntityRead, now_micros: i64) -> Cell<'a> {
        // Not fetched: every entity is fetched before a call answers.
        let Some(fetched) = &entity.fetched else {
            return Cell::absent(ReadStatus::NotFound);
        };
        match *self {
            CellSource::Stored { slot, ttl } => stored_cell(fetched, slot, ttl, now_micros),
            // An entity the view holds nothing of is unknown, not one with a count of 0.
            CellSource::Aggregate { .. } if fetched.row.is_absent() => {
                Cell::absent(ReadStatus::NotFound)
            }
            CellSource::Aggregate { feature, aggregate } => {
                match evaluate(feature, aggregate, &fetched.row.tiles, now_micros) {
                    Some((value, newest)) => Cell {
                        value: Some(Cow::Owned(value)),
                        status: fetched.status(),
                        event_time_micros: newest.unwrap_or(0),
                    },
                    None => Cell::absent(ReadStatus::NotFound),
                }
            }
            CellSource::Unknown => Cell::absent(ReadStatus::NotFound),
        }
    }
}

/// The cell of stored feature `slot` in a fetched row.
fn stored_cell(
    fetched: &Fetched,
    slot: usize,
    ttl: Option<quiver_core::definition::Seconds>,
    now_micros: i64,
) -> Cell<'_> {
    match &fetched.row.values[slot] {
        None => Cell::absent(ReadStatus::NotFound),
        Some(stored) => match status(ttl, stored.event_time_micros, now_micros) {
            ReadStatus::Ok => Cell {
                value: Some(Cow::Borrowed(&stored.value)),
                status: fetched.status(),
                event_time_micros: stored.event_time_micros,
            },
            other => Cell::absent(other),
        },
    }
}

/// The declared type of `feature` in `view`, which a typed column is made of.
fn feature_type(
    view: &VersionedView,
    feature: &Name,
) -> Result<quiver_core::value::ValueType, Status> {
    view.view
        .features
        .iter()
        .find(|candidate| &candidate.name == feature)
        .map(|found| found.value_type)
        .ok_or_else(|| {
            Status::internal(format!(
                "feature view `{}` has no feature `{feature}`",
                view.view.name
            ))
        })
}

/// One reply column, built row by row in the format the call asked for.
struct ColumnBuilder {
    column: pb::FeatureColumn,
    typed: Option<TypedColumnBuilder>,
}

impl ColumnBuilder {
    fn new(
        name: String,
        rows: usize,
        format: Format,
        value_type: impl FnOnce() -> Result<quiver_core::value::ValueType, Status>,
    ) -> Result<Self, Status> {
        let typed = match format {
            Format::Values => None,
            Format::Typed => Some(TypedColumnBuilder::new(value_type()?, rows)),
        };
        Ok(ColumnBuilder {
            column: pb::FeatureColumn {
                name,
                values: Vec::with_capacity(if typed.is_some() { 0 } else { rows }),
                statuses: Vec::with_capacity(rows),
                event_time_micros: Vec::with_capacity(rows),
                typed: None,
            },
            typed,
        })
    }

    fn push(&mut self, cell: Cell<'_>) -> Result<(), Status> {
        match &mut self.typed {
            Some(typed) => typed.push(cell.value.as_deref()).map_err(|error| {
                Status::internal(format!("feature `{}`: {error}", self.column.name))
            })?,
            None => self.column.values.push(
                cell.value
                    .map(|value| quiver_proto::values::into_wire(value.into_owned()))
                    .unwrap_or_default(),
            ),
        }
        self.column.statuses.push(wire_status(cell.status) as i32);
        self.column.event_time_micros.push(cell.event_time_micros);
        Ok(())
    }

    fn finish(self) -> pb::FeatureColumn {
        pb::FeatureColumn {
            typed: self.typed.map(TypedColumnBuilder::finish),
            ..self.column
        }
    }
}

fn wire_status(status: ReadStatus) -> pb::FeatureStatus {
    match status {
        ReadStatus::Ok => pb::FeatureStatus::Ok,
        ReadStatus::NotFound => pb::FeatureStatus::NotFound,
        ReadStatus::Expired => pb::FeatureStatus::Expired,
        ReadStatus::Stale => pb::FeatureStatus::Stale,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use quiver_core::aggregate::{LIFETIME_TILE_START, Partial, Tile};
    use quiver_core::definition::Registry;
    use quiver_core::key::KeyPart;
    use quiver_core::plan::Plan;
    use quiver_core::read::{plan_features, stored_features};
    use quiver_core::store::StoredValue;

    use super::*;
    use crate::cache::Cached;

    fn registry() -> Registry {
        let definitions = quiver_testkit::contract::example_definitions();
        Plan::between(&Registry::default(), &definitions)
            .apply(&Registry::default(), &definitions, false)
            .expect("the examples apply")
    }

    fn users(ids: &[i64]) -> HashMap<String, pb::KeyColumn> {
        HashMap::from([(
            "user_id".to_owned(),
            pb::KeyColumn {
                values: Some(pb::key_column::Values::Int64Values(pb::Int64List {
                    values: ids.to_vec(),
                })),
            },
        )])
    }

    /// What the store holds for user 7: a country, and three counted events. User 8 has nothing.
    fn stored(source: &ViewSource<'_>, key: &EntityKey) -> Fetched {
        let known = *key == EntityKey::new(vec![KeyPart::Int64(7)]).unwrap();
        let values = stored_features(source.view)
            .iter()
            .map(|name| {
                (known && name.as_str() == "country").then(|| StoredValue {
                    value: Value::String("SE".into()),
                    event_time_micros: 5,
                })
            })
            .collect();
        let tiles = if known && source.view.view.name.as_str() == "user_activity" {
            vec![Tile {
                feature: "actions_total".parse().unwrap(),
                start_micros: LIFETIME_TILE_START,
                source: "match-events/0".into(),
                through_offset: 3,
                newest_event_micros: 9,
                partial: Partial::Count(3),
            }]
        } else {
            Vec::new()
        };
        Fetched {
            row: Arc::new(Cached { values, tiles }),
            stale: false,
        }
    }

    #[tokio::test]
    async fn each_distinct_entity_is_fetched_once_per_view_and_every_row_is_answered() {
        let registry = registry();
        let references = ["user_profile:country", "user_activity:actions_total"];
        let plan = plan_features(&registry, references.map(String::from).to_vec()).unwrap();
        let mut call = CallPlan::new(plan, &users(&[7, 8, 7]), 3).unwrap();
        let fetched = fetch_stored(&mut call, 2).await;
        let seven = EntityKey::new(vec![KeyPart::Int64(7)]).unwrap();
        let eight = EntityKey::new(vec![KeyPart::Int64(8)]).unwrap();
        assert_eq!(
            fetched,
            [
                ("user_activity_v1".into(), seven.clone()),
                ("user_activity_v1".into(), eight.clone()),
                ("user_profile_v1".into(), seven),
                ("user_profile_v1".into(), eight),
            ],
            "each of the two users once per view, though user 7 is asked for twice"
        );
        let columns = call.answer(100, Format::Values).unwrap();
        let country = &columns[0];
        assert_eq!(country.name, "user_profile:country");
        let ok = pb::FeatureStatus::Ok as i32;
        let not_found = pb::FeatureStatus::NotFound as i32;
        assert_eq!(country.statuses, [ok, not_found, ok]);
        assert_eq!(country.event_time_micros, [5, 0, 5]);
        let se = quiver_proto::values::to_wire(&Value::String("SE".into()));
        assert_eq!(country.values, [se.clone(), pb::Value::default(), se]);
        let counts = &columns[1];
        assert_eq!(
            counts.statuses,
            [ok, not_found, ok],
            "user 8, of whom the view holds nothing, is unknown rather than counted 0"
        );
        let count = |n| quiver_proto::values::to_wire(&Value::Int64(n));
        assert_eq!(counts.values, [count(3), pb::Value::default(), count(3)]);
        assert_eq!(counts.event_time_micros, [9, 0, 9]);
    }

    #[tokio::test]
    async fn a_failed_fetch_fails_the_call() {
        let registry = registry();
        let plan = plan_features(&registry, vec!["user_profile:country".into()]).unwrap();
        let mut call = CallPlan::new(plan, &users(&[1, 2]), 2).unwrap();
        let failed = call
            .fetch(1, |_, _| async {
                Err(Status::unavailable("the store is down"))
            })
            .await
            .unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn rows_the_cache_has_are_taken_from_it_and_only_the_rest_are_fetched() {
        let registry = registry();
        let references = ["user_profile:country", "user_activity:actions_total"];
        let plan = plan_features(&registry, references.map(String::from).to_vec()).unwrap();
        let mut call = CallPlan::new(plan, &users(&[7, 8, 7]), 3).unwrap();
        let seven = EntityKey::new(vec![KeyPart::Int64(7)]).unwrap();
        // The profile of user 7 is cached; nothing else is.
        let cache = RowCache::new(&crate::ServeConfig::default().cache.unwrap());
        let profile = call_source(&registry, "user_profile");
        let cached = row_key(&profile.table, seven.clone());
        cache
            .get_or_load(&cached, || async { Ok(stored(&profile, &seven).row) })
            .await
            .unwrap();
        assert_eq!(call.take_cached(&cache).await, 1, "the one cached row");
        let fetched = fetch_stored(&mut call, 4).await;
        let eight = EntityKey::new(vec![KeyPart::Int64(8)]).unwrap();
        assert_eq!(
            fetched,
            [
                ("user_activity_v1".into(), seven.clone()),
                ("user_activity_v1".into(), eight.clone()),
                ("user_profile_v1".into(), eight),
            ],
            "everything but the cached row"
        );
        let columns = call.answer(100, Format::Values).unwrap();
        let ok = pb::FeatureStatus::Ok as i32;
        let not_found = pb::FeatureStatus::NotFound as i32;
        assert_eq!(
            columns[0].statuses,
            [ok, not_found, ok],
            "the cached country"
        );
    }

    /// Fetches what `call` still needs from [`stored`], `in_flight` at once; returns the
    /// (table, entity) pairs it fetched, sorted.
    async fn fetch_stored(call: &mut CallPlan<'_>, in_flight: usize) -> Vec<(String, EntityKey)> {
        let fetched = Mutex::new(Vec::new());
        call.fetch(in_flight, |source, key| {
            fetched
                .lock()
                .unwrap()
                .push((source.table.to_string(), key.1.clone()));
            let row = stored(source, &key.1);
            async move { Ok(row) }
        })
        .await
        .unwrap();
        let mut fetched = fetched.into_inner().unwrap();
        fetched.sort_by_key(|(table, key)| (table.clone(), key.encode()));
        fetched
    }

    /// A view's source as a call plans it.
    fn call_source<'r>(registry: &'r Registry, view: &str) -> ViewSource<'r> {
        let view = registry.latest_view(&view.parse().unwrap()).unwrap();
        ViewSource {
            entity: &registry.entities[0],
            view,
            table: view_table(view),
        }
    }
}
