//! Listens to the ingester's invalidation topic and drops deleted entities from the cache.
//!
//! Every server reads every invalidation: each process joins a consumer group of its own and
//! starts at the end of the topic, since what was deleted before it started is not cached.

use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use quiver_avro::project::{ENTITY_DELETED_AVSC, project_deletion};
use quiver_core::definition::Registry;
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use quiver_core::store::FeatureStore;
use quiver_kafka::KafkaConnection;
use quiver_kafka::context::LoggingContext;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::FeatureServer;

/// Reads `topic` until `shutdown` resolves, invalidating each announced entity.
pub async fn listen<S: FeatureStore + 'static>(
    server: Arc<FeatureServer<S>>,
    kafka: &KafkaConnection,
    topic: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), rdkafka::error::KafkaError> {
    let group = format!(
        "quiver-serve-invalidations-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_millis())
    );
    let consumer: StreamConsumer<LoggingContext> = kafka
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create_with_context(LoggingContext::default())?;
    consumer.subscribe(&[topic])?;
    let schema = Schema::parse_str(ENTITY_DELETED_AVSC).expect("the built-in schema is valid");
    tracing::info!(topic, "listening for invalidations");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => return Ok(()),
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                consumer
                    .context()
                    .warn_consumer_error(&error, "retrying invalidations");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(payload) = message.payload() else {
            continue;
        };
        let deletion = decode(&schema, &server.registry(), payload);
        match deletion {
            Ok((entity, key)) => {
                server.invalidate(entity.as_str(), &key).await;
                tracing::debug!(%entity, %key, "cache invalidated");
            }
            Err(error) => {
                tracing::warn!(%error, offset = message.offset(), "unreadable invalidation skipped");
            }
        }
    }
}

/// The entity and key an invalidation names.
fn decode(
    schema: &Schema,
    registry: &Registry,
    mut payload: &[u8],
) -> Result<(Name, EntityKey), String> {
    let command = apache_avro::from_avro_datum(schema, &mut payload, None)
        .map_err(|error| error.to_string())?;
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_micros() as i64);
    let find = |name: &str| {
        registry
            .entities
            .iter()
            .find(|entity| entity.name.as_str() == name)
    };
    project_deletion(&command, find, now_micros)
        .map(|deletion| (deletion.entity.name.clone(), deletion.key))
        .map_err(|rejection| rejection.to_string())
}
