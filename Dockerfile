# syntax=docker/dockerfile:1
# Build: a full Rust toolchain; run: a distroless base with no shell, as a non-root user.
#
# Base images are pinned by digest, so a rebuild gets the bytes that were tested. To move to
# newer ones: `docker buildx imagetools inspect rust:1-bookworm` (and the distroless image),
# then replace the digests below.
#
# Build with the commit stamped into `ringway --version` (the context has no .git):
#   docker build --build-arg RINGWAY_COMMIT=$(git rev-parse --short HEAD) -t ringway:0.1.0 .

# Dependencies alone, from the manifest and lockfile: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source edit.
FROM rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in http1 balance pool; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin ringway \
 && rm -rf src benches target/release/.fingerprint/ringway-* target/release/deps/ringway-* \
    target/release/deps/libringway-* target/release/build/ringway-*

FROM deps AS build
ARG RINGWAY_COMMIT=unknown
COPY src ./src
COPY benches ./benches
RUN RINGWAY_COMMIT="$RINGWAY_COMMIT" cargo build --release --locked --bin ringway \
 && apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep target/release/ringway

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/ringway /usr/local/bin/ringway
# Non-root; the file capability above lets it bind ports below 1024 (the pod spec adds
# NET_BIND_SERVICE to the bounding set too).
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/ringway"]
CMD ["--config", "/etc/ringway/config.yaml"]
