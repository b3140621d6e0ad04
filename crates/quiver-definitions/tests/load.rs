//! Loading definition folders: the bundled examples, and one test per kind of error, each
//! checking the message, the file and the line an ML engineer would be sent to.

use std::path::{Path, PathBuf};

use quiver_core::definition::{AggregateFunction, Derivation, Seconds};
use quiver_core::filter::{CompareOp, Filter};
use quiver_core::value::{ScalarType, Value, ValueType};
use quiver_definitions::{DefinitionError, load_dir};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/features")
}

/// A folder holding `entities.yaml` (from the examples) and `views.yaml` with `views`, whose
/// schema paths point at the bundled schemas.
fn folder_with(views: &str) -> tempdir::Folder {
    let folder = tempdir::Folder::new();
    std::fs::copy(
        examples().join("entities.yaml"),
        folder.path().join("entities.yaml"),
    )
    .unwrap();
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let views = views.replace("SCHEMAS", &schemas.display().to_string());
    std::fs::write(folder.path().join("views.yaml"), views).unwrap();
    folder
}

mod tempdir {
    //! A uniquely named temporary folder, removed when dropped.
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(crate) struct Folder(PathBuf);

    impl Folder {
        pub(crate) fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "quiver-definitions-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Folder(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn errors_of(views: &str) -> Vec<DefinitionError> {
    let folder = folder_with(views);
    load_dir(folder.path())
        .expect_err("the definitions are invalid")
        .0
}

/// The only error, checked for its file, line and the words of its message.
fn assert_single_error(views: &str, line: usize, words: &[&str]) {
    let errors = errors_of(views);
    assert_eq!(errors.len(), 1, "expected one error, got: {errors:#?}");
    let error = &errors[0];
    assert!(error.file.ends_with("views.yaml"), "{error}");
    assert_eq!(error.at.line, line, "{error}");
    let text = error.to_string();
    for word in words {
        assert!(text.contains(word), "`{word}` missing from: {text}");
    }
    assert!(text.contains("views.yaml:"), "{text}");
}

const VALID_VIEW: &str = r#"feature_views:
  - name: activity
    entity: user
    source:
      topic: match-events
      schema: SCHEMAS/match_event.avsc
      key_fields: [user_id]
      event_time: ts
    features:
      - {name: last_country, type: string, from: country}
"#;

#[test]
fn the_bundled_examples_load() {
    let definitions = load_dir(&examples()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(definitions.entities.len(), 1);
    assert_eq!(definitions.feature_views.len(), 2);
    assert_eq!(definitions.feature_services[0].features.len(), 6);
    let activity = &definitions.feature_views[0];
    assert_eq!(activity.ttl, Some(Seconds(7 * 86_400)));
    let recent = activity
        .features
        .iter()
        .find(|f| f.name.as_str() == "recent_candidates")
        .unwrap();
    assert_eq!(recent.value_type, ValueType::List(ScalarType::Int64));
    let Derivation::Aggregate(aggregate) = &recent.derivation else {
        panic!("{recent:?}")
    };
    assert_eq!(aggregate.function, AggregateFunction::LastK(10));
}

#[test]
fn a_valid_view_loads() {
    let folder = folder_with(VALID_VIEW);
    let definitions = load_dir(folder.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(definitions.feature_views[0].name.as_str(), "activity");
}

#[test]
fn an_unknown_key_is_refused_with_the_keys_allowed() {
    let views = VALID_VIEW.replace(
        "    entity: user\n",
        "    entity: user\n    retention: 7d\n",
    );
    assert_single_error(
        &views,
        4,
        &["unknown key `retention`", "feature view", "ttl"],
    );
}

#[test]
fn a_wrong_type_names_both_types() {
    let views = VALID_VIEW.replace(
        "{name: last_country, type: string, from: country}",
        "{name: last_country, type: int64, from: country}",
    );
    assert_single_error(
        &views,
        10,
        &[
            "feature `last_country` is int64",
            "`country` is Avro string",
            "change the feature type",
        ],
    );
}

#[test]
fn a_missing_avro_field_lists_the_fields_there_are() {
    let views = VALID_VIEW.replace("from: country}", "from: device.os}");
    assert_single_error(
        &views,
        10,
        &[
            "`device.os`",
            "field `os` not found in record `Device`",
            "platform",
        ],
    );
}

#[test]
fn an_undeclared_entity_names_the_declared_ones() {
    let views = VALID_VIEW.replace("entity: user", "entity: member");
    assert_single_error(&views, 3, &["entity `member`", "not declared", "user"]);
}

#[test]
fn a_bad_name_says_which_characters_are_allowed() {
    let views = VALID_VIEW.replace("name: activity", "name: Activity-Feed");
    assert_single_error(
        &views,
        2,
        &["feature view name", "Activity-Feed", "lower-case letter"],
    );
}

#[test]
fn a_missing_required_key_is_named() {
    let views = VALID_VIEW.replace("      event_time: ts\n", "");
    assert_single_error(
        &views,
        5,
        &["the source of feature view `activity` needs `event_time`"],
    );
}

#[test]
fn key_fields_must_match_the_entity_keys() {
    let views = VALID_VIEW.replace(
        "key_fields: [user_id]",
        "key_fields: [user_id, candidate_id]",
    );
    assert_single_error(
        &views,
        7,
        &["2 key field(s)", "entity `user` has 1 key(s) (user_id)"],
    );
    let views = VALID_VIEW.replace("key_fields: [user_id]", "key_fields: [surface]");
    assert_single_error(
        &views,
        7,
        &[
            "key field `surface` is Avro string",
            "key `user_id` of entity `user` is int64",
        ],
    );
}

#[test]
fn the_event_time_must_be_a_timestamp() {
    let views = VALID_VIEW.replace("event_time: ts", "event_time: surface");
    assert_single_error(
        &views,
        8,
        &[
            "event time field `surface` is Avro string",
            "timestamp-millis",
        ],
    );
}

#[test]
fn an_event_id_gives_a_view_a_dedup_horizon_seven_days_by_default() {
    let with_id = VALID_VIEW.replace(
        "      event_time: ts\n",
        "      event_time: ts\n      event_id: event_id\n",
    );
    let load = |views: &str| {
        let folder = folder_with(views);
        load_dir(folder.path()).unwrap_or_else(|errors| panic!("{errors}"))
    };
    let view = load(&with_id).feature_views.remove(0);
    assert_eq!(view.source.event_id.as_deref(), Some("event_id"));
    assert_eq!(view.dedup, Some(Seconds(7 * 86_400)));
    let declared = with_id.replace("    features:\n", "    dedup: 2d\n    features:\n");
    assert_eq!(
        load(&declared).feature_views[0].dedup,
        Some(Seconds(2 * 86_400))
    );
    assert_eq!(load(VALID_VIEW).feature_views[0].dedup, None);
}

#[test]
fn a_bad_event_id_or_a_dedup_without_one_is_refused_at_its_line() {
    let with_id = |path: &str| {
        VALID_VIEW.replace(
            "      event_time: ts\n",
            &format!("      event_time: ts\n      event_id: {path}\n"),
        )
    };
    assert_single_error(
        &with_id("request_id"),
        9,
        &["`request_id`", "event_id", "candidate_id"],
    );
    assert_single_error(
        &with_id("chat_seconds"),
        9,
        &[
            "event id field `chat_seconds` is Avro double",
            "string, int, long",
        ],
    );
    assert_single_error(
        &with_id("rank_position"),
        9,
        &["event id field `rank_position` may be null"],
    );
    assert_single_error(
        &VALID_VIEW.replace("    features:\n", "    dedup: 1d\n    features:\n"),
        9,
        &["declares `dedup` but its source has no `event_id`"],
    );
}

#[test]
fn a_bad_type_spelling_lists_the_types() {
    let views = VALID_VIEW.replace("type: string", "type: text");
    assert_single_error(
        &views,
        10,
        &["unknown type `text`", "int64", "embedding<N>"],
    );
}

#[test]
fn bad_aggregates_say_what_would_work() {
    let with = |aggregate: &str| {
        VALID_VIEW.replace(
            "{name: last_country, type: string, from: country}",
            aggregate,
        )
    };
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: median, of: chat_seconds}}"),
        10,
        &["unknown aggregate function `median`", "approx_distinct"],
    );
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: count, window: 45d}}"),
        10,
        &["window 45d is longer than 30d", "lifetime"],
    );
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: sum, of: chat_seconds}}"),
        10,
        &["declared int64", "`sum` of this field gives float64"],
    );
    assert_single_error(
        &with("{name: n, type: float64, aggregate: {fn: avg, of: surface}}"),
        10,
        &["`avg` needs a numeric field, not string"],
    );
    assert_single_error(
        &with("{name: n, type: list<int64>, aggregate: {fn: last_k, of: candidate_id}}"),
        10,
        &["`last_k` needs `k`"],
    );
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: count, window: soon}}"),
        10,
        &["`soon` is not a duration", "7d"],
    );
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: count, window: 30d, resolution: 1m}}"),
        10,
        &[
            "resolution 1m cuts the window 30d into 43200 tiles",
            "at least 3h",
        ],
    );
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: count, resolution: 1h}}"),
        10,
        &["`resolution` applies to windows; a lifetime aggregate has none"],
    );
    assert_single_error(
        &with("{name: n, type: int64, aggregate: {fn: count, window: 1h, resolution: 2h}}"),
        10,
        &["resolution 2h is longer than the window 1h"],
    );
}

#[test]
fn filters_become_conditions_typed_like_their_fields() {
    let views = VALID_VIEW.replace(
        "{name: last_country, type: string, from: country}",
        "{name: likes_1h, type: int64, aggregate: {fn: count, where: {action: LIKE}, window: 1h}}
      - name: long_chats
        type: int64
        aggregate: {fn: count, where: {action: CHAT, chat_seconds: {ge: 60, lt: 3600}}}
      - {name: ranked, type: int64, aggregate: {fn: count, of: rank_position}}
      - name: last_liked
        type: int64
        from: candidate_id
        where: {or: [{action: {in: [LIKE, SUPER_LIKE]}}, {country: null}, {rank_position: {ne: null}}]}",
    );
    let folder = folder_with(&views);
    let definitions = load_dir(folder.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let features = &definitions.feature_views[0].features;
    let filter_of = |name: &str| {
        let feature = features.iter().find(|f| f.name.as_str() == name).unwrap();
        feature.filter.clone()
    };
    let text = |s: &str| Value::String(s.into());
    let compare = |field: &str, op, literal| Filter::Compare {
        field: field.into(),
        op,
        literal,
    };
    assert_eq!(
        filter_of("likes_1h"),
        Some(compare("action", CompareOp::Eq, text("LIKE")))
    );
    assert_eq!(
        filter_of("long_chats"),
        Some(Filter::All(vec![
            compare("action", CompareOp::Eq, text("CHAT")),
            // An integer literal compares with a double field as a number.
            Filter::All(vec![
                compare("chat_seconds", CompareOp::Ge, Value::Float64(60.0)),
                compare("chat_seconds", CompareOp::Lt, Value::Float64(3600.0)),
            ]),
        ]))
    );
    assert_eq!(filter_of("ranked"), None);
    assert_eq!(
        filter_of("last_liked"),
        Some(Filter::Any(vec![
            Filter::In {
                field: "action".into(),
                literals: vec![text("LIKE"), text("SUPER_LIKE")],
            },
            Filter::IsNull("country".into()),
            Filter::NotNull("rank_position".into()),
        ]))
    );
}

#[test]
fn bad_filters_are_refused_at_their_line_with_what_would_work() {
    let with = |feature: &str| {
        VALID_VIEW.replace("{name: last_country, type: string, from: country}", feature)
    };
    let count_where = |condition: &str| {
        with(&format!(
            "{{name: n, type: int64, aggregate: {{fn: count, where: {condition}}}}}"
        ))
    };
    assert_single_error(
        &count_where("{action: LOVE}"),
        10,
        &[
            "`LOVE` is not a symbol of enum field `action`",
            "SUPER_LIKE",
        ],
    );
    assert_single_error(
        &count_where("{actoin: LIKE}"),
        10,
        &[
            "filtered field `actoin`",
            "not found in record `MatchEvent`",
            "action",
        ],
    );
    assert_single_error(
        &count_where("{chat_seconds: fast}"),
        10,
        &[
            "field `chat_seconds` is compared with a string",
            "takes a number",
        ],
    );
    assert_single_error(
        &count_where("{candidate_id: 1.5}"),
        10,
        &[
            "field `candidate_id` is compared with a number",
            "a whole number",
        ],
    );
    assert_single_error(
        &count_where("{chat_seconds: {above: 5}}"),
        10,
        &["unknown operator `above`", "eq, ne, lt, le, gt, ge, in"],
    );
    assert_single_error(
        &count_where("{action: [LIKE, PASS]}"),
        10,
        &["field `action`", "`{in: [...]}`"],
    );
    assert_single_error(
        &count_where("{ts: {gt: 5}}"),
        10,
        &["a timestamp can only be tested for null"],
    );
    assert_single_error(
        &count_where("{device: null}"),
        10,
        &[
            "filtered field `device` is Avro record",
            "filter on a boolean",
        ],
    );
    assert_single_error(&count_where("LIKE"), 10, &["must be a mapping such as"]);
    assert_single_error(
        &count_where("{or: []}"),
        10,
        &["`or`", "at least one condition"],
    );
    assert_single_error(
        &with(
            "{name: n, type: int64, where: {action: LIKE}, aggregate: {fn: count, where: {action: PASS}}}",
        ),
        10,
        &["a `where` beside its aggregate and one inside it"],
    );
    // In block style, the error points at the offending line of a nested condition.
    assert_single_error(
        &with(
            "name: n
        type: int64
        aggregate:
          fn: count
          where:
            or:
              - {action: LIKE}
              - {action: LOVE}",
        ),
        17,
        &["`LOVE` is not a symbol"],
    );
}

#[test]
fn windows_get_a_resolution_and_views_a_lateness() {
    let views = VALID_VIEW
        .replace(
            "    features:\n",
            "    allowed_lateness: 10m\n    features:\n",
        )
        .replace(
            "{name: last_country, type: string, from: country}",
            "{name: a, type: int64, aggregate: {fn: count, window: 1d}}\n      \
             - {name: b, type: int64, aggregate: {fn: count, window: 1d, resolution: 10m}}",
        );
    let folder = folder_with(&views);
    let definitions = load_dir(folder.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let view = &definitions.feature_views[0];
    assert_eq!(view.allowed_lateness, Some(Seconds(600)));
    let resolutions: Vec<Option<Seconds>> = view
        .features
        .iter()
        .map(|feature| match &feature.derivation {
            Derivation::Aggregate(aggregate) => aggregate.resolution,
            Derivation::Field(_) => None,
        })
        .collect();
    assert_eq!(
        resolutions,
        vec![Some(Seconds(3_600)), Some(Seconds(600))],
        "a window without a resolution gets the default one"
    );
}

#[test]
fn a_bad_default_names_the_expected_type() {
    let views = VALID_VIEW.replace("from: country}", "from: country, default: 42}");
    assert_single_error(
        &views,
        10,
        &[
            "default of feature `last_country` must be a string",
            "a number",
        ],
    );
}

#[test]
fn an_unknown_service_feature_lists_the_view_features() {
    let views = format!(
        "{VALID_VIEW}feature_services:\n  - name: ranker\n    features: [activity:last_city]\n"
    );
    assert_single_error(
        &views,
        13,
        &[
            "feature view `activity` has no feature `last_city`",
            "last_country",
        ],
    );
}

#[test]
fn duplicates_are_refused() {
    let views = VALID_VIEW.replace("      - {name: last_country, type: string, from: country}\n", "      - {name: last_country, type: string, from: country}\n      - {name: last_country, type: string, from: surface}\n");
    assert_single_error(&views, 11, &["feature `last_country` appears twice"]);
}

#[test]
fn a_view_declared_twice_is_refused() {
    let second_item = VALID_VIEW.strip_prefix("feature_views:\n").unwrap();
    let views = format!("{VALID_VIEW}{second_item}");
    assert_single_error(&views, 11, &["feature view `activity` is declared twice"]);
}

#[test]
fn a_feature_cannot_take_a_key_name() {
    let views = VALID_VIEW.replace(
        "{name: last_country, type: string, from: country}",
        "{name: user_id, type: int64, from: user_id}",
    );
    assert_single_error(
        &views,
        10,
        &[
            "feature `user_id` has the name of a key of entity `user`",
            "rename",
        ],
    );
}

#[test]
fn a_missing_schema_file_names_the_path() {
    let views = VALID_VIEW.replace("match_event.avsc", "match_events.avsc");
    assert_single_error(
        &views,
        6,
        &["match_events.avsc", "relative to this definition file"],
    );
}

#[test]
fn invalid_yaml_points_at_the_syntax_error() {
    let errors = errors_of("feature_views:\n  - name: [unclosed\n");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].message.starts_with("invalid YAML"),
        "{}",
        errors[0]
    );
    assert!(errors[0].at.line >= 2, "{}", errors[0]);
}

#[test]
fn every_error_is_reported_at_once() {
    let views = VALID_VIEW
        .replace("entity: user", "entity: user\n    colour: blue")
        .replace("type: string, from: country", "type: int64, from: country");
    let errors = errors_of(&views);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].message.contains("unknown key `colour`"));
    assert!(errors[1].message.contains("is int64"));
    assert!(
        errors[0].at.line < errors[1].at.line,
        "errors come in file order"
    );
}

mod hostile {
    //! Damaged definition files: whatever the text, loading reports errors instead of
    //! panicking, and each error names a file of the folder.

    use proptest::prelude::*;

    use super::{examples, folder_with};

    /// The example views, with their schema paths made to work from a test folder.
    fn example_views() -> String {
        std::fs::read_to_string(examples().join("user_features.yaml"))
            .unwrap()
            .replace("../../schemas", "SCHEMAS")
    }

    fn assert_loads_or_names_the_file(text: &str) {
        let folder = folder_with(text);
        if let Err(errors) = super::load_dir(folder.path()) {
            let report = errors.to_string();
            assert!(
                report.contains("views.yaml") || report.contains("entities.yaml"),
                "{report}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn no_cut_of_a_valid_file_makes_loading_panic(
            from in any::<prop::sample::Index>(),
            length in 0usize..80,
        ) {
            let text = example_views();
            let start = from.index(text.len());
            let end = (start + length).min(text.len());
            if text.is_char_boundary(start) && text.is_char_boundary(end) {
                assert_loads_or_names_the_file(&format!("{}{}", &text[..start], &text[end..]));
            }
        }

        #[test]
        fn no_insertion_into_a_valid_file_makes_loading_panic(
            at in any::<prop::sample::Index>(),
            inserted in "[-a-z0-9_:{}\\[\\], \n\t'\"&*!|>#@%]{1,12}",
        ) {
            let text = example_views();
            let at = at.index(text.len());
            if text.is_char_boundary(at) {
                assert_loads_or_names_the_file(&format!("{}{inserted}{}", &text[..at], &text[at..]));
            }
        }

        #[test]
        fn no_text_makes_loading_panic(text in "\\PC{0,300}") {
            assert_loads_or_names_the_file(&text);
        }
    }
}
