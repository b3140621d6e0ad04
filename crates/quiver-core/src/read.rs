//! What a read request resolves to: the view versions to read and, per requested feature, where
//! its value is found, checked against the registry; and the status of each value served.

use std::collections::HashSet;
use std::fmt;

use crate::definition::{Derivation, Entity, Registry, Seconds, ServiceFeature, VersionedView};
use crate::name::{Name, excerpt};

/// A request that names something the registry does not have, or nothing at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no features requested; name a feature service or at least one `view:feature`")]
    NoFeatures,
    #[error("`{0}` is not a feature reference; write `view:feature` or `view@2:feature`")]
    BadReference(String),
    #[error("feature service `{0}` is not in the registry")]
    UnknownService(String),
    #[error("feature view `{0}` is not in the registry")]
    UnknownView(String),
    #[error("feature view `{view}` has no version {version}")]
    UnknownVersion { view: String, version: u32 },
    #[error("feature view `{view}` has no feature `{feature}`")]
    UnknownFeature { view: String, feature: String },
}

/// One requested feature: its name as the reply gives it, and where to find its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadColumn {
    /// `view:feature` (or `view@2:feature`), as requested.
    pub name: String,
    /// Index into [`ReadPlan::views`].
    pub view: usize,
    /// The feature's name in its view.
    pub feature: Name,
    /// Index of the feature among [`stored_features`] of its view; `None` for an aggregate,
    /// whose values are not stored as a column.
    pub slot: Option<usize>,
}

/// The view versions a request reads, each with its entity, and the columns of the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPlan<'r> {
    pub views: Vec<(&'r Entity, &'r VersionedView)>,
    pub columns: Vec<ReadColumn>,
}

/// The features of a view stored as columns (those read from a field), in declaration order:
/// what one read of an entity in that view returns.
pub fn stored_features(view: &VersionedView) -> Vec<Name> {
    view.view
        .features
        .iter()
        .filter(|feature| matches!(feature.derivation, Derivation::Field(_)))
        .map(|feature| feature.name.clone())
        .collect()
}

/// The plan for the features of service `name`, in the order the service declares them.
pub fn plan_service<'r>(registry: &'r Registry, name: &str) -> Result<ReadPlan<'r>, ReadError> {
    let service = registry
        .feature_services
        .iter()
        .find(|service| service.name.as_str() == name)
        .ok_or_else(|| ReadError::UnknownService(excerpt(name)))?;
    let references: Vec<(String, &ServiceFeature)> = service
        .features
        .iter()
        .map(|feature| (feature.to_string(), feature))
        .collect();
    plan(registry, references)
}

/// The plan for explicit `view:feature` (or `view@2:feature`) references, in their order; each
/// column is named by its reference. A feature referenced more than once (also as `view` and
/// `view@N` of the same version) is one column, where it was first referenced.
pub fn plan_features(
    registry: &Registry,
    references: Vec<String>,
) -> Result<ReadPlan<'_>, ReadError> {
    let parsed: Vec<ServiceFeature> = references
        .iter()
        .map(|text| {
            text.parse::<ServiceFeature>()
                .map_err(|_| ReadError::BadReference(excerpt(text)))
        })
        .collect::<Result<_, _>>()?;
    plan(registry, references.into_iter().zip(&parsed).collect())
}

fn plan<'r>(
    registry: &'r Registry,
    references: Vec<(String, &ServiceFeature)>,
) -> Result<ReadPlan<'r>, ReadError> {
    if references.is_empty() {
        return Err(ReadError::NoFeatures);
    }
    let mut plan = ReadPlan {
        views: Vec::new(),
        columns: Vec::with_capacity(references.len()),
    };
    // Each (view, feature) once: a repeated reference must not multiply the work of a call.
    let mut planned: HashSet<(usize, &Name)> = HashSet::with_capacity(references.len());
    for (name, reference) in references {
        let view = registry
            .view(&reference.view, reference.version)
            .ok_or_else(|| match reference.version {
                Some(version) if registry.latest_view(&reference.view).is_some() => {
                    ReadError::UnknownVersion {
                        view: reference.view.to_string(),
                        version,
                    }
                }
                _ => ReadError::UnknownView(reference.view.to_string()),
            })?;
        if !view
            .view
            .features
            .iter()
            .any(|feature| feature.name == reference.feature)
        {
            return Err(ReadError::UnknownFeature {
                view: reference.view.to_string(),
                feature: reference.feature.to_string(),
            });
        }
        let entity = registry
            .entity(&view.view.entity)
            .ok_or_else(|| ReadError::UnknownView(reference.view.to_string()))?;
        let index = match plan
            .views
            .iter()
            .position(|(_, planned)| std::ptr::eq(*planned, view))
        {
            Some(index) => index,
            None => {
                plan.views.push((entity, view));
                plan.views.len() - 1
            }
        };
        let slot = view
            .view
            .features
            .iter()
            .filter(|feature| matches!(feature.derivation, Derivation::Field(_)))
            .position(|stored| stored.name == reference.feature);
        if !planned.insert((index, &reference.feature)) {
            continue;
        }
        plan.columns.push(ReadColumn {
            name,
            view: index,
            feature: reference.feature.clone(),
            slot,
        });
    }
    Ok(plan)
}

/// Whether a value was found for an entity, and whether it is still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Nothing written, deleted, or (for the database) dropped after its TTL.
    NotFound,
    /// A value older than its view's TTL, seen before the store dropped it (such as in a cache).
    Expired,
    /// The last value read, served because the store could not be reached in time.
    Stale,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::NotFound => "not_found",
            Status::Expired => "expired",
            Status::Stale => "stale",
        })
    }
}

/// The status of a value with `event_time_micros` in a view keeping values for `ttl`.
pub fn status(ttl: Option<Seconds>, event_time_micros: i64, now_micros: i64) -> Status {
    match ttl {
        Some(ttl)
            if event_time_micros.saturating_add((ttl.0 as i64).saturating_mul(1_000_000))
                <= now_micros =>
        {
            Status::Expired
        }
        _ => Status::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_request_and_unknown_names_are_named() {
        let registry = Registry::default();
        assert_eq!(
            plan_features(&registry, Vec::new()),
            Err(ReadError::NoFeatures)
        );
        assert_eq!(
            plan_features(&registry, vec!["nope".into()]),
            Err(ReadError::BadReference("nope".into()))
        );
        assert_eq!(
            plan_features(&registry, vec!["views:f".into()]),
            Err(ReadError::UnknownView("views".into()))
        );
        assert_eq!(
            plan_service(&registry, "ranker"),
            Err(ReadError::UnknownService("ranker".into()))
        );
    }

    #[test]
    fn values_expire_at_their_event_time_plus_the_ttl() {
        let ttl = Some(Seconds(60));
        assert_eq!(status(ttl, 0, 59_999_999), Status::Ok);
        assert_eq!(status(ttl, 0, 60_000_000), Status::Expired);
        assert_eq!(status(None, 0, i64::MAX), Status::Ok);
    }
}
