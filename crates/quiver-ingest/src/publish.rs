//! What the ingester sends to Kafka: dead letters, and invalidations of deleted entities.
//!
//! Both are awaited until Kafka has them (`acks=all`, idempotent producer), because the offsets
//! of the records behind them are committed right after.

use std::time::Duration;

use quiver_kafka::KafkaConnection;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::IngestError;
use crate::route::DeadLetterReason;

/// A producer bound to one topic.
pub(crate) struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Publisher {
    pub(crate) fn new(kafka: &KafkaConnection, topic: &str) -> Result<Self, IngestError> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(Publisher {
            producer,
            topic: topic.to_owned(),
        })
    }

    async fn send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), IngestError> {
        let mut record = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| IngestError::Kafka(error))
    }

    /// Sends a record that cannot be used, with its original bytes, key and headers, and
    /// `quiver.*` headers saying why, where it came from, and for which view (empty when no view
    /// could be told). A producer's own `quiver.*` headers (a record dead-lettered before and
    /// replayed) are replaced, so each header says what this ingester found.
    pub(crate) async fn dead_letter(
        &self,
        message: &OwnedMessage,
        view: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), IngestError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = producer_headers(message)
            .insert(header("quiver.reason", reason.reason))
            .insert(header("quiver.detail", &reason.detail))
            .insert(header("quiver.source.topic", message.topic()))
            .insert(header("quiver.source.partition", &partition))
            .insert(header("quiver.source.offset", &offset))
            .insert(header("quiver.view", view));
        self.send(
            message.key(),
            message.payload().unwrap_or_default(),
            headers,
        )
        .await?;
        tracing::warn!(
            reason = reason.reason,
            detail = %reason.detail,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            view,
            "record dead-lettered"
        );
        Ok(())
    }

    /// Announces that an entity's values are deleted, so serving nodes drop them from their
    /// caches: the deletion command as a bare Avro datum of `entity_deleted.avsc`, keyed by
    /// the entity key, with a `quiver.entity` header.
    pub(crate) async fn invalidation(
        &self,
        entity: &str,
        key: &str,
        command: &[u8],
    ) -> Result<(), IngestError> {
        let headers = OwnedHeaders::new().insert(header("quiver.entity", entity));
        self.send(Some(key.as_bytes()), command, headers).await
    }
}

/// The record's own headers, less those in Quiver's `quiver.` namespace.
fn producer_headers(message: &OwnedMessage) -> OwnedHeaders {
    let Some(headers) = message.headers() else {
        return OwnedHeaders::new();
    };
    headers
        .iter()
        .filter(|own| !own.key.starts_with(QUIVER_HEADER_PREFIX))
        .fold(OwnedHeaders::new(), |kept, own| kept.insert(own))
}

const QUIVER_HEADER_PREFIX: &str = "quiver.";

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
