#!/usr/bin/env bash
# Runs one fuzz target for SECONDS on the stable toolchain: ./fuzz/run.sh TARGET SECONDS
#
# Harness: cargo-fuzz with libFuzzer (libfuzzer-sys). It is the one that works here on stable:
# cargo-fuzz passes the -Z flags libFuzzer instrumentation needs, which stable rustc accepts
# with RUSTC_BOOTSTRAP=1 (no nightly download, which this machine and CI cannot do), and
# libfuzzer-sys builds libFuzzer itself with the system C++ compiler. cargo-afl would need
# AFL++ built from source with LLVM plugins.
#
# Runs without a sanitizer (the code under test is safe Rust: what the fuzzer looks for are
# panics, overflows and debug assertions, which --debug-assertions turns on) to keep the
# instrumented build and the runs cheap on two cores. New inputs go to fuzz/corpus/TARGET
# (ignored by git); the committed seeds in fuzz/seeds/TARGET are read, never written.
# A crash leaves its input in fuzz/artifacts/TARGET and makes this script fail.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?usage: fuzz/run.sh TARGET SECONDS}"
seconds="${2:?usage: fuzz/run.sh TARGET SECONDS}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cd "$here"
mkdir -p "corpus/$target" "artifacts/$target"
args=(--sanitizer none --debug-assertions)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    args+=(--target-dir "$FUZZ_TARGET_DIR")
fi
cargo fuzz build "${args[@]}" "$target"
cargo fuzz run "${args[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/"
