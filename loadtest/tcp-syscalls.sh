#!/usr/bin/env bash
# Syscalls and io_uring work per short layer-4 connection (tcp-short: connect, 1 byte each way,
# close) of ringway, ringway-base and HAProxy, one worker each: perf stat on tracepoints attached
# to the proxy while tcpbench runs, divided by the connections it completed. Placement as
# tcp-bulk's split default: the proxy alone on the first CPU, sink and load generator on the
# last.
#
#   flock /work/loadtest.lock loadtest/tcp-syscalls.sh [--seconds N] [--baseline BIN]
#
# Needs a release build of ringway (RINGWAY_BIN or $CARGO_TARGET_DIR/release/ringway), perf,
# haproxy and loadtest/tcpbench (built here when missing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
HOST=127.0.0.1 SINK_PORT=18100
declare -A PORT=([ringway]=18101 [ringway-base]=18104 [haproxy]=18103)
seconds=5 baseline=${RINGWAY_BASELINE_BIN:-} conns=16
while (($#)); do
  case $1 in
    --seconds|--duration) seconds=$2; shift ;;
    --baseline) baseline=$2; shift ;;
    --conns) conns=$2; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tcp-syscalls.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
RINGWAY=${RINGWAY_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ringway}
TCPBENCH=$HERE/tcpbench/target/release/tcpbench
[[ -x $TCPBENCH ]] || (cd "$HERE/tcpbench" && CARGO_TARGET_DIR="$HERE/tcpbench/target" cargo build --release -q)
read -ra CPUS <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
PROXY_CPU=${CPUS[0]} GEN_CPU=${CPUS[-1]}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringway-tcp-syscalls.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$RUN_DIR"; }
trap cleanup EXIT
ringway_conf() {
  printf 'workers: 1\npin_workers: false\nlog: { level: warn }\nlisteners:\n  - name: t\n    listen: "%s:%s"\n    protocol: tcp\n    upstream: sink\nupstreams:\n  sink:\n    targets: ["%s:%s"]\n' \
    "$HOST" "$1" "$HOST" "$SINK_PORT"
}
taskset -c "$GEN_CPU" "$TCPBENCH" sink "$HOST:$SINK_PORT" >/dev/null 2>&1 & PIDS+=($!)
declare -A PID=()
proxies=(ringway)
ringway_conf "${PORT[ringway]}" >"$RUN_DIR/ringway.yaml"
taskset -c "$PROXY_CPU" "$RINGWAY" --config "$RUN_DIR/ringway.yaml" >"$RUN_DIR/ringway.log" 2>&1 & PID[ringway]=$!; PIDS+=($!)
if [[ -n $baseline ]]; then
  proxies+=(ringway-base)
  ringway_conf "${PORT[ringway-base]}" >"$RUN_DIR/base.yaml"
  taskset -c "$PROXY_CPU" "$baseline" --config "$RUN_DIR/base.yaml" >"$RUN_DIR/base.log" 2>&1 & PID[ringway-base]=$!; PIDS+=($!)
fi
if command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]]; then
  proxies+=(haproxy)
  printf 'global\n    nbthread 1\n    maxconn 4096\ndefaults\n    mode tcp\n    option splice-request\n    option splice-response\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\nlisten t\n    bind %s:%s\n    server sink %s:%s\n' \
    "$HOST" "${PORT[haproxy]}" "$HOST" "$SINK_PORT" >"$RUN_DIR/haproxy.cfg"
  taskset -c "$PROXY_CPU" "$(command -v haproxy || echo /usr/sbin/haproxy)" -db -f "$RUN_DIR/haproxy.cfg" >"$RUN_DIR/haproxy.log" 2>&1 & PID[haproxy]=$!; PIDS+=($!)
fi
sleep 1
EVENTS='raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,context-switches'
EVENTS+=',syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_splice,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto'
EVENTS+=',syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_ioctl,syscalls:sys_enter_setsockopt'
EVENTS+=',syscalls:sys_enter_getsockopt,syscalls:sys_enter_getsockname,syscalls:sys_enter_socket,syscalls:sys_enter_connect'
EVENTS+=',syscalls:sys_enter_shutdown,syscalls:sys_enter_close,syscalls:sys_enter_accept4,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl'
EVENTS+=',syscalls:sys_enter_fcntl,syscalls:sys_enter_pipe2'
echo "tcp-short, $conns concurrent clients, ${seconds}s; per connection (proxy on CPU $PROXY_CPU, sink+load on CPU $GEN_CPU)"
for p in "${proxies[@]}"; do
  taskset -c "$GEN_CPU" "$TCPBENCH" short "$HOST:${PORT[$p]}" 1 "$conns" >/dev/null
  perf stat -x, -o "$RUN_DIR/$p.perf" -e "$EVENTS" -p "${PID[$p]}" >/dev/null 2>&1 & perf=$!
  sleep 0.5
  out=$(taskset -c "$GEN_CPU" "$TCPBENCH" short "$HOST:${PORT[$p]}" "$seconds" "$conns")
  kill -INT "$perf"; wait "$perf" 2>/dev/null || true
  n=$(sed -n 's/.*\bbytes=\([0-9]*\).*/\1/p' <<<"$out")
  python3 - "$p" "$n" "$RUN_DIR/$p.perf" <<'PY'
import sys
p, n, f = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = {}
for line in open(f):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
        rows[parts[2].split(":")[-1].replace("sys_enter_", "")] = float(parts[0])
print(f"{p}: {n} connections")
for k, v in rows.items():
    if v:
        print(f"  {k:24} {v / n:8.2f}")
PY
done
