//! Projecting real events of the bundled schemas onto the example feature views.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use proptest::prelude::*;
use quiver_avro::project::{
    ENTITY_DELETED_AVSC, FEATURE_UPSERT_AVSC, RejectReason, aggregate_inputs, event_id, project,
    project_deletion, project_upsert,
};
use quiver_core::aggregate::{Input, aggregate_features};
use quiver_core::definition::{Definitions, Entity, FeatureView};
use quiver_core::key::{EntityKey, KeyPart};
use quiver_core::value::Value;
use quiver_testkit::{contract, events};

const NOW_MICROS: i64 = 1_790_000_100_000_000;

fn view(definitions: &Definitions, name: &str) -> (Entity, FeatureView) {
    let view = definitions
        .feature_views
        .iter()
        .find(|view| view.name.as_str() == name)
        .expect("an example view")
        .clone();
    (definitions.entities[0].clone(), view)
}

fn values_by_name(write: &quiver_core::store::FeatureWrite) -> Vec<(&str, &Value)> {
    write
        .values
        .iter()
        .map(|(name, value)| (name.as_str(), value))
        .collect()
}

fn set_field(event: &mut Avro, field: &str, value: Avro) {
    let Avro::Record(fields) = event else {
        panic!("a record")
    };
    let slot = fields
        .iter_mut()
        .find(|(name, _)| name == field)
        .expect("the field exists");
    slot.1 = value;
}

#[test]
fn a_match_event_feeds_the_activity_view() {
    let (entity, activity) = view(&contract::example_definitions(), "user_activity");
    let schema = events::match_event_schema();
    let write = project(
        &entity,
        &activity,
        &events::match_event(&schema, 7),
        NOW_MICROS,
    )
    .expect("projects");
    assert_eq!(
        write.key,
        EntityKey::new(vec![KeyPart::Int64(2)]).unwrap(),
        "user 7 % 5"
    );
    assert_eq!(write.event_time_micros, (1_790_000_000_000 + 7_000) * 1_000);
    assert_eq!(
        values_by_name(&write),
        [
            ("last_country", &Value::String("SE".into())),
            ("last_platform", &Value::String("ANDROID".into())),
            ("last_action", &Value::String("PASS".into())),
        ],
        "aggregates are left to the aggregation step"
    );
}

/// The inputs `event` gives the named aggregates of `view`.
fn inputs_of(view: &FeatureView, event: &Avro, names: &[&str]) -> Vec<Input> {
    let inputs = aggregate_inputs(view, event).expect("valid inputs");
    aggregate_features(view)
        .into_iter()
        .zip(inputs)
        .filter(|((feature, _), _)| names.contains(&feature.name.as_str()))
        .map(|(_, input)| input)
        .collect()
}

#[test]
fn filters_decide_which_events_feed_a_feature() {
    let (entity, activity) = view(&contract::example_definitions(), "user_activity");
    let schema = events::match_event_schema();
    let names = ["likes_1h", "long_chats_7d", "ranked_actions_24h"];
    let like = events::match_event(&schema, 6);
    let short_chat = events::match_event(&schema, 11);
    let long_chat = events::match_event(&schema, 47);
    assert_eq!(
        inputs_of(&activity, &like, &names),
        [Input::Event, Input::Nothing, Input::Nothing],
        "a like from no ranked list"
    );
    assert_eq!(
        inputs_of(&activity, &short_chat, &names),
        [Input::Nothing, Input::Nothing, Input::Nothing],
        "a chat of 16.5 s is not long"
    );
    let ranked = events::with_field(
        long_chat,
        "rank_position",
        Avro::Union(1, Box::new(Avro::Int(3))),
    );
    assert_eq!(
        inputs_of(&activity, &ranked, &names),
        [Input::Nothing, Input::Event, Input::Value(Value::Int64(3))],
        "a chat of 70.5 s from position 3 of a ranked list"
    );

    let liked = |event: &Avro| {
        let write = project(&entity, &activity, event, NOW_MICROS).expect("projects");
        write
            .values
            .into_iter()
            .find(|(name, _)| name.as_str() == "last_liked_candidate")
            .map(|(_, value)| value)
    };
    assert_eq!(liked(&like), Some(Value::Int64(1_006)));
    assert_eq!(
        liked(&short_chat),
        None,
        "only likes feed the last liked candidate"
    );
}

#[test]
fn a_null_optional_field_is_left_out_not_refused() {
    let (entity, activity) = view(&contract::example_definitions(), "user_activity");
    let schema = events::match_event_schema();
    let mut event = events::match_event(&schema, 1);
    set_field(&mut event, "country", Avro::Union(0, Box::new(Avro::Null)));
    let write = project(&entity, &activity, &event, NOW_MICROS).expect("projects");
    assert!(
        !values_by_name(&write)
            .iter()
            .any(|(name, _)| *name == "last_country")
    );
}

#[test]
fn bad_events_are_rejected_with_a_reason() {
    let (entity, activity) = view(&contract::example_definitions(), "user_activity");
    let schema = events::match_event_schema();
    let with = |field: &str, value: Avro| {
        let mut event = events::match_event(&schema, 3);
        set_field(&mut event, field, value);
        project(&entity, &activity, &event, NOW_MICROS).expect_err("rejected")
    };
    let cases = [
        (
            with("user_id", Avro::Null),
            RejectReason::MissingKey,
            "key field `user_id` is missing or null",
        ),
        (
            with("user_id", Avro::String("42".into())),
            RejectReason::WrongType,
            "key field `user_id` holds a string, not int64",
        ),
        (
            with("ts", Avro::Null),
            RejectReason::MissingEventTime,
            "event time field `ts`",
        ),
        (
            with("ts", Avro::TimestampMillis(5)),
            RejectReason::AbsurdEventTime,
            "before 2000",
        ),
        (
            with("ts", Avro::TimestampMillis(NOW_MICROS / 1_000 + 7_200_000)),
            RejectReason::AbsurdEventTime,
            "an hour ahead",
        ),
        (
            with("country", Avro::Union(1, Box::new(Avro::Long(46)))),
            RejectReason::WrongType,
            "feature `last_country` is string, but field `country` holds a long",
        ),
    ];
    for (rejection, reason, words) in cases {
        assert_eq!(rejection.reason, reason, "{rejection}");
        assert!(rejection.to_string().contains(words), "{rejection}");
        assert!(
            rejection.to_string().starts_with(reason.as_str()),
            "{rejection}"
        );
    }
}

#[test]
fn a_profile_event_carries_lists_and_an_embedding_of_the_declared_size() {
    let (entity, profile) = view(&contract::example_definitions(), "user_profile");
    let embedding: Vec<Avro> = (0..32).map(|i| Avro::Float(i as f32)).collect();
    let event = Avro::Record(vec![
        ("user_id".into(), Avro::Long(9)),
        (
            "updated_at".into(),
            Avro::TimestampMillis(1_790_000_000_000),
        ),
        (
            "country".into(),
            Avro::Union(1, Box::new(Avro::String("NO".into()))),
        ),
        ("birth_year".into(), Avro::Union(0, Box::new(Avro::Null))),
        (
            "languages".into(),
            Avro::Array(vec![Avro::String("nb".into())]),
        ),
        ("interests".into(), Avro::Array(vec![])),
        ("photo_count".into(), Avro::Int(3)),
        ("verified".into(), Avro::Boolean(true)),
        (
            "bio_embedding".into(),
            Avro::Union(1, Box::new(Avro::Array(embedding))),
        ),
    ]);
    let write = project(&entity, &profile, &event, NOW_MICROS).expect("projects");
    let values = values_by_name(&write);
    assert!(values.contains(&("languages", &Value::StringList(vec!["nb".into()]))));
    assert!(values.contains(&("photo_count", &Value::Int32(3))));
    let Some((_, Value::Float32List(vector))) = values.iter().find(|(n, _)| *n == "bio_embedding")
    else {
        panic!("no embedding in {values:?}");
    };
    assert_eq!(vector.len(), 32);

    let mut short = event.clone();
    set_field(
        &mut short,
        "bio_embedding",
        Avro::Union(1, Box::new(Avro::Array(vec![Avro::Float(1.0)]))),
    );
    let rejection = project(&entity, &profile, &short, NOW_MICROS).expect_err("a short embedding");
    assert_eq!(rejection.reason, RejectReason::WrongType);
    assert!(
        rejection.to_string().contains("embedding<32>"),
        "{rejection}"
    );
}

#[test]
fn an_event_id_reads_as_text_and_a_missing_one_is_rejected() {
    let (_, mut activity) = view(&contract::example_definitions(), "user_activity");
    let schema = events::match_event_schema();
    let event = events::match_event(&schema, 42);
    assert_eq!(
        event_id(&activity, &event),
        Ok(Some("00000000-0000-4000-8000-000000000042".to_owned()))
    );
    let mut numbered = event.clone();
    set_field(&mut numbered, "event_id", Avro::Long(-7));
    assert_eq!(event_id(&activity, &numbered), Ok(Some("-7".to_owned())));
    set_field(&mut numbered, "event_id", Avro::Bytes(vec![0x0a, 0xff]));
    assert_eq!(event_id(&activity, &numbered), Ok(Some("0aff".to_owned())));

    let mut without = event.clone();
    set_field(&mut without, "event_id", Avro::Null);
    let rejection = event_id(&activity, &without).expect_err("no id");
    assert_eq!(rejection.reason, RejectReason::MissingEventId);
    assert!(
        rejection
            .to_string()
            .contains("event id field `event_id` is missing or null"),
        "{rejection}"
    );
    set_field(&mut without, "event_id", Avro::Double(1.5));
    assert!(
        event_id(&activity, &without)
            .expect_err("not an id")
            .to_string()
            .contains("is a double"),
    );

    activity.source.event_id = None;
    assert_eq!(event_id(&activity, &event), Ok(None), "no id declared");
}

proptest! {
    #[test]
    fn keys_and_event_times_come_through_unchanged(user_id in any::<i64>(), millis in 946_684_800_000i64..1_790_000_100_000) {
        let (entity, activity) = view(&contract::example_definitions(), "user_activity");
        let schema = events::match_event_schema();
        let mut event = events::match_event(&schema, 0);
        set_field(&mut event, "user_id", Avro::Long(user_id));
        set_field(&mut event, "ts", Avro::TimestampMillis(millis));
        let write = project(&entity, &activity, &event, NOW_MICROS).expect("projects");
        prop_assert_eq!(write.key, EntityKey::new(vec![KeyPart::Int64(user_id)]).unwrap());
        prop_assert_eq!(write.event_time_micros, millis * 1_000);
    }
}

/// An upsert command for `user_profile`, encoded and decoded with the bundled schema.
fn upsert(
    view: &str,
    keys: Vec<(&str, Avro)>,
    values: Vec<(&str, Avro)>,
    event_time_micros: i64,
) -> Avro {
    let schema = Schema::parse_str(FEATURE_UPSERT_AVSC).unwrap();
    let map = |entries: Vec<(&str, Avro)>| {
        Avro::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    };
    round_trip(
        &schema,
        vec![
            ("feature_view".into(), Avro::String(view.into())),
            ("keys".into(), map(keys)),
            ("values".into(), map(values)),
            (
                "event_time".into(),
                Avro::TimestampMicros(event_time_micros),
            ),
        ],
    )
}

/// A command with `fields`, encoded and decoded with `schema` as the ingester would read it.
fn round_trip(schema: &Schema, fields: Vec<(String, Avro)>) -> Avro {
    let command = Avro::Record(fields)
        .resolve(schema)
        .expect("the command fits the schema");
    let datum = apache_avro::to_avro_datum(schema, command).unwrap();
    apache_avro::from_avro_datum(schema, &mut datum.as_slice(), None).unwrap()
}

#[test]
fn an_upsert_command_writes_the_values_it_carries() {
    let definitions = contract::example_definitions();
    let find = |name: &str| {
        definitions
            .feature_views
            .iter()
            .find(|view| view.name.as_str() == name)
            .map(|view| (&definitions.entities[0], view))
    };
    let languages = Avro::Record(vec![(
        "items".into(),
        Avro::Array(vec![Avro::String("fi".into())]),
    )]);
    let command = upsert(
        "user_profile",
        vec![("user_id", Avro::Long(77))],
        vec![
            ("country", Avro::String("FI".into())),
            ("languages", languages),
            ("birth_year", Avro::Null),
        ],
        1_790_000_000_000_000,
    );
    let (view, write) = project_upsert(&command, find, NOW_MICROS).expect("projects");
    assert_eq!(view.name.as_str(), "user_profile");
    assert_eq!(write.key, EntityKey::new(vec![KeyPart::Int64(77)]).unwrap());
    assert_eq!(write.event_time_micros, 1_790_000_000_000_000);
    assert_eq!(
        values_by_name(&write),
        [
            ("country", &Value::String("FI".into())),
            ("languages", &Value::StringList(vec!["fi".into()]))
        ],
        "a null value is left out"
    );

    let reject = |command: Avro| project_upsert(&command, find, NOW_MICROS).expect_err("rejected");
    let unknown_view = reject(upsert(
        "user_prof",
        vec![("user_id", Avro::Long(1))],
        vec![],
        1_790_000_000_000_000,
    ));
    assert_eq!(unknown_view.reason, RejectReason::UnknownTarget);
    assert!(
        unknown_view.to_string().contains("`user_prof`"),
        "{unknown_view}"
    );
    let no_key = reject(upsert(
        "user_profile",
        vec![],
        vec![],
        1_790_000_000_000_000,
    ));
    assert_eq!(no_key.reason, RejectReason::MissingKey);
    let wrong = reject(upsert(
        "user_profile",
        vec![("user_id", Avro::Long(1))],
        vec![("photo_count", Avro::String("3".into()))],
        1_790_000_000_000_000,
    ));
    assert_eq!(wrong.reason, RejectReason::WrongType);
    assert!(
        wrong.to_string().contains("feature `photo_count` is int32"),
        "{wrong}"
    );
    let unknown_feature = reject(upsert(
        "user_profile",
        vec![("user_id", Avro::Long(1))],
        vec![("shoe_size", Avro::Int(44))],
        1_790_000_000_000_000,
    ));
    assert_eq!(unknown_feature.reason, RejectReason::UnknownTarget);
    let late = reject(upsert(
        "user_profile",
        vec![("user_id", Avro::Long(1))],
        vec![],
        5,
    ));
    assert_eq!(late.reason, RejectReason::AbsurdEventTime);
}

/// A deletion command, encoded and decoded with the bundled schema.
fn deletion(entity: &str, keys: Vec<(&str, Avro)>, event_time_micros: i64) -> Avro {
    let schema = Schema::parse_str(ENTITY_DELETED_AVSC).unwrap();
    round_trip(
        &schema,
        vec![
            ("entity".into(), Avro::String(entity.into())),
            (
                "keys".into(),
                Avro::Map(keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
            ),
            (
                "event_time".into(),
                Avro::TimestampMicros(event_time_micros),
            ),
        ],
    )
}

#[test]
fn a_deletion_command_names_the_entity_key_and_time() {
    let definitions = contract::example_definitions();
    let find = |name: &str| {
        definitions
            .entities
            .iter()
            .find(|entity| entity.name.as_str() == name)
    };
    let command = deletion(
        "user",
        vec![("user_id", Avro::Long(5))],
        1_790_000_000_000_000,
    );
    let deleted = project_deletion(&command, find, NOW_MICROS).expect("projects");
    assert_eq!(deleted.entity.name.as_str(), "user");
    assert_eq!(
        deleted.key,
        EntityKey::new(vec![KeyPart::Int64(5)]).unwrap()
    );
    assert_eq!(deleted.event_time_micros, 1_790_000_000_000_000);

    let reason = |command: Avro| {
        project_deletion(&command, find, NOW_MICROS)
            .expect_err("rejected")
            .reason
    };
    assert_eq!(
        reason(deletion(
            "usr",
            vec![("user_id", Avro::Long(5))],
            1_790_000_000_000_000
        )),
        RejectReason::UnknownTarget
    );
    assert_eq!(
        reason(deletion(
            "user",
            vec![("id", Avro::Long(5))],
            1_790_000_000_000_000
        )),
        RejectReason::MissingKey
    );
    assert_eq!(
        reason(deletion(
            "user",
            vec![("user_id", Avro::String("5".into()))],
            1_790_000_000_000_000
        )),
        RejectReason::WrongType
    );
    assert_eq!(
        reason(deletion("user", vec![("user_id", Avro::Long(5))], 5)),
        RejectReason::AbsurdEventTime
    );
}

#[test]
fn a_registry_schema_without_a_filtered_field_is_a_mismatch() {
    let (entity, mut activity) = view(&contract::example_definitions(), "user_activity");
    let schema = events::match_event_schema();
    assert_eq!(
        quiver_avro::mapping::view_mismatches(&entity, &activity, &schema),
        Vec::<String>::new()
    );
    activity.features[0].filter = Some(quiver_core::filter::Filter::NotNull("device".into()));
    activity.features[1].filter = Some(quiver_core::filter::Filter::IsNull("referrer".into()));
    let problems = quiver_avro::mapping::view_mismatches(&entity, &activity, &schema);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("the filter of feature `last_country`: field `device` is Avro record"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("field `referrer` not found"),
        "{problems:?}"
    );
}
