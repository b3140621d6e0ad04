//! Planning and applying the example definitions: what `quiver plan` prints (a golden file) and
//! how an apply treats repeated, safe and breaking changes.

use std::path::Path;

use quiver_core::definition::{Definitions, Registry};
use quiver_core::filter::Filter;
use quiver_core::plan::Plan;
use quiver_core::value::{ScalarType, ValueType};
use quiver_definitions::load_dir;

fn example_definitions() -> Definitions {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/features");
    load_dir(&dir).unwrap_or_else(|errors| panic!("{errors}"))
}

fn applied(definitions: &Definitions) -> Registry {
    let empty = Registry::default();
    Plan::between(&empty, definitions)
        .apply(&empty, definitions, false)
        .expect("a first apply has nothing to break")
}

/// The examples with one safe and one breaking change to `user_profile`, and one service fewer.
fn edited(mut definitions: Definitions) -> Definitions {
    let profile = definitions
        .feature_views
        .iter_mut()
        .find(|view| view.name.as_str() == "user_profile")
        .unwrap();
    let photo_count = profile
        .features
        .iter_mut()
        .find(|feature| feature.name.as_str() == "photo_count")
        .unwrap();
    photo_count.value_type = ValueType::Scalar(ScalarType::Int64);
    profile.description = "The latest profile of each user, edited.".to_owned();
    let mut interests = profile.features[2].clone();
    interests.name = "interests".parse().unwrap();
    interests.derivation = quiver_core::definition::Derivation::Field("interests".into());
    profile.features.push(interests);
    definitions.feature_services.clear();
    definitions
}

#[test]
fn plan_output_matches_the_golden_files() {
    let definitions = example_definitions();
    let first = Plan::between(&Registry::default(), &definitions).to_string();
    let registry = applied(&definitions);
    let edit = Plan::between(&registry, &edited(definitions)).to_string();

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (file, actual) in [("plan_first_apply.txt", first), ("plan_edit.txt", edit)] {
        let path = golden.join(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!("{}: {error}; run with UPDATE_GOLDEN=1", path.display())
        });
        assert_eq!(
            actual, expected,
            "{file} changed; if intended, rerun with UPDATE_GOLDEN=1"
        );
    }
}

#[test]
fn applying_the_same_definitions_twice_changes_nothing() {
    let definitions = example_definitions();
    let registry = applied(&definitions);
    let again = Plan::between(&registry, &definitions);
    assert!(again.is_empty(), "{again}");
    assert_eq!(again.apply(&registry, &definitions, false), Ok(registry));
}

#[test]
fn a_breaking_change_is_refused_unless_a_new_version_is_asked_for() {
    let definitions = example_definitions();
    let registry = applied(&definitions);
    let edited = edited(definitions);
    let plan = Plan::between(&registry, &edited);

    let refused = plan.apply(&registry, &edited, false).unwrap_err();
    assert_eq!(refused.views.len(), 1);
    assert!(
        refused.to_string().contains("feature view `user_profile`"),
        "{refused}"
    );
    assert!(refused.to_string().contains("--new-version"), "{refused}");

    let versioned = plan.apply(&registry, &edited, true).unwrap();
    assert_eq!(versioned.revision, registry.revision + 1);
    let profile_versions: Vec<(u32, ValueType)> = versioned
        .feature_views
        .iter()
        .filter(|v| v.view.name.as_str() == "user_profile")
        .map(|v| {
            let photo_count = v
                .view
                .features
                .iter()
                .find(|f| f.name.as_str() == "photo_count")
                .unwrap();
            (v.version, photo_count.value_type)
        })
        .collect();
    assert_eq!(
        profile_versions,
        [
            (1, ValueType::Scalar(ScalarType::Int32)),
            (2, ValueType::Scalar(ScalarType::Int64))
        ],
        "the old version stays readable beside the new one"
    );
    assert!(Plan::between(&versioned, &edited).is_empty());
}

#[test]
fn a_safe_change_updates_the_current_version_in_place() {
    let definitions = example_definitions();
    let registry = applied(&definitions);
    let mut safe = definitions.clone();
    safe.feature_views[0].ttl = None;
    let plan = Plan::between(&registry, &safe);
    assert!(plan.breaking_views().is_empty(), "{plan}");
    let updated = plan.apply(&registry, &safe, false).unwrap();
    let activity: Vec<_> = updated
        .feature_views
        .iter()
        .filter(|v| v.view.name.as_str() == "user_activity")
        .collect();
    assert_eq!(activity.len(), 1);
    assert_eq!((activity[0].version, activity[0].view.ttl), (1, None));
}

#[test]
fn a_new_filter_breaks_an_aggregate_but_not_a_field() {
    let definitions = example_definitions();
    let registry = applied(&definitions);
    let with_filter = |feature: &str| {
        let mut edited = definitions.clone();
        let activity = &mut edited.feature_views[0];
        let filtered = activity
            .features
            .iter_mut()
            .find(|f| f.name.as_str() == feature)
            .unwrap();
        filtered.filter = Some(Filter::IsNull("country".into()));
        Plan::between(&registry, &edited)
    };
    let aggregate = with_filter("actions_1h");
    assert_eq!(aggregate.breaking_views().len(), 1, "{aggregate}");
    assert!(
        aggregate.to_string().contains("feature actions_1h: filter"),
        "{aggregate}"
    );
    let field = with_filter("last_country");
    assert!(field.breaking_views().is_empty(), "{field}");
    assert!(
        field.to_string().contains("feature last_country: filter"),
        "{field}"
    );
}
