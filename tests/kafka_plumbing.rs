//! Plumbing: rdkafka against the real Kafka 4 broker, with Avro records in the Confluent wire
//! format, produced across partitions and consumed back by a consumer group that commits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use quiver_avro::wire;
use quiver_testkit::events;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};

const EVENTS: i64 = 40;
const PARTITIONS: i32 = 3;
/// The id a registry would have given the match-event schema; any id works for framing.
const SCHEMA_ID: u32 = 7;
/// Generous: a consumer group's first join includes a rebalance.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn confluent_framed_avro_round_trips_through_a_consumer_group() {
    let schema = events::match_event_schema();
    let topic = quiver_testkit::create_topic("plumbing_avro", PARTITIONS).await;

    let producer: FutureProducer = quiver_testkit::kafka_config()
        .set("message.timeout.ms", "10000")
        .set("acks", "all")
        .create()
        .expect("a producer");
    let mut sent = BTreeMap::new();
    for n in 0..EVENTS {
        let event = events::match_event(&schema, n);
        let datum = apache_avro::to_avro_datum(&schema, event.clone()).expect("encodes");
        let payload = wire::encode(SCHEMA_ID, &datum);
        let key = format!("user-{}", n % 5);
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(error, _)| panic!("producing event {n} failed: {error}"));
        sent.insert(n, event);
    }

    let group = quiver_testkit::unique_name("plumbing_group");
    let consumer = group_consumer(&group);
    consumer.subscribe(&[&topic]).expect("subscribes");

    let mut received = BTreeMap::new();
    let mut partitions_seen = std::collections::BTreeSet::new();
    while received.len() < sent.len() {
        let message = next_message(&consumer, RECEIVE_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "only {} of {EVENTS} events came back in time",
                received.len()
            )
        });
        let framed = wire::decode(message.payload().expect("a payload")).expect("framed");
        assert_eq!(framed.schema_id, SCHEMA_ID);
        let event = apache_avro::from_avro_datum(&schema, &mut &*framed.datum, None)
            .expect("decodes with the writer schema");
        let Value::Record(fields) = &event else {
            panic!("decoded a non-record: {event:?}");
        };
        let Some((_, Value::Long(candidate))) =
            fields.iter().find(|(name, _)| name == "candidate_id")
        else {
            panic!("no candidate_id in {event:?}");
        };
        partitions_seen.insert(message.partition());
        received.insert(candidate - 1_000, event);
    }
    assert_eq!(
        received, sent,
        "every event decodes to exactly what was produced"
    );
    assert!(
        partitions_seen.len() > 1,
        "keys spread over partitions {partitions_seen:?}"
    );

    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("the group commits its offsets");
    // Leaving the group hands its partitions back. (rdkafka 0.39: calling `committed()` on a
    // subscribed consumer makes its drop hang, so the commit is proven by the next member.)
    drop(consumer);

    // A new member of the same group resumes from the committed offsets: it reads the record
    // produced after the commit, and none of the ones the group already consumed.
    let resumed = group_consumer(&group);
    resumed.subscribe(&[&topic]).expect("subscribes");
    let fresh = events::match_event(&schema, EVENTS);
    let payload = wire::encode(
        SCHEMA_ID,
        &apache_avro::to_avro_datum(&schema, fresh.clone()).expect("encodes"),
    );
    producer
        .send(
            FutureRecord::<(), _>::to(&topic).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(error, _)| panic!("producing the last event failed: {error}"));
    let message = next_message(&resumed, RECEIVE_TIMEOUT).expect("the resumed member reads");
    let framed = wire::decode(message.payload().expect("a payload")).expect("framed");
    let event = apache_avro::from_avro_datum(&schema, &mut &*framed.datum, None).expect("decodes");
    assert_eq!(
        event, fresh,
        "the first record after resuming is the new one"
    );
    drop(message);
    if let Some(replayed) = next_message(&resumed, Duration::from_secs(3)) {
        panic!(
            "a committed record was read again: partition {} offset {}",
            replayed.partition(),
            replayed.offset()
        );
    }
}

/// The next record, waiting up to `timeout`. `poll` also returns `None` after serving a group
/// event such as a rebalance, so one `None` does not mean the wait is over.
fn next_message(consumer: &BaseConsumer, timeout: Duration) -> Option<BorrowedMessage<'_>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(500)) {
            return Some(result.expect("the consumer reads without error"));
        }
    }
    None
}

fn group_consumer(group: &str) -> BaseConsumer {
    quiver_testkit::kafka_config()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("a consumer")
}
