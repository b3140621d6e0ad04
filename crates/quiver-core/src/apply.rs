//! Applying definitions through the store: plan, create tables, then publish the registry.
//!
//! Tables come before the registry that names them, so a reader never sees a view version whose
//! table is missing. The registry is published with a compare-and-set on its revision, so of two
//! racing applies one wins and the other fails with a conflict, never a mix of both.

use thiserror::Error;

use crate::definition::{Definitions, Registry};
use crate::plan::{Action, BreakingChangeRefused, ItemKind, Plan};
use crate::store::{OnlineStore, StoreError, StoreErrorKind};

/// Why an apply changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] BreakingChangeRefused),
    #[error(
        "feature service `{service}` pins `{reference}`, but that view version does not exist \
         or lacks the feature; pin an applied version or drop the `@version`"
    )]
    UnknownPinnedVersion { service: String, reference: String },
    #[error(
        "the registry changed while this apply ran (another apply won); run `quiver plan` again \
         to see the new state"
    )]
    Concurrent,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(error: StoreError) -> Self {
        match error.kind {
            StoreErrorKind::Conflict => ApplyError::Concurrent,
            _ => ApplyError::Store(error),
        }
    }
}

/// The applied registry and the plan from it to `definitions`.
pub async fn plan<S: OnlineStore>(
    store: &S,
    definitions: &Definitions,
) -> Result<(Registry, Plan), StoreError> {
    let registry = store.load_registry().await?.unwrap_or_default();
    let plan = Plan::between(&registry, definitions);
    Ok((registry, plan))
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub plan: Plan,
    pub registry: Registry,
}

/// Applies `definitions`. Breaking view changes become new versions only with `new_versions`.
pub async fn apply<S: OnlineStore>(
    store: &S,
    definitions: &Definitions,
    new_versions: bool,
) -> Result<Applied, ApplyError> {
    let (current, plan) = plan(store, definitions).await?;
    let registry = plan.apply(&current, definitions, new_versions)?;
    if plan.is_empty() {
        return Ok(Applied { plan, registry });
    }
    check_pinned_versions(&registry)?;
    for change in &plan.changes {
        let (ItemKind::FeatureView, Action::Add | Action::Change(_), Some(version)) =
            (change.kind, &change.action, change.version)
        else {
            continue;
        };
        let versioned = registry
            .feature_views
            .iter()
            .find(|v| v.view.name == change.name && v.version == version)
            .expect("the planned version is in the new registry");
        let entity = registry
            .entity(&versioned.view.entity)
            .expect("a loaded view names a declared entity");
        store
            .ensure_view_table(entity, &versioned.view, version)
            .await?;
    }
    store.publish_registry(current.revision, &registry).await?;
    Ok(Applied { plan, registry })
}

fn check_pinned_versions(registry: &Registry) -> Result<(), ApplyError> {
    for service in &registry.feature_services {
        for reference in &service.features {
            let Some(version) = reference.version else {
                continue;
            };
            let exists = registry.feature_views.iter().any(|v| {
                v.view.name == reference.view
                    && v.version == version
                    && v.view.features.iter().any(|f| f.name == reference.feature)
            });
            if !exists {
                return Err(ApplyError::UnknownPinnedVersion {
                    service: service.name.to_string(),
                    reference: reference.to_string(),
                });
            }
        }
    }
    Ok(())
}
