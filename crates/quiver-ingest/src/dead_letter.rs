//! The dead-letter topic: records that cannot be used, kept whole, with headers saying why.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

use crate::IngestError;
use crate::route::DeadLetterReason;

pub(crate) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetters {
    pub(crate) fn new(brokers: &str, topic: &str) -> Result<Self, IngestError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Sends the original bytes and key, and waits until Kafka has them: the record's offset is
    /// committed right after.
    pub(crate) async fn send(
        &self,
        message: &OwnedMessage,
        view: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), IngestError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(header("quiver.reason", reason.reason))
            .insert(header("quiver.detail", &reason.detail))
            .insert(header("quiver.source.topic", message.topic()))
            .insert(header("quiver.source.partition", &partition))
            .insert(header("quiver.source.offset", &offset))
            .insert(header("quiver.view", view));
        let mut record = FutureRecord::to(&self.topic)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| IngestError::Kafka(error))?;
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
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
