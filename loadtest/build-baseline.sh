#!/usr/bin/env bash
# Build ringway at a git revision into a file, for `run.sh --baseline`:
#
#   loadtest/build-baseline.sh REV OUT
#
# REV is anything `git rev-parse` takes (HEAD, main, a tag, a commit). The revision is checked
# out into a temporary `git worktree` (the current checkout is not touched), built with
# `cargo build --release --locked`, the binary copied to OUT, and the worktree removed.
# Env: CARGO_TARGET_DIR (default /tmp/ringway-baseline-target; reused between builds, so a
# second build of a nearby revision is incremental), BUILD_TIMEOUT (seconds, default 3600).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

if (($# != 2)) || [[ $1 == -* ]]; then
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
rev=$1 out=$2
commit=$(git -C "$REPO" rev-parse --verify --quiet "$rev^{commit}") ||
  { echo "build-baseline.sh: no such revision '$rev'" >&2; exit 2; }
desc=$(git -C "$REPO" describe --always --abbrev=12 "$commit" 2>/dev/null || echo "$commit")
out_dir=$(dirname -- "$out")
mkdir -p -- "$out_dir"
out=$(cd "$out_dir" && pwd)/$(basename -- "$out")

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/ringway-baseline-target}
wt=$(mktemp -d "${TMPDIR:-/tmp}/ringway-baseline-wt.XXXXXX")
cleanup() {
  git -C "$REPO" worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
  git -C "$REPO" worktree prune 2>/dev/null || true
}
trap cleanup EXIT
rmdir "$wt" # git worktree add wants to create it
git -C "$REPO" worktree add --detach --quiet "$wt" "$commit"

echo "build-baseline.sh: ringway $desc ($commit) -> $out (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$wt" && timeout "${BUILD_TIMEOUT:-3600}" cargo build --release --locked --bin ringway)
# Copy through a temp name so a reader never sees half a binary.
cp -- "$CARGO_TARGET_DIR/release/ringway" "$out.tmp.$$"
mv -f -- "$out.tmp.$$" "$out"
echo "$commit $desc" >"$out.rev"
echo "build-baseline.sh: built $out ($desc)"
