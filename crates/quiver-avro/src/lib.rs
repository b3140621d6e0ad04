//! Avro on the wire: the Confluent framing around each Kafka record, decoding record values with
//! writer/reader resolution, schema files on disk, and how Avro fields map to feature types and
//! events to feature values.
//!
//! Decoding Avro into feature values builds on this crate in the ingester; this crate itself stays
//! free of Kafka and of any runtime, so the quickstart's file source and the Kafka source share it.

pub mod decode;
pub mod mapping;
pub mod project;
pub mod schema_file;
pub mod wire;
