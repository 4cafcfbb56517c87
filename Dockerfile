# syntax=docker/dockerfile:1.7
#
# The Trellis image: one `trellis` binary that every Deployment of a cell runs
# (`trellis serve <service>`, `trellis migrate`). Built in two stages so the runtime image holds the
# binary and the C runtime libraries only: no compiler, no shell, no package manager.
#
#   docker build -t trellis:dev .
#
# The `tilt` stage is for `tilt up` only (it wraps a binary built on the host); the default target
# is the last stage, `runtime`.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build -------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# protoc is vendored (protoc-bin-vendored) and TLS is rustls, so the slim image needs nothing more.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p trellis \
    && install -D -m 0755 target/release/trellis /out/trellis

# ---- tilt (development only: `tilt up` copies a host-built binary into a shell-capable image) ---
# The binary lives in /app, owned by the runtime user, so live updates can replace it.
FROM debian:${DEBIAN_RELEASE}-slim AS tilt
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin trellis \
    && install -d -o 65532 -g 65532 /app
COPY --chown=65532:65532 .tilt/trellis /app/trellis
USER 65532:65532
ENTRYPOINT ["/app/trellis"]

# ---- runtime -----------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates; the `nonroot` tag runs as UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="trellis" \
      org.opencontainers.image.description="Trellis: a multi-tenant business platform (one binary per cell service)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/trellis /usr/local/bin/trellis
USER 65532:65532
# The gateway's public and admin ports; services use 50061-50067 (gRPC) and 9061-9067 (admin).
EXPOSE 8080 9060
ENV BIND_HOST=0.0.0.0 \
    LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/trellis"]
CMD ["serve", "all"]
