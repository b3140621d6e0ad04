//! Compiles proto/quiver/v1 into Rust types and tonic stubs.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs no system package;
//! a `PROTOC` in the environment still wins, for platforms the vendored binaries do not cover.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [proto_root.join("quiver/v1/feature_service.proto")];

    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    // The descriptor set serves gRPC server reflection, so grpcurl needs no proto files.
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("quiver_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        // Undecodable requests are the caller's mistake: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::QuiverCodec")
        .compile_with_config(config, &protos, &[proto_root])?;
    println!("cargo:rerun-if-env-changed=PROTOC");
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
