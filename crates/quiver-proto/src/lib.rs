//! Rust types and gRPC stubs generated from `proto/quiver/v1`, Quiver's public API.
//!
//! The `.proto` files are the source of truth and carry the documentation of every field; this
//! crate only compiles them, so clients and the server share one definition, and converts
//! feature values between their wire and domain forms ([`values`], one `Value` message per value, and
//! [`columns`], one typed array per reply column).

pub mod codec;
pub mod columns;
pub mod values;

/// Version 1 of the API: `quiver.v1.FeatureService`.
pub mod v1 {
    #![allow(
        unreachable_pub,
        missing_debug_implementations,
        clippy::doc_lazy_continuation
    )]
    tonic::include_proto!("quiver.v1");

    /// The encoded descriptors of these protos, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quiver_descriptor");
}
