"""gRPC stubs of `quiver.v1`, generated from proto/quiver/v1 by scripts/generate_protos.py."""
