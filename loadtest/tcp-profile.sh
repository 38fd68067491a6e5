#!/usr/bin/env bash
# Where a short layer-4 connection's CPU goes (tcp-short: connect, 1 byte each way, close):
# `perf record -g` on the proxy's core while tcpbench runs, then per proxy the top kernel and
# user symbols in microseconds per connection (samples / frequency / connections), and the
# TIME_WAIT sockets left on each side of the proxy. Placement as tcp-bulk's split default: the
# proxy alone on the first CPU, sink and load generator on the last.
#
#   flock /work/loadtest.lock loadtest/tcp-profile.sh [--seconds N] [--baseline BIN]
#                             [--proxies ringway,ringway-base,haproxy,nginx] [--top N] [--keep DIR]
#
# Needs a release build of ringway (RINGWAY_BIN or $CARGO_TARGET_DIR/release/ringway), perf,
# haproxy, nginx with the stream module and loadtest/tcpbench (built here when missing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
HOST=127.0.0.1 SINK_PORT=18100
declare -A PORT=([ringway]=18101 [nginx]=18102 [haproxy]=18103 [ringway-base]=18104)
seconds=5 baseline=${RINGWAY_BASELINE_BIN:-} conns=16 top=25 keep='' freq=4999
proxies=(ringway haproxy nginx)
while (($#)); do
  case $1 in
    --seconds|--duration) seconds=$2; shift ;;
    --baseline) baseline=$2; shift ;;
    --conns) conns=$2; shift ;;
    --proxies) IFS=, read -ra proxies <<<"$2"; shift ;;
    --top) top=$2; shift ;;
    --keep) keep=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tcp-profile.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
RINGWAY=${RINGWAY_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ringway}
TCPBENCH=$HERE/tcpbench/target/release/tcpbench
[[ -x $TCPBENCH ]] || (cd "$HERE/tcpbench" && CARGO_TARGET_DIR="$HERE/tcpbench/target" cargo build --release -q)
read -ra CPUS <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
PROXY_CPU=${CPUS[0]} GEN_CPU=${CPUS[-1]}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringway-tcp-profile.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n $keep ]]; then mkdir -p "$keep" && cp -r "$RUN_DIR"/. "$keep"/; fi
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
ringway_conf() {
  printf 'workers: 1\npin_workers: false\nlog: { level: warn }\nlisteners:\n  - name: t\n    listen: "%s:%s"\n    protocol: tcp\n    upstream: sink\nupstreams:\n  sink:\n    targets: ["%s:%s"]\n' \
    "$HOST" "$1" "$HOST" "$SINK_PORT"
}
taskset -c "$GEN_CPU" "$TCPBENCH" sink "$HOST:$SINK_PORT" >/dev/null 2>&1 & PIDS+=($!)
declare -A PID=()
start() { # name cmd...
  local name=$1; shift
  taskset -c "$PROXY_CPU" "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null & PID[$name]=$!; PIDS+=($!)
}
for p in "${proxies[@]}"; do
  case $p in
    ringway) ringway_conf "${PORT[$p]}" >"$RUN_DIR/$p.yaml"; start "$p" "$RINGWAY" --config "$RUN_DIR/$p.yaml" ;;
    ringway-base)
      [[ -n $baseline ]] || { echo "tcp-profile.sh: ringway-base needs --baseline BIN" >&2; exit 2; }
      ringway_conf "${PORT[$p]}" >"$RUN_DIR/$p.yaml"; start "$p" "$baseline" --config "$RUN_DIR/$p.yaml" ;;
    haproxy)
      printf 'global\n    nbthread 1\n    maxconn 4096\ndefaults\n    mode tcp\n    option splice-request\n    option splice-response\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\nlisten t\n    bind %s:%s\n    server sink %s:%s\n' \
        "$HOST" "${PORT[$p]}" "$HOST" "$SINK_PORT" >"$RUN_DIR/haproxy.cfg"
      start "$p" "$(command -v haproxy || echo /usr/sbin/haproxy)" -db -f "$RUN_DIR/haproxy.cfg" ;;
    nginx)
      mod=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null | head -n1 || true)
      mkdir -p "$RUN_DIR/nginx"
      printf '%s\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid %s/nginx.pid;\nerror_log %s/nginx-error.log warn;\nevents { worker_connections 4096; }\nstream {\n    server {\n        listen %s:%s reuseport;\n        proxy_pass %s:%s;\n    }\n}\n' \
        "${mod:+load_module $mod;}" "$RUN_DIR" "$RUN_DIR" "$HOST" "${PORT[$p]}" "$HOST" "$SINK_PORT" >"$RUN_DIR/nginx.conf"
      start "$p" "$(command -v nginx || echo /usr/sbin/nginx)" -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx.conf" ;;
    *) echo "tcp-profile.sh: unknown proxy '$p'" >&2; exit 2 ;;
  esac
done
sleep 1
echo "tcp-short, $conns concurrent clients, ${seconds}s; proxy on CPU $PROXY_CPU, sink+load on CPU $GEN_CPU; perf -F $freq"
tw() { # TIME_WAIT sockets: toward the sink (the proxy's side), toward the proxy's port (the clients')
  local up down
  up=$(ss -Htan state time-wait "dport = :$SINK_PORT" | wc -l)
  down=$(ss -Htan state time-wait "dport = :$1" | wc -l)
  echo "time_wait_to_backend=$up time_wait_clients=$down"
}
for p in "${proxies[@]}"; do
  taskset -c "$GEN_CPU" "$TCPBENCH" short "$HOST:${PORT[$p]}" 1 "$conns" >/dev/null
  perf record -q -F "$freq" -g -C "$PROXY_CPU" -o "$RUN_DIR/$p.data" -- sleep "$((seconds + 1))" >/dev/null 2>&1 & perf=$!
  sleep 0.5
  out=$(taskset -c "$GEN_CPU" "$TCPBENCH" short "$HOST:${PORT[$p]}" "$seconds" "$conns")
  tws=$(tw "${PORT[$p]}")
  wait "$perf" 2>/dev/null || true
  n=$(sed -n 's/.*\bbytes=\([0-9]*\).*/\1/p' <<<"$out")
  echo
  echo "== $p: $n connections; $tws"
  echo "${PID[$p]}" >"$RUN_DIR/$p.pid"
  # Samples on the proxy's process: all its threads (io-wq workers included). Loopback receive
  # work that the proxy's sends raise runs in its context too, so it is counted here.
  perf report -i "$RUN_DIR/$p.data" --no-children --sort comm -g none --percent-limit 0 \
    --stdio 2>/dev/null >"$RUN_DIR/$p.comms" || true
  perf script -i "$RUN_DIR/$p.data" --pid "${PID[$p]}" -F comm,tid,ip,sym 2>/dev/null |
    python3 "$HERE/tcp-profile-fold.py" "$n" "$freq" "$top" "$RUN_DIR/$p.comms"
done
