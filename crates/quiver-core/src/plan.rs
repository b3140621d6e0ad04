//! What applying a set of definitions to the registry would change, and whether it is safe.
//!
//! A change is **breaking** when data already stored would be misread under the new definition:
//! a different entity or key, a feature whose type or aggregation changes. A breaking change to a
//! view is only applied as a new view version, with a table of its own; the old version stays
//! readable. Everything else (a new feature, a description, a TTL) is **safe** and updates the
//! current version in place.

use std::fmt;

use thiserror::Error;

use crate::definition::{
    Definitions, Entity, Feature, FeatureService, FeatureView, Registry, VersionedView,
};
use crate::name::Name;

/// Whether a change keeps stored data readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    Safe,
    Breaking,
}

/// One difference inside a changed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub safety: Safety,
    /// Such as `feature age: type int32 -> int64`.
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    Change(Vec<Detail>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Entity,
    FeatureView,
    FeatureService,
}

/// One item that would be added, changed or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ItemKind,
    pub name: Name,
    pub action: Action,
    /// For feature views: the version this apply writes to.
    pub version: Option<u32>,
}

impl Change {
    pub fn is_breaking(&self) -> bool {
        matches!(&self.action, Action::Change(details) if details.iter().any(|d| d.safety == Safety::Breaking))
    }
}

/// Every change from the registry to the definitions, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "refusing breaking changes to {}: stored data would be misread. Apply them as new view \
     versions with `quiver apply --new-version`; the current versions stay readable",
    .views.iter().map(|view| format!("feature view `{view}`")).collect::<Vec<_>>().join(", ")
)]
pub struct BreakingChangeRefused {
    pub views: Vec<Name>,
}

impl Plan {
    /// Compares what the files declare with what has been applied.
    pub fn between(registry: &Registry, definitions: &Definitions) -> Plan {
        let mut changes = Vec::new();
        diff_items(
            &registry.entities,
            &definitions.entities,
            |entity| &entity.name,
            entity_details,
            ItemKind::Entity,
            &mut changes,
        );
        let latest: Vec<FeatureView> = registry
            .latest_views()
            .into_iter()
            .map(|versioned| versioned.view.clone())
            .collect();
        diff_items(
            &latest,
            &definitions.feature_views,
            |view| &view.name,
            |old, new| view_details(registry, definitions, old, new),
            ItemKind::FeatureView,
            &mut changes,
        );
        diff_items(
            &registry.feature_services,
            &definitions.feature_services,
            |service| &service.name,
            service_details,
            ItemKind::FeatureService,
            &mut changes,
        );
        for change in &mut changes {
            if change.kind != ItemKind::FeatureView {
                continue;
            }
            let current = registry.latest_view(&change.name).map(|v| v.version);
            change.version = match (&change.action, current) {
                (Action::Add, _) => Some(1),
                (Action::Remove, _) => None,
                (Action::Change(_), Some(version)) if change.is_breaking() => Some(version + 1),
                (Action::Change(_), version) => version,
            };
        }
        Plan { changes }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn breaking_views(&self) -> Vec<Name> {
        self.changes
            .iter()
            .filter(|change| change.is_breaking())
            .map(|change| change.name.clone())
            .collect()
    }

    /// The registry after this plan. Breaking view changes become new versions only when
    /// `new_versions` is set; otherwise the whole apply is refused and nothing changes.
    pub fn apply(
        &self,
        registry: &Registry,
        definitions: &Definitions,
        new_versions: bool,
    ) -> Result<Registry, BreakingChangeRefused> {
        let breaking = self.breaking_views();
        if !breaking.is_empty() && !new_versions {
            return Err(BreakingChangeRefused { views: breaking });
        }
        if self.is_empty() {
            return Ok(registry.clone());
        }
        let mut feature_views: Vec<VersionedView> = registry
            .feature_views
            .iter()
            .filter(|versioned| {
                definitions
                    .feature_views
                    .iter()
                    .any(|view| view.name == versioned.view.name)
            })
            .cloned()
            .collect();
        for change in &self.changes {
            let (ItemKind::FeatureView, Some(version)) = (change.kind, change.version) else {
                continue;
            };
            let view = definitions
                .feature_views
                .iter()
                .find(|view| view.name == change.name)
                .expect("a planned view is in the definitions")
                .clone();
            match feature_views
                .iter_mut()
                .find(|v| v.view.name == change.name && v.version == version)
            {
                Some(existing) => existing.view = view,
                None => feature_views.push(VersionedView { version, view }),
            }
        }
        feature_views.sort_by(|a, b| (&a.view.name, a.version).cmp(&(&b.view.name, b.version)));
        Ok(Registry {
            revision: registry.revision + 1,
            entities: definitions.entities.clone(),
            feature_views,
            feature_services: definitions.feature_services.clone(),
        })
    }
}

fn diff_items<T>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &Name,
    details: impl Fn(&T, &T) -> Vec<Detail>,
    kind: ItemKind,
    changes: &mut Vec<Change>,
) {
    let mut names: Vec<&Name> = old.iter().chain(new).map(&name).collect();
    names.sort();
    names.dedup();
    for item_name in names {
        let before = old.iter().find(|item| name(item) == item_name);
        let after = new.iter().find(|item| name(item) == item_name);
        let action = match (before, after) {
            (None, Some(_)) => Action::Add,
            (Some(_), None) => Action::Remove,
            (Some(before), Some(after)) => {
                let found = details(before, after);
                if found.is_empty() {
                    continue;
                }
                Action::Change(found)
            }
            (None, None) => unreachable!("every name comes from one side"),
        };
        changes.push(Change {
            kind,
            name: item_name.clone(),
            action,
            version: None,
        });
    }
}

fn safe(what: String) -> Detail {
    Detail {
        safety: Safety::Safe,
        what,
    }
}

fn breaking(what: String) -> Detail {
    Detail {
        safety: Safety::Breaking,
        what,
    }
}

fn describe_keys(entity: &Entity) -> String {
    let keys: Vec<String> = entity
        .keys
        .iter()
        .map(|key| format!("{}: {}", key.name, key.key_type))
        .collect();
    format!("[{}]", keys.join(", "))
}

fn entity_details(old: &Entity, new: &Entity) -> Vec<Detail> {
    let mut details = Vec::new();
    if old.keys != new.keys {
        details.push(breaking(format!(
            "keys {} -> {}",
            describe_keys(old),
            describe_keys(new)
        )));
    }
    if old.description != new.description {
        details.push(safe("description".to_owned()));
    }
    details
}

fn view_details(
    registry: &Registry,
    definitions: &Definitions,
    old: &FeatureView,
    new: &FeatureView,
) -> Vec<Detail> {
    let mut details = Vec::new();
    if old.entity != new.entity {
        details.push(breaking(format!("entity {} -> {}", old.entity, new.entity)));
    } else {
        let applied = registry.entity(&old.entity).map(|entity| &entity.keys);
        let declared = definitions
            .entities
            .iter()
            .find(|entity| entity.name == new.entity)
            .map(|entity| &entity.keys);
        if applied.is_some() && declared.is_some() && applied != declared {
            details.push(breaking(format!("keys of entity {} change", new.entity)));
        }
    }
    if old.source.key_fields != new.source.key_fields {
        details.push(breaking(format!(
            "key fields [{}] -> [{}]",
            old.source.key_fields.join(", "),
            new.source.key_fields.join(", ")
        )));
    }
    if old.source.topic != new.source.topic {
        details.push(safe(format!(
            "topic {} -> {}",
            old.source.topic, new.source.topic
        )));
    }
    if old.source.schema != new.source.schema {
        details.push(safe("source schema".to_owned()));
    }
    if old.source.event_time != new.source.event_time {
        details.push(safe(format!(
            "event time {} -> {}",
            old.source.event_time, new.source.event_time
        )));
    }
    if old.source.event_id != new.source.event_id || old.dedup != new.dedup {
        let show = |view: &FeatureView| match (&view.source.event_id, view.dedup) {
            (Some(id), Some(horizon)) => format!("{id} for {horizon}"),
            (Some(id), None) => id.clone(),
            (None, _) => "none".to_owned(),
        };
        details.push(safe(format!("event id {} -> {}", show(old), show(new))));
    }
    if old.ttl != new.ttl {
        let show = |ttl: Option<crate::definition::Seconds>| {
            ttl.map_or_else(|| "none".to_owned(), |ttl| ttl.to_string())
        };
        details.push(safe(format!("ttl {} -> {}", show(old.ttl), show(new.ttl))));
    }
    if old.allowed_lateness != new.allowed_lateness {
        let show = |lateness: Option<crate::definition::Seconds>| {
            lateness.map_or_else(|| "any".to_owned(), |lateness| lateness.to_string())
        };
        details.push(safe(format!(
            "allowed lateness {} -> {}",
            show(old.allowed_lateness),
            show(new.allowed_lateness)
        )));
    }
    if old.description != new.description || old.owner != new.owner || old.tags != new.tags {
        details.push(safe("description, owner or tags".to_owned()));
    }
    for feature in &new.features {
        match old.features.iter().find(|f| f.name == feature.name) {
            None => details.push(safe(format!("+ feature {}", feature.name))),
            Some(before) => details.extend(feature_details(before, feature)),
        }
    }
    for feature in &old.features {
        if !new.features.iter().any(|f| f.name == feature.name) {
            details.push(safe(format!("- feature {}", feature.name)));
        }
    }
    details
}

/// `derivation` with a window's resolution filled in, as registries applied before resolutions
/// were recorded leave it out.
fn normalized(derivation: &crate::definition::Derivation) -> crate::definition::Derivation {
    let mut derivation = derivation.clone();
    if let crate::definition::Derivation::Aggregate(aggregate) = &mut derivation
        && let Some(window) = aggregate.window
    {
        aggregate
            .resolution
            .get_or_insert_with(|| crate::aggregate::default_resolution(window));
    }
    derivation
}

fn feature_details(old: &Feature, new: &Feature) -> Vec<Detail> {
    let mut details = Vec::new();
    let name = &new.name;
    if old.value_type != new.value_type {
        details.push(breaking(format!(
            "~ feature {name}: type {} -> {}",
            old.value_type, new.value_type
        )));
    }
    let aggregated = |feature: &Feature| {
        matches!(
            feature.derivation,
            crate::definition::Derivation::Aggregate(_)
        )
    };
    if normalized(&old.derivation) != normalized(&new.derivation) {
        if aggregated(old) || aggregated(new) {
            details.push(breaking(format!("~ feature {name}: aggregation")));
        } else {
            details.push(safe(format!("~ feature {name}: source field")));
        }
    }
    if old.filter != new.filter {
        // Tiles hold what the old filter let through; a field keeps its latest value either way.
        let what = format!("~ feature {name}: filter");
        details.push(if aggregated(new) {
            breaking(what)
        } else {
            safe(what)
        });
    }
    if old.default != new.default {
        details.push(safe(format!("~ feature {name}: default")));
    }
    if old.description != new.description {
        details.push(safe(format!("~ feature {name}: description")));
    }
    details
}

fn service_details(old: &FeatureService, new: &FeatureService) -> Vec<Detail> {
    let mut details = Vec::new();
    if old.features != new.features {
        details.push(safe("features".to_owned()));
    }
    if old.description != new.description {
        details.push(safe("description".to_owned()));
    }
    details
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemKind::Entity => "entity",
            ItemKind::FeatureView => "feature_view",
            ItemKind::FeatureService => "feature_service",
        })
    }
}

impl fmt::Display for Plan {
    /// One line per item (`+` add, `~` change, `-` remove), its details indented below with
    /// `[safe]` or `[breaking]`, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "No changes: the registry matches the definitions.");
        }
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        for change in &self.changes {
            let version = change
                .version
                .map(|version| format!(" (version {version})"))
                .unwrap_or_default();
            match &change.action {
                Action::Add => {
                    added += 1;
                    writeln!(f, "+ {} {}{version}", change.kind, change.name)?;
                }
                Action::Remove => {
                    removed += 1;
                    writeln!(f, "- {} {}", change.kind, change.name)?;
                }
                Action::Change(details) => {
                    changed += 1;
                    let version = match change.version {
                        Some(new) if change.is_breaking() => {
                            format!(" (version {} -> {new}, needs a new version)", new - 1)
                        }
                        _ => version,
                    };
                    writeln!(f, "~ {} {}{version}", change.kind, change.name)?;
                    for detail in details {
                        let safety = match detail.safety {
                            Safety::Safe => "safe",
                            Safety::Breaking => "breaking",
                        };
                        writeln!(f, "    {} [{safety}]", detail.what)?;
                    }
                }
            }
        }
        writeln!(
            f,
            "\nPlan: {added} to add, {changed} to change, {removed} to remove."
        )?;
        let breaking = self.breaking_views();
        if !breaking.is_empty() {
            writeln!(
                f,
                "{} view(s) change in a breaking way; `quiver apply --new-version` applies them \
                 as new versions.",
                breaking.len()
            )?;
        }
        Ok(())
    }
}
