//! Quiver's domain model: what a feature value is, how entities are keyed, and which names are valid.
//!
//! This crate is the centre of the hexagon. Adapters (the Kafka ingester, the ScyllaDB and embedded
//! online stores, the gRPC server) depend on it; it depends on none of them and does no I/O, so it
//! never imports tokio, tonic, scylla or rdkafka. A test in `tests/tidy.rs` keeps it that way.
//!
//! - [`value`]: the feature types an ML engineer may declare and the values they hold.
//! - [`key`]: entity keys, including composite keys, with a canonical byte encoding.
//! - [`name`]: identifiers for entities, views and features, and `view:feature` references.
//! - [`definition`]: the declared entities, feature views and services, and the versioned registry.
//! - [`filter`]: `where:` conditions over an event's fields, which decide what feeds a feature.
//! - [`plan`]: what applying a set of definitions would change, and whether it is safe.
//! - [`store`]: the online store port, which adapters implement.
//! - [`aggregate`]: windowed and lifetime aggregates as tiles, folded exactly once and combined
//!   at request time.
//! - [`apply`]: applying definitions through that port, safely against concurrent applies.
//! - [`ties`]: which of an entity's events at the same millisecond wins its features.
//! - [`history`]: what serving would have answered at past instants, from a view's events.
//! - [`read`]: what a read request resolves to against the registry, and each value's status.

pub mod aggregate;
pub mod apply;
pub mod definition;
pub mod filter;
pub mod history;
pub mod key;
pub mod name;
pub mod plan;
pub mod read;
pub mod secret;
pub mod store;
pub mod ties;
pub mod value;
