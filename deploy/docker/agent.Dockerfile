# kubesched node agent (kubelet device plugin), run as a DaemonSet on GPU nodes.
# Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t kubesched/agent:0.1.0 .
# NVML (libnvidia-ml.so.1) is not in the image: the NVIDIA container runtime mounts the
# node's driver library into the container.
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhwloc-dev libudev-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kubesched-device-plugin --bin kubesched-agent \
 && cp target/release/kubesched-agent /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libhwloc15 libudev1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/kubesched-agent /usr/local/bin/kubesched-agent
# Runs as root: its sockets live in the kubelet's root-owned device-plugins folder.
ENTRYPOINT ["/usr/local/bin/kubesched-agent"]
