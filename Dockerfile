# syntax=docker/dockerfile:1
#
# Container images for medic: one build stage compiles every binary once,
# then two small runtime images take what they need.
#
#   docker build --target coordinator -t medic-coordinator .
#   docker build --target agent       -t medic-agent .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
# The image build itself is not run by scripts/test (no container engine
# there); crates/medic-coordinator/tests/container.rs checks this file's
# essentials and hadolint lints it. See docs/operations.md, "Container image".

# The toolchain CI tests with; the workspace needs at least its rust-version.
ARG RUST_VERSION=1.95

# === build ===
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The coordinator is built with the `etcd` feature (replicated coordinators,
# [store] kind = "etcd"), whose etcd-client compiles etcd's .proto files
# with a system protoc; medic's own protos use the protoc medic-proto
# vendors. Versions are not pinned: see the agent stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
# --locked: exactly the dependency versions CI tested. The cache mounts keep
# the registry and target directory between builds (not in the image), so the
# binaries are copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p medic-coordinator -p medic-agent -p medic-cli \
        --features medic-coordinator/etcd \
    && mkdir -p /out/bin /out/state \
    && cp target/release/medic-coordinator target/release/medic-agent \
          target/release/medicctl /out/bin/

# === coordinator ===
# distroless/cc: glibc and libgcc, no shell, no package manager. Time zones
# (chrono-tz) and the webhook trust roots (webpki-roots) are compiled into
# the binary, so nothing else is needed.
FROM gcr.io/distroless/cc-debian12:nonroot AS coordinator
COPY --from=build /out/bin/medic-coordinator /out/bin/medicctl /usr/bin/
COPY config/coordinator.toml /etc/medic/coordinator.toml
# server.state_dir, owned by the unprivileged user. Mount a volume here
# (Kubernetes: the StatefulSet's volumeClaimTemplate): the store is the
# coordinator's memory of grants, budgets, pauses and quarantines.
COPY --from=build --chown=65532:65532 /out/state /var/lib/medic
# The distroless "nonroot" user (uid/gid 65532). The coordinator needs no
# privilege at all: its ports are above 1024.
USER 65532:65532
# gRPC (agents, operators, health, reflection) and HTTP (/metrics, /healthz):
# server.listen and server.metrics_listen. The example config binds them to
# loopback; a deployment mounts its own config over it.
EXPOSE 7470 7471
# No HEALTHCHECK: Kubernetes ignores it (the manifests probe /healthz), and
# this image has no shell or HTTP client to run one with.
ENTRYPOINT ["/usr/bin/medic-coordinator"]
CMD ["run", "--config", "/etc/medic/coordinator.toml", "--log-format", "json"]

# === agent ===
# Debian slim, because the agent drives the host's systemd through
# systemctl (the systemd detector, restart commands, `systemctl reboot`),
# and the Kubernetes init container reads the node's labels with curl + jq.
FROM debian:bookworm-slim AS agent
# Versions are not pinned: the bookworm archive replaces a version with its
# security update, so a pin breaks the build instead of making it repeatable.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends systemd curl jq ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/medic-agent /usr/bin/
COPY deploy/container/medic-render-agent-config /usr/bin/
COPY config/agent.toml /etc/medic/agent.toml
# Root, on purpose: the agent signals jobs of any user and asks the host's
# systemd to restart units and reboot. Kubernetes drops every capability but
# the few it needs (deploy/kubernetes/agent-daemonset.yaml explains each).
# Its metrics port (metrics_listen) is off by default; the DaemonSet turns
# it on at 7472.
EXPOSE 7472
ENTRYPOINT ["/usr/bin/medic-agent"]
CMD ["run", "--config", "/etc/medic/agent.toml", "--log-format", "json"]
