# Multi-stage build of the three binaries (api, worker, processor-sim).
# The build stage compiles with the locked dependency versions; the runtime
# stage is a slim Debian with only the binaries and CA certificates. The
# SQL is checked against the committed `.sqlx/` (`.cargo/config.toml` sets
# SQLX_OFFLINE), so the build needs no database.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/api target/release/worker target/release/processor-sim /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 payments
COPY --from=build /out/ /usr/local/bin/
USER payments
ENV LOG_FORMAT=json
CMD ["api", "serve"]
