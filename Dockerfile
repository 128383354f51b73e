# syntax=docker/dockerfile:1
#
# sni-router: a TLS passthrough SNI router for envoy-configs values files.
#
#   docker build -t sni-router:0.1.0 .
#   docker run --rm -p 5432:5432 -p 6379:6379 -p 127.0.0.1:9901:9901 \
#     -v "$PWD/values.yaml:/etc/sni-router/values.yaml:ro" sni-router:0.1.0
#
# Build stage: the release binary (fat LTO, one codegen unit, see Cargo.toml)
# from the locked dependency graph, on Debian 12 (glibc 2.36). Runtime stage:
# distroless cc on Debian 12, the same glibc plus libgcc_s and CA certificates,
# no shell and no package manager, running as uid/gid 65532 (nonroot).
# Expected size: about 30 MB unpacked, 12 MB compressed: distroless cc-debian12
# (~23 MB) plus the stripped binary (6.0 MiB, 2.9 MB gzipped, built with
# Rust 1.95 for x86_64).
#
# Ports below 1024 (443) as non-root: Docker 20.10+ and containerd 2.0+ set
# net.ipv4.ip_unprivileged_port_start=0 in every container already; elsewhere
# set that sysctl (`docker run --sysctl net.ipv4.ip_unprivileged_port_start=0`,
# or the pod's securityContext.sysctls, as `sni-router render --to kubernetes`
# does) or listen on a high port (`--listen 443=0.0.0.0:8443`). Adding
# NET_BIND_SERVICE does not help a non-root process without file capabilities.
# See docs/kubernetes.md.
#
# tests/packaging.rs checks this file: hadolint, the build command, the
# paths, and that the context .dockerignore admits is enough to build.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config/values.example.yaml ./config/values.example.yaml
# Strip symbols: 6 MB instead of 20 MB; panics still print a message.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/sni-router /out/sni-router

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sni-router /sni-router
# A default config so `docker run` serves something; in Kubernetes the
# ConfigMap is mounted over /etc/sni-router (a directory, so reloads see updates).
COPY config/values.example.yaml /etc/sni-router/values.yaml
USER 65532:65532
EXPOSE 443 5432 6379 9901
ENTRYPOINT ["/sni-router"]
CMD ["run", "--config", "/etc/sni-router/values.yaml", "--admin", "0.0.0.0:9901"]
