# kubesched scheduler extender (sidecar of a dedicated kube-scheduler).
# Build from the repository root:
#   docker build -f deploy/docker/extender.Dockerfile -t kubesched/extender:0.1.0 .
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kubesched-scheduler --bin kubesched-extender \
 && cp target/release/kubesched-extender /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/kubesched-extender /usr/local/bin/kubesched-extender
USER 65532:65532
EXPOSE 8888
ENTRYPOINT ["/usr/local/bin/kubesched-extender"]
