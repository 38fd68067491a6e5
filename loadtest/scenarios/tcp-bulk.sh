#!/usr/bin/env bash
# Scenario: tcp-bulk — layer-4 proxying: ringway (`protocol: tcp`, splice) vs HAProxy
# (`mode tcp`, `option splice-request/-response`: always splice) vs nginx (`stream`, buffered copy), one worker each,
# in front of one sink (loadtest/tcpbench). Reports per proxy:
#   bulk:  GB/s streamed client -> proxy -> sink, and the proxy's CPU seconds per GB
#   short: connections per second (connect, 1 byte each way, close), CPU ms per 1000
#
# This scenario drives its own load generator, so it runs on its own (run.sh hands
# `--scenario tcp-bulk` over to it):
#
#   loadtest/scenarios/tcp-bulk.sh [--quick] [--seconds N] [--rounds N] [--conns N]
#                                  [--short-conns N] [--proxies ringway,nginx,haproxy]
#                                  [--no-build] [--no-pin] [--baseline BIN]
#
# --baseline BIN (or env RINGWAY_BASELINE_BIN) adds the peer ringway-base: ringway binary BIN
# with the same config (but its port) and placement, measured right after ringway.
# Results also go to $LOADTEST_OUT/tcp-bulk and .../tcp-short (scenario.json, summary.md) for
# run.sh's combined report. Tools are never installed here: a missing one is named with the apt-get line, and
# the proxies that need it are skipped. Exit: 0 all selected proxies measured, 3 some
# skipped or failed, 2 usage error or missing core tools.
# standalone-scenario
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$HERE/.." && pwd)
HOST=127.0.0.1
SINK_PORT=18100
declare -A PORT=([ringway]=18101 [nginx]=18102 [haproxy]=18103 [ringway-base]=18104)
ALL=(ringway nginx haproxy) # ringway-base joins after ringway with --baseline
START_TIMEOUT=10   # seconds to wait for a listener

seconds=10 rounds=3 conns=4 short_conns=16 build=1 pin=1 placement=split
seconds_set=0 rounds_set=0 quick=0
proxies=() proxies_given=0
baseline=${RINGWAY_BASELINE_BIN:-}
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
usage_err() { echo "tcp-bulk.sh: $*" >&2; echo "try: $0 --help" >&2; exit 2; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_err "$1 needs a positive integer, got '$2'"; }
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --seconds|--duration) posint "$1" "${2:-}"; seconds=$2; seconds_set=1; shift ;;
    --rounds) posint "$1" "${2:-}"; rounds=$2; rounds_set=1; shift ;;
    --conns|--connections) posint "$1" "${2:-}"; conns=$2; shift ;;
    --short-conns) posint "$1" "${2:-}"; short_conns=$2; shift ;;
    --proxies) IFS=, read -ra proxies <<<"${2:-}"; proxies_given=1; shift
      for p in "${proxies[@]}"; do [[ -n ${PORT[$p]:-} ]] || usage_err "unknown proxy '$p'"; done ;;
    --baseline) [[ -n ${2:-} ]] || usage_err "$1 needs a value"; baseline=$2; shift ;;
    --no-build) build=0 ;;
    --no-pin) pin=0 ;;
    --placement) [[ ${2:-} == split || ${2:-} == shared ]] || usage_err "--placement is split or shared"
      placement=$2; shift ;;
    --scenario) shift ;;   # passed through by run.sh
    tcp-bulk) ;;           # run.sh's positional scenario name
    --keep-tmp) ;;         # accepted for run.sh compatibility
    # run.sh --syscalls across several scenarios must not fail here; tunnels are counted apart.
    --syscalls) echo "tcp-bulk: syscalls are not counted here; loadtest/tcp-syscalls.sh counts them for tcp tunnels" >&2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage_err "unknown argument '$1'" ;;
  esac
  shift
done
if [[ -n $baseline ]]; then
  [[ -f $baseline && -x $baseline ]] || usage_err "--baseline: no executable at '$baseline'"
  baseline=$(cd "$(dirname -- "$baseline")" && pwd)/$(basename -- "$baseline")
  ALL=(ringway ringway-base nginx haproxy)
else
  unset 'PORT[ringway-base]'
fi
((proxies_given)) || proxies=("${ALL[@]}")
for p in "${proxies[@]}"; do
  [[ $p != ringway-base || -n $baseline ]] || usage_err "ringway-base needs --baseline BIN (or env RINGWAY_BASELINE_BIN)"
done
if ((quick)); then ((seconds_set)) || seconds=3; ((rounds_set)) || rounds=1; fi

find_tool() {
  local d
  command -v "$1" 2>/dev/null && return 0
  for d in /usr/local/sbin /usr/sbin /sbin; do [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }; done
  return 1
}
missing_core=()
CARGO=$(find_tool cargo) || missing_core+=("cargo (rustup)")
TASKSET=$(find_tool taskset) || { ((pin)) && missing_core+=(util-linux); }
if ((${#missing_core[@]})); then
  echo "tcp-bulk.sh: missing tools: ${missing_core[*]}" >&2; exit 2
fi

declare -A STATUS=() REASON=()
skip() { STATUS[$1]=skipped; REASON[$1]=$2; echo "  $1: skipped: $2"; }
has() { local p; for p in "${proxies[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
for p in "${ALL[@]}"; do has "$p" || STATUS[$p]=unselected; done

HAPROXY='' NGINX='' NGINX_STREAM_LOAD=''
if has haproxy; then
  HAPROXY=$(find_tool haproxy) || skip haproxy "not installed; install with: apt-get install -y haproxy"
fi
if has nginx; then
  if NGINX=$(find_tool nginx); then
    if "$NGINX" -V 2>&1 | grep -q -- '--with-stream '; then :
    elif mod=$(ls /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so 2>/dev/null | head -n1) && [[ -n $mod ]]; then
      NGINX_STREAM_LOAD="load_module $mod;"
    else
      skip nginx "the stream module is missing; install it with: apt-get install -y libnginx-mod-stream"
    fi
  else
    skip nginx "not installed; install with: apt-get install -y nginx libnginx-mod-stream"
  fi
fi

for port in "$SINK_PORT" "${PORT[@]}"; do
  (: <>"/dev/tcp/$HOST/$port") 2>/dev/null && { echo "tcp-bulk.sh: port $port is in use" >&2; exit 1; }
done

# Cores: the proxy alone on the first CPU; sink and load generator share the last.
read -ra CPUS <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))' 2>/dev/null || echo 0)"
if ((pin)) && ((${#CPUS[@]} < 2)); then pin=0; fi
PROXY_CPU=${CPUS[0]} GEN_CPU=${CPUS[-1]}
# shared (run.sh --placement shared): the sink on the proxy's core, the round-1 layout.
SINK_CPU=$GEN_CPU
[[ $placement == shared ]] && SINK_CPU=$PROXY_CPU
on() { local cpu=$1; shift; if ((pin)); then "$TASKSET" -c "$cpu" "$@"; else "$@"; fi; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringway-tcp-bulk.XXXXXX")
declare -A PID=()
cleanup() {
  local p
  for p in "${!PID[@]}"; do kill -TERM "${PID[$p]}" 2>/dev/null || true; done
  for p in "${!PID[@]}"; do wait "${PID[$p]}" 2>/dev/null || true; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build ------------------------------------------------------------------
TCPBENCH_DIR="$HERE/tcpbench"
TCPBENCH="$TCPBENCH_DIR/target/release/tcpbench"
# The load generator is built even with --no-build (which is about ringway): a no-op when current.
echo "building:  tcpbench (cargo build --release in loadtest/tcpbench)"
(cd "$TCPBENCH_DIR" && CARGO_TARGET_DIR="$TCPBENCH_DIR/target" "$CARGO" build --release -q) || { echo "tcp-bulk.sh: tcpbench build failed" >&2; exit 1; }
if ((build)); then
  echo "building:  ringway (cargo build --release)"
  if has ringway && [[ -z ${RINGWAY_BIN:-} ]]; then
    (cd "$REPO" && "$CARGO" build --release -q) >"$RUN_DIR/ringway-build.log" 2>&1 ||
      skip ringway "cargo build --release failed: $(grep -m1 '^error' "$RUN_DIR/ringway-build.log")"
  fi
fi
RINGWAY=${RINGWAY_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ringway}
[[ -x $TCPBENCH ]] || { echo "tcp-bulk.sh: no $TCPBENCH (drop --no-build)" >&2; exit 1; }
if has ringway && [[ -z ${STATUS[ringway]:-} && ! -x $RINGWAY ]]; then skip ringway "no executable at $RINGWAY"; fi
RINGWAY_BASE=$baseline

# ---- configs ------------------------------------------------------------------
ringway_conf() { # port -> config on stdout (ringway and ringway-base: only the port differs)
  cat <<CONF
workers: 1
pin_workers: false
log: { level: warn }
listeners:
  - name: bulk
    listen: "$HOST:$1"
    protocol: tcp
    upstream: sink
upstreams:
  sink:
    targets: ["$HOST:$SINK_PORT"]
CONF
}
ringway_conf "${PORT[ringway]}" >"$RUN_DIR/ringway.yaml"
[[ -n $baseline ]] && ringway_conf "${PORT[ringway-base]}" >"$RUN_DIR/ringway-base.yaml"
cat >"$RUN_DIR/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    option splice-request
    option splice-response
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen bulk
    bind $HOST:${PORT[haproxy]}
    server sink $HOST:$SINK_PORT
CONF
mkdir -p "$RUN_DIR/nginx"
cat >"$RUN_DIR/nginx.conf" <<CONF
$NGINX_STREAM_LOAD
worker_processes 1;
daemon off;
master_process off;
pid $RUN_DIR/nginx.pid;
error_log $RUN_DIR/nginx-error.log warn;
events { worker_connections 4096; }
stream {
    server {
        listen $HOST:${PORT[nginx]} reuseport;
        proxy_pass $HOST:$SINK_PORT;
    }
}
CONF

wait_port() { local i; for ((i = 0; i < START_TIMEOUT * 20; i++)); do (: <>"/dev/tcp/$HOST/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start() { # name cpu cmd... (no function or subshell in between: $! is the server itself)
  local name=$1 cpu=$2; shift 2
  if ((pin)); then set -- "$TASKSET" -c "$cpu" "$@"; fi
  "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
}
cpu_ticks() { local s f; read -r s <"/proc/$1/stat"; f=(${s##*) }); echo $((f[11] + f[12])); }
rss_peak_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

start sink "$SINK_CPU" "$TCPBENCH" sink "$HOST:$SINK_PORT"
wait_port "$SINK_PORT" || { echo "tcp-bulk.sh: sink did not start: $(cat "$RUN_DIR/sink.log")" >&2; exit 1; }
for p in "${proxies[@]}"; do
  [[ -z ${STATUS[$p]:-} ]] || continue
  case $p in
    ringway) start ringway "$PROXY_CPU" env -u RUST_LOG "$RINGWAY" --config "$RUN_DIR/ringway.yaml" ;;
    ringway-base) start ringway-base "$PROXY_CPU" env -u RUST_LOG "$RINGWAY_BASE" --config "$RUN_DIR/ringway-base.yaml" ;;
    haproxy) start haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$RUN_DIR/haproxy.cfg" ;;
    nginx) start nginx "$PROXY_CPU" "$NGINX" -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx.conf" ;;
  esac
  if wait_port "${PORT[$p]}"; then STATUS[$p]=ok; else skip "$p" "did not listen: $(tail -n2 "$RUN_DIR/$p.log" | tr '\n' ' ')"; fi
done

echo "method:    $rounds round(s); bulk: $conns connection(s) streaming for ${seconds}s; short: $short_conns concurrent clients for ${seconds}s"
if ((pin)); then echo "cores:     $placement placement: proxy on CPU $PROXY_CPU, sink on CPU $SINK_CPU, load generator on CPU $GEN_CPU"; else echo "cores:     not pinned"; fi
echo

# run name mode -> "value cpu_seconds" (bytes or connections, proxy CPU seconds)
run() {
  local p=$1 mode=$2 n c0 c1 out
  n=$conns; [[ $mode == short ]] && n=$short_conns
  on "$GEN_CPU" "$TCPBENCH" "$mode" "$HOST:${PORT[$p]}" 1 "$n" >/dev/null # warm-up
  c0=$(cpu_ticks "${PID[$p]}")
  out=$(on "$GEN_CPU" "$TCPBENCH" "$mode" "$HOST:${PORT[$p]}" "$seconds" "$n")
  c1=$(cpu_ticks "${PID[$p]}")
  echo "$out cpu_ticks=$((c1 - c0)) rss_peak_kb=$(rss_peak_kb "${PID[$p]}")"
}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

W=8; [[ -n $baseline ]] && W=12 # name column: wide enough for ringway-base
printf "%-${W}s %5s %9s %10s %12s %14s %7s\n" proxy round 'bulk GB/s' 'CPU s/GB' 'short conn/s' 'CPU ms/1k conn' errors
for ((r = 1; r <= rounds; r++)); do
  for p in "${proxies[@]}"; do
    [[ ${STATUS[$p]} == ok ]] || continue
    b=$(run "$p" bulk); s=$(run "$p" short)
    python3 - "$p" "$r" "$CLK_TCK" "$b" "$s" "$RUN_DIR" "$W" <<'PY'
import json, sys
p, r, tck, b, s, run_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
w = int(sys.argv[7])
kv = lambda t: dict(x.split("=") for x in t.split())
b, s = kv(b), kv(s)
gb = int(b["bytes"]) / 1e9
bcpu = int(b["cpu_ticks"]) / tck
conns = int(s["bytes"])
scpu = int(s["cpu_ticks"]) / tck
gbs = gb / float(b["seconds"])
spgb = bcpu / gb if gb else float("nan")
rate = conns / float(s["seconds"])
ms_k = scpu * 1e6 / conns if conns else float("nan")
print(f"{p:<{w}} {r:>5} {gbs:>9.2f} {spgb:>10.3f} {rate:>12.0f} {ms_k:>14.1f} {int(b['errors']) + int(s['errors']):>7}")
# The same runs in the shape helper.py reports (CPU per MiB streamed, per connection).
for name, unit, units, cpu_ticks, kv in (("bulk", "MiB", int(b["bytes"]) / 2**20, int(b["cpu_ticks"]), b),
                                        ("short", "conn", conns, int(s["cpu_ticks"]), s)):
    errors = int(kv["errors"])
    run = {"proxy": p, "round": int(r), "loadgen": "tcpbench", "unit": unit, "units": units,
           "elapsed_s": float(kv["seconds"]), "rate": units / float(kv["seconds"]) if units else None,
           "latency_us": {}, "errors": {"errors": errors}, "errors_total": errors,
           "cpu_ticks": {"total": cpu_ticks, "clk_tck": tck},
           "cpu_us_per_unit": {"user": None, "sys": None, "total": cpu_ticks * 1e6 / tck / units,
                               "sched_total": None} if units else None,
           "rss_kb": {"peak": int(kv["rss_peak_kb"])}, "extra": {},
           "valid": bool(units) and not errors, "problems": [] if units and not errors else ["errors or no data"]}
    with open(f"{run_dir}/{name}.jsonl", "a") as f:
        f.write(json.dumps(run) + "\n")
PY
  done
done
echo
rc=0
specs=()
for p in "${ALL[@]}"; do
  case ${STATUS[$p]} in
    ok) specs+=(--proxy "$p:ok") ;;
    unselected) ;;
    *) echo "$p: ${STATUS[$p]}: ${REASON[$p]:-}"; rc=3; specs+=(--proxy "$p:skipped:${REASON[$p]:-}") ;;
  esac
done
specs+=(--proxy "caddy:skipped:Caddy's layer 4 app is not in the Debian build")
OUT=${LOADTEST_OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)-$(hostname -s 2>/dev/null || hostname)}
common=(--duration "$seconds" --rounds "$rounds" --pinned "$pin" --placement "$placement" --proxy-cpu "$PROXY_CPU" --backend-cpu "$SINK_CPU" --loadgen-cpu "$GEN_CPU" --started "$(date -u +%Y%m%dT%H%M%SZ)" "${specs[@]}")
[[ -n $baseline ]] && common+=(--ringway-bin "$RINGWAY" --ringway-base-bin "$baseline")
touch "$RUN_DIR/bulk.jsonl" "$RUN_DIR/short.jsonl"
python3 "$HERE/helper.py" report-runs --runs "$RUN_DIR/bulk.jsonl" --out "$OUT/tcp-bulk" --name tcp-bulk --unit MiB \
  --connections "$conns" --desc "layer 4: $conns connections streaming 256 KiB writes through the proxy to a sink" \
  "${common[@]}" >/dev/null || rc=3
python3 "$HERE/helper.py" report-runs --runs "$RUN_DIR/short.jsonl" --out "$OUT/tcp-short" --name tcp-short --unit conn \
  --connections "$short_conns" --desc "layer 4: short connections (connect, 1 byte each way, close), $short_conns at a time" \
  "${common[@]}" >/dev/null || rc=3
[[ -n ${LOADTEST_OUT:-} ]] || python3 "$HERE/helper.py" aggregate --out "$OUT"
exit "$rc"
