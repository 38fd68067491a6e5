# syntax=docker/dockerfile:1
# Build: a full Rust toolchain; run: a distroless base with no shell, as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ringway \
 && apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep target/release/ringway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ringway /usr/local/bin/ringway
# Non-root; the file capability above lets it bind ports below 1024 (the pod spec adds
# NET_BIND_SERVICE to the bounding set too).
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/ringway"]
CMD ["--config", "/etc/ringway/config.yaml"]
