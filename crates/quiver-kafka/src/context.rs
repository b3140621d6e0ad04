//! What Quiver's Kafka clients log of librdkafka: its errors and warnings through `tracing`,
//! each distinct one once and then at growing intervals, and a consumer's assignments.
//!
//! librdkafka reports a lasting condition (a subscribed topic that was deleted, a broker that is
//! down) again on every retry, about once a second, for as long as it lasts. Logged each time,
//! that buries everything else, so a repeat within its interval is logged at debug level only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

/// The wait before the first repeat of a message is logged again; it doubles after each.
const FIRST_REPEAT_AFTER: Duration = Duration::from_secs(60);

/// The longest wait between two logs of the same message.
const LONGEST_REPEAT_AFTER: Duration = Duration::from_secs(3600);

/// Distinct messages remembered; past this the oldest memory is dropped, so a stream of
/// messages that differ (offsets in their text) cannot grow it.
const REMEMBERED_MESSAGES: usize = 256;

/// The context of every Quiver Kafka client: logs as the module says.
#[derive(Debug, Default)]
pub struct LoggingContext {
    repeats: RepeatFilter,
}

impl LoggingContext {
    /// Whether `message` should be logged at its own level now; `Some(n)` gives the repeats
    /// held back since it was last logged.
    pub fn log_now(&self, message: &str) -> Option<u64> {
        self.repeats.log_now(message, Instant::now())
    }

    /// Logs an error a client got back from librdkafka (a consumer's `recv`) at warning level,
    /// once and then at growing intervals, saying what the client does `then`.
    pub fn warn_consumer_error(&self, error: &KafkaError, then: &str) {
        match self.log_now(&error.to_string()) {
            Some(repeats) => tracing::warn!(%error, repeats, "kafka consumer error; {then}"),
            None => tracing::debug!(%error, "kafka consumer error (repeated); {then}"),
        }
    }
}

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => match self.log_now(message) {
                Some(repeats) => tracing::error!(facility, repeats, "librdkafka: {message}"),
                None => tracing::debug!(facility, "librdkafka (repeated): {message}"),
            },
            RDKafkaLogLevel::Warning => match self.log_now(message) {
                Some(repeats) => tracing::warn!(facility, repeats, "librdkafka: {message}"),
                None => tracing::debug!(facility, "librdkafka (repeated): {message}"),
            },
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match self.log_now(reason) {
            Some(repeats) => tracing::error!(%error, repeats, "kafka client error: {reason}"),
            None => tracing::debug!(%error, "kafka client error (repeated): {reason}"),
        }
    }
}

impl ConsumerContext for LoggingContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = %partition_list(partitions), "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = %partition_list(partitions), "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// `topic/0,topic/1`, as the logs name partitions.
fn partition_list(partitions: &rdkafka::TopicPartitionList) -> String {
    let names: Vec<String> = partitions
        .elements()
        .iter()
        .map(|partition| format!("{}/{}", partition.topic(), partition.partition()))
        .collect();
    names.join(",")
}

/// When each recent message was last logged, and how many repeats were held back since.
#[derive(Debug, Default)]
struct RepeatFilter {
    messages: Mutex<HashMap<String, Repeats>>,
}

#[derive(Debug, Clone, Copy)]
struct Repeats {
    next_log: Instant,
    interval: Duration,
    held_back: u64,
}

impl RepeatFilter {
    fn log_now(&self, message: &str, now: Instant) -> Option<u64> {
        let mut messages = self.messages.lock().unwrap_or_else(|poisoned| {
            // A panic elsewhere while holding the lock leaves counts only; they stay usable.
            poisoned.into_inner()
        });
        if let Some(repeats) = messages.get_mut(message) {
            if now < repeats.next_log {
                repeats.held_back += 1;
                return None;
            }
            let held_back = repeats.held_back;
            repeats.interval = (repeats.interval * 2).min(LONGEST_REPEAT_AFTER);
            repeats.next_log = now + repeats.interval;
            repeats.held_back = 0;
            return Some(held_back);
        }
        if messages.len() >= REMEMBERED_MESSAGES {
            let oldest = messages
                .iter()
                .min_by_key(|(_, repeats)| repeats.next_log)
                .map(|(message, _)| message.clone());
            messages.remove(&oldest.unwrap_or_default());
        }
        messages.insert(
            message.to_owned(),
            Repeats {
                next_log: now + FIRST_REPEAT_AFTER,
                interval: FIRST_REPEAT_AFTER,
                held_back: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_logged_once_then_at_doubling_intervals_with_its_repeats() {
        let filter = RepeatFilter::default();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(filter.log_now("topic gone", at(0)), Some(0));
        for second in 1..60 {
            assert_eq!(filter.log_now("topic gone", at(second)), None);
        }
        assert_eq!(
            filter.log_now("broker down", at(30)),
            Some(0),
            "another message"
        );
        assert_eq!(filter.log_now("topic gone", at(60)), Some(59));
        assert_eq!(
            filter.log_now("topic gone", at(179)),
            None,
            "next after 120 s"
        );
        assert_eq!(filter.log_now("topic gone", at(180)), Some(1));
    }

    #[test]
    fn the_interval_stops_growing_at_an_hour() {
        let filter = RepeatFilter::default();
        let mut now = Instant::now();
        filter.log_now("topic gone", now);
        for _ in 0..10 {
            now += LONGEST_REPEAT_AFTER;
            assert_eq!(filter.log_now("topic gone", now), Some(0));
        }
    }

    #[test]
    fn memory_is_bounded_when_every_message_differs() {
        let filter = RepeatFilter::default();
        let now = Instant::now();
        for offset in 0..(REMEMBERED_MESSAGES * 4) {
            assert_eq!(filter.log_now(&format!("offset {offset}"), now), Some(0));
        }
        assert_eq!(filter.messages.lock().unwrap().len(), REMEMBERED_MESSAGES);
    }
}
