# syntax=docker/dockerfile:1
# The skycut image: one binary for every role (serve, frontend, worker, wobbly, migrate,
# demo-data), chosen by the container's command. Needs a host with a container engine
# (docs/operator-guide.md); `docker build -t skycut .` from the repository root.

# Build stage: the same toolchain and Debian release as CI, so the binary links against the
# cfitsio that the runtime stage installs.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libcfitsio-dev wcslib-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and incremental artefacts between builds; the binary is copied
# out of the cache because the mount disappears after this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p skycut \
    && install -D -m 0755 target/release/skycut /out/skycut

# Runtime stage: the cfitsio shared library and CA roots (S3/GCS over TLS), nothing else.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libcfitsio10 libwcs7 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skycut \
    && useradd --system --uid 10001 --gid skycut --home-dir /var/lib/skycut --create-home \
        --shell /usr/sbin/nologin skycut \
    && install -d -o skycut -g skycut /var/lib/skycut/bucket /var/lib/skycut/images
COPY --from=build /out/skycut /usr/local/bin/skycut
# Defaults for a container: listen on every interface, keep state in the home directory.
# bucket/ and images/ exist owned by skycut so that a new named volume mounted there (compose)
# starts writable by the non-root user. Configuration files and SKYCUT_* variables override both.
ENV SKYCUT_LISTEN=0.0.0.0:8080 \
    SKYCUT_DATA_DIR=/var/lib/skycut
WORKDIR /var/lib/skycut
USER 10001:10001
EXPOSE 8080 8081 9090
ENTRYPOINT ["skycut"]
CMD ["serve", "--demo"]
