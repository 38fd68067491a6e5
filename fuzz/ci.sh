#!/usr/bin/env bash
# CI: every fuzz target for FUZZ_SECONDS (60 by default), one after another. Builds once
# (the first target's build compiles ringway instrumented; the others reuse it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds="${FUZZ_SECONDS:-60}"
for target in request_head response_head chunked proxy_protocol config h2_request; do
    echo "== fuzz $target for ${seconds}s"
    "$here/run.sh" "$target" "$seconds"
done
echo "fuzz: every target ran ${seconds}s without a crash"
