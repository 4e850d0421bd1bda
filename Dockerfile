# Build: docker build -t ecsdb .   Run: docker run -p 8080:8080 -v ecsdb-data:/data ecsdb
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin ecsdb --bin ecsdb-server

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data ecsdb \
    && mkdir -p /data && chown ecsdb /data
COPY --from=build /src/target/release/ecsdb /src/target/release/ecsdb-server /usr/local/bin/
USER ecsdb
ENV ECSDB_BIND=0.0.0.0:8080 \
    ECSDB_DATA_DIR=/data \
    ECSDB_METRICS_BIND=0.0.0.0:9090 \
    ECSDB_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080 9090
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/health || exit 1
STOPSIGNAL SIGTERM
CMD ["ecsdb-server"]
