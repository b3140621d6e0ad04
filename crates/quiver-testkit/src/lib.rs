//! Connections to the real test servers, with names that keep parallel tests apart.
//!
//! Integration tests talk to a real Kafka broker and a real CQL database (Cassandra standing in
//! for ScyllaDB), started by `scripts/services.sh up`. Where they are is read from the
//! environment:
//!
//! | variable                | default                                    |
//! |-------------------------|--------------------------------------------|
//! | `QUIVER_KAFKA_BROKERS`  | `127.0.0.1:$QUIVER_KAFKA_PORT` (port 9092) |
//! | `QUIVER_CQL_NODES`      | `127.0.0.1:$QUIVER_CQL_PORT` (port 9042), comma-separated |
//!
//! A test that needs a server that is not there fails within seconds, with a message naming the
//! command that starts it. It never skips and never hangs on a client's reconnect loop.
//!
//! [`events`] builds sample Avro events from the bundled schemas; [`contract`] is the test suite
//! every online store adapter must pass; [`stream`] generates a stream of events with resent
//! copies and the truth of its aggregates.

pub mod contract;
pub mod events;
pub mod golden;
pub mod sample;
pub mod stream;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;

/// The command that starts every server the integration tests need.
pub const START_COMMAND: &str = "scripts/services.sh up";

const REACHABLE_TIMEOUT: Duration = Duration::from_secs(2);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka's bootstrap servers, after checking that the first one accepts connections.
pub fn kafka_brokers() -> String {
    let brokers = setting("QUIVER_KAFKA_BROKERS", "QUIVER_KAFKA_PORT", 9092);
    let first = brokers.split(',').next().unwrap_or_default().trim();
    assert_reachable("Kafka", "QUIVER_KAFKA_BROKERS", first);
    brokers
}

/// A client configuration for the test broker, ready for producers, consumers and admin clients.
pub fn kafka_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka_brokers())
        .set("socket.connection.setup.timeout.ms", "5000");
    config
}

/// Creates a topic with a unique name made from `prefix` and returns the name.
pub async fn create_topic(prefix: &str, partitions: i32) -> String {
    let name = unique_name(prefix);
    let admin: AdminClient<DefaultClientContext> = kafka_config()
        .create()
        .expect("an admin client for the test broker");
    let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(SETUP_TIMEOUT));
    let results = within_setup_timeout(
        "creating a Kafka topic",
        admin.create_topics([&topic], &options),
    )
    .await
    .expect("the broker answers CreateTopics");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("creating Kafka topic {topic} failed: {code}");
        }
    }
    name
}

/// Deletes `topic`, as an operator might while an ingester still reads it.
pub async fn delete_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka_config()
        .create()
        .expect("an admin client for the test broker");
    let options = AdminOptions::new().operation_timeout(Some(SETUP_TIMEOUT));
    let results = within_setup_timeout(
        "deleting a Kafka topic",
        admin.delete_topics(&[topic], &options),
    )
    .await
    .expect("the broker answers DeleteTopics");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("deleting Kafka topic {topic} failed: {code}");
        }
    }
}

/// Whether consumer group `group` has committed every partition of `topics` (name and
/// partition count) up to its end; `false` also while the broker cannot tell yet.
pub async fn committed_to_end(group: &str, topics: &[(String, i32)]) -> bool {
    let mut config = kafka_config();
    config.set("group.id", group);
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        // A consumer that never subscribes: asking a subscribed one for its committed offsets
        // makes its close hang with rdkafka 0.39 (see ARCHITECTURE.md).
        let checker: BaseConsumer = config.create().expect("a consumer");
        let mut partitions = TopicPartitionList::new();
        for (topic, count) in &topics {
            for partition in 0..*count {
                partitions.add_partition(topic, partition);
            }
        }
        // A broker that just started may still be electing the group coordinator: that is
        // "not yet", and the caller's deadline bounds the wait.
        let Ok(committed) = checker.committed_offsets(partitions, SETUP_TIMEOUT) else {
            return false;
        };
        committed.elements().iter().all(|element| {
            checker
                .fetch_watermarks(element.topic(), element.partition(), SETUP_TIMEOUT)
                .is_ok_and(|(_, high)| element.offset() == Offset::Offset(high))
        })
    })
    .await
    .expect("the check runs")
}

/// Waits until `group` has committed every partition of `topics` to its end, panicking after
/// `timeout`.
pub async fn wait_until_committed(group: &str, topics: &[(String, i32)], timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !committed_to_end(group, topics).await {
        assert!(
            std::time::Instant::now() < deadline,
            "group {group} did not commit {topics:?} to the end within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Produces `records` (key, value) to `topic`, all in flight at once, and waits until Kafka
/// has every one.
pub async fn produce(topic: &str, records: &[(Option<String>, Vec<u8>)]) {
    let records: Vec<ProducedRecord<'_>> = records
        .iter()
        .map(|(key, payload)| ProducedRecord {
            key: key.as_deref(),
            payload,
            headers: &[],
        })
        .collect();
    produce_records(topic, &records).await;
}

/// A record to produce, with headers of its own as a producer might set them.
#[derive(Debug, Clone, Copy)]
pub struct ProducedRecord<'a> {
    pub key: Option<&'a str>,
    pub payload: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
}

/// Produces `records` to `topic`, all in flight at once, and waits until Kafka has every one.
pub async fn produce_records(topic: &str, records: &[ProducedRecord<'_>]) {
    let producer: FutureProducer = kafka_config()
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    let mut deliveries = Vec::with_capacity(records.len());
    for produced in records {
        let mut record = FutureRecord::to(topic)
            .payload(produced.payload)
            .headers(owned_headers(produced.headers));
        if let Some(key) = produced.key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => panic!("producing to {topic}: {error}"),
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("the producer stays open")
            .unwrap_or_else(|error| panic!("producing to {topic}: {}", error.0));
    }
}

fn owned_headers(headers: &[(&str, &str)]) -> OwnedHeaders {
    headers
        .iter()
        .fold(OwnedHeaders::new(), |all, &(key, value)| {
            all.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// Reads `count` records of a one-partition `topic` from its beginning, panicking if they do not
/// arrive within `timeout`.
pub fn read_topic(topic: &str, count: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let reader: BaseConsumer = kafka_config()
        .set("group.id", unique_name("reader"))
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("a partition");
    reader.assign(&assignment).expect("assigns");
    let deadline = std::time::Instant::now() + timeout;
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {count} records from {topic} within {timeout:?}",
            messages.len()
        );
        if let Some(message) = reader.poll(Duration::from_millis(200)) {
            messages.push(message.expect("reads").detach());
        }
    }
    messages
}

/// The CQL contact points.
pub fn cql_nodes() -> Vec<String> {
    setting("QUIVER_CQL_NODES", "QUIVER_CQL_PORT", 9042)
        .split(',')
        .map(|node| node.trim().to_owned())
        .filter(|node| !node.is_empty())
        .collect()
}

/// A session to the test database, at consistency ONE: one node, so quorum adds nothing.
pub async fn cql_session() -> Session {
    let nodes = cql_nodes();
    assert_reachable(
        "the CQL database (Cassandra)",
        "QUIVER_CQL_NODES",
        &nodes[0],
    );
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::One)
        .request_timeout(Some(SETUP_TIMEOUT))
        .build();
    let builder = SessionBuilder::new()
        .known_nodes(&nodes)
        .connection_timeout(REACHABLE_TIMEOUT)
        .default_execution_profile_handle(profile.into_handle());
    within_setup_timeout("connecting to the CQL database", builder.build())
        .await
        .unwrap_or_else(|error| panic!("cannot open a CQL session to {nodes:?}: {error}"))
}

/// Tries of a setup request that the test servers may refuse for a moment.
const SETUP_TRIES: u32 = 5;

/// Creates a keyspace with a unique name (replication factor 1) and returns the name.
pub async fn create_keyspace(session: &Session, prefix: &str) -> String {
    let name = unique_name(prefix);
    let statement = format!(
        "CREATE KEYSPACE IF NOT EXISTS {name} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    );
    // Tried again when it fails: the driver's schema agreement after it reads system tables
    // with prepared statements, which the test Cassandra's small statement cache may evict.
    let mut tries = 0;
    loop {
        tries += 1;
        let created = within_setup_timeout(
            "creating a keyspace",
            session.query_unpaged(statement.as_str(), ()),
        )
        .await;
        match created {
            Ok(_) => return name,
            Err(error) if tries >= SETUP_TRIES => {
                panic!("creating keyspace {name} failed {tries} times: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A name no other test, in this run or an earlier one against the same servers, has used:
/// `prefix` then the time, the process id and a per-process counter. It is a valid CQL identifier
/// and Kafka topic name as long as `prefix` is lower-case letters, digits and underscores.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    assert!(
        prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "name prefix {prefix:?} must be lower-case letters, digits and underscores"
    );
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let name = format!(
        "{prefix}_{}_{}_{}",
        seconds % 1_000_000,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    assert!(
        name.len() <= 48,
        "{name} is longer than CQL's 48-character limit; shorten the prefix"
    );
    name
}

fn setting(variable: &str, port_variable: &str, default_port: u16) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        let port = std::env::var(port_variable).unwrap_or_else(|_| default_port.to_string());
        format!("127.0.0.1:{port}")
    })
}

/// Panics with a message naming [`START_COMMAND`] unless `address` accepts a TCP connection
/// within [`REACHABLE_TIMEOUT`].
fn assert_reachable(server: &str, variable: &str, address: &str) {
    let resolved: Vec<SocketAddr> = address
        .to_socket_addrs()
        .unwrap_or_else(|error| panic!("{variable}={address} is not a host:port address: {error}"))
        .collect();
    let mut last_error = None;
    for candidate in &resolved {
        match TcpStream::connect_timeout(candidate, REACHABLE_TIMEOUT) {
            Ok(_) => return,
            Err(error) => last_error = Some(error),
        }
    }
    let reason = last_error.map_or_else(|| "no address resolved".to_owned(), |e| e.to_string());
    panic!(
        "{server} is not reachable at {address} ({reason}). Start the test servers with \
         `{START_COMMAND}`, or point {variable} at running ones."
    );
}

async fn within_setup_timeout<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(SETUP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {SETUP_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_valid_identifiers() {
        let first = unique_name("ks");
        let second = unique_name("ks");
        assert_ne!(first, second);
        for name in [&first, &second] {
            assert!(name.starts_with("ks_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn an_unreachable_server_fails_fast_naming_the_start_command() {
        // Port 1 on loopback is never a test server; the refusal is immediate.
        let panic = std::panic::catch_unwind(|| {
            assert_reachable("Kafka", "QUIVER_KAFKA_BROKERS", "127.0.0.1:1")
        })
        .expect_err("nothing listens on port 1");
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(message.contains(START_COMMAND), "{message}");
        assert!(message.contains("127.0.0.1:1"), "{message}");
    }
}
