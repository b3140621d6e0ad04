//! Reads the ingester's invalidation topic: each record names an entity deleted everywhere,
//! which every server drops from its cache.
//!
//! Every server reads every invalidation: each process joins a consumer group of its own and
//! starts at the end of the topic, since what was deleted before it started is not cached.

use std::time::Duration;

use apache_avro::Schema;
use quiver_avro::project::{ENTITY_DELETED_AVSC, project_deletion};
use quiver_core::definition::Registry;
use quiver_core::key::EntityKey;
use quiver_core::name::Name;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;

use crate::KafkaConnection;
use crate::context::LoggingContext;

/// How long to wait after a consumer error before reading again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// One entity to drop from every view of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub entity: Name,
    pub key: EntityKey,
}

/// A subscription to an invalidation topic.
pub struct Invalidations {
    consumer: StreamConsumer<LoggingContext>,
    schema: Schema,
}

impl std::fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidations").finish_non_exhaustive()
    }
}

impl Invalidations {
    /// Subscribes to `topic` from its end, in a consumer group of this process's own.
    pub fn subscribe(kafka: &KafkaConnection, topic: &str) -> Result<Self, KafkaError> {
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
        tracing::info!(topic, "listening for invalidations");
        Ok(Invalidations {
            consumer,
            schema: Schema::parse_str(ENTITY_DELETED_AVSC).expect("the built-in schema is valid"),
        })
    }

    /// The next invalidation, its entity resolved against `registry`. Consumer errors are
    /// logged (once, then at growing intervals) and reading goes on; an unreadable record is
    /// logged and skipped.
    pub async fn next(&self, registry: impl Fn() -> std::sync::Arc<Registry>) -> Invalidation {
        loop {
            let message = match self.consumer.recv().await {
                Ok(message) => message,
                Err(error) => {
                    self.consumer
                        .context()
                        .warn_consumer_error(&error, "retrying invalidations");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            let Some(payload) = message.payload() else {
                continue;
            };
            match decode(&self.schema, &registry(), payload) {
                Ok(invalidation) => return invalidation,
                Err(error) => {
                    tracing::warn!(%error, offset = message.offset(), "unreadable invalidation skipped");
                }
            }
        }
    }
}

/// The entity and key an invalidation names.
fn decode(
    schema: &Schema,
    registry: &Registry,
    mut payload: &[u8],
) -> Result<Invalidation, String> {
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
        .map(|deletion| Invalidation {
            entity: deletion.entity.name.clone(),
            key: deletion.key,
        })
        .map_err(|rejection| rejection.to_string())
}
