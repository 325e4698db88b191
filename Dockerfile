# Multi-stage build: compile with the Rust toolchain, run on a slim base as
# a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other members: cargo reads their manifests (the fuzz
# targets themselves are never built here).
COPY crates ./crates
COPY fuzz/Cargo.toml ./fuzz/
COPY templates ./templates
COPY static ./static
COPY examples ./examples
COPY benches ./benches
COPY .env.example ./
RUN cargo build --release --locked --bin qrlogin

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home qrlogin
COPY --from=build /src/target/release/qrlogin /usr/local/bin/qrlogin
USER qrlogin
ENV QRLOGIN_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/qrlogin"]
