# One image with the three binaries (api, worker, processor-sim), built once
# and used by every service of docker-compose.yml.
#
# Dependencies are compiled in a layer of their own (cargo-chef, pinned): a
# change to our code rebuilds only our crates, the dependency layer comes
# from the cache. The build compiles with the locked dependency versions and
# checks the SQL against the committed `.sqlx/` (`.cargo/config.toml` sets
# SQLX_OFFLINE), so it needs no database. The runtime stage is a slim Debian
# of the same release with only the binaries and CA certificates.
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
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
