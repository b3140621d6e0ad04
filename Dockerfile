# syntax=docker/dockerfile:1
# The quiver binary in a small, non-root image: built on Debian with the Rust toolchain, run on
# distroless (glibc, OpenSSL and CA certificates, no shell) as user 65532.
#
#   docker build -t quiver .
#   docker run --rm -p 50051:50051 quiver serve --help

ARG RUST_VERSION=1.90
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# librdkafka is compiled from source (make, a C compiler), against the system OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ libssl-dev make pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package quiver \
    && install -D -m 0755 target/release/quiver /out/quiver

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="quiver" \
      org.opencontainers.image.description="Quiver, a real-time feature store: serve, ingest, apply" \
      org.opencontainers.image.source="https://github.com/quiver-feature-store/quiver" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/quiver /usr/local/bin/quiver
USER 65532:65532
# gRPC (serve), then the Prometheus metrics of ingest and serve.
EXPOSE 50051 9464 9465
ENTRYPOINT ["/usr/local/bin/quiver"]
CMD ["--help"]
