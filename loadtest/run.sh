#!/usr/bin/env bash
# ringway load test: ringway vs nginx vs HAProxy, each with one worker, in front
# of one single-process nginx backend, all on 127.0.0.1. See README.md.
#
#   loadtest/run.sh [SCENARIO...] [--quick] [--duration SECS] [--rounds N]
#                   [--connections N] [--proxies ringway,nginx,haproxy] [--scenario NAME]
#                   [--no-build] [--no-pin] [--keep-tmp]
#
# Exit: 0 every selected proxy produced numbers; 3 some did not (the others are
# still reported); 2 usage error or missing tools; 1 other setup failure.
set -euo pipefail

ORIG_ARGS=("$@")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
HELPER="$HERE/helper.py"

HOST=127.0.0.1
BACKEND_PORT=18000
declare -A PORT=([ringway]=18001 [nginx]=18002 [haproxy]=18003)
ALL_PROXIES=(ringway nginx haproxy)
START_TIMEOUT=10   # seconds to wait for a listener
STOP_TIMEOUT=5     # seconds between SIGTERM and SIGKILL
BUILD_TIMEOUT=1800

usage() {
  sed -n '5,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

  --quick            2 s runs, 1 round (explicit --duration/--rounds still win)
  --duration SECS    measured wrk run per proxy per round (default 10)
  --rounds N         rounds; each round runs every proxy once, in order (default 3)
  --connections N    wrk connections (default 64; wrk always uses 1 thread)
  --proxies LIST     comma-separated subset of: ringway,nginx,haproxy (default all)
  SCENARIO...        names from loadtest/scenarios/ (default: every scenario, in turn)
  --scenario NAME    just loadtest/scenarios/NAME.sh
  --no-build         don't run `cargo build --release`; use the existing binary
  --no-pin           don't place processes on cores with taskset
  --keep-tmp         keep the temp run dir (configs, logs, raw wrk output)
Env: RINGWAY_BIN overrides target/release/ringway (and skips the build).
EOF
}

die() { echo "run.sh: $*" >&2; exit 1; }
usage_err() { echo "run.sh: $*" >&2; echo "try: $0 --help" >&2; exit 2; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_err "$1 needs a positive integer, got '$2'"; }

duration=10 rounds=3 connections=64 connections_given=0 warmup=1
quick=0 build=1 pin=1 keep_tmp=0 scenario='' scenarios=()
orig_args=("$@")
duration_set=0 rounds_set=0
proxies=("${ALL_PROXIES[@]}")

while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --duration) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; duration=$2; duration_set=1; shift ;;
    --rounds) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; rounds=$2; rounds_set=1; shift ;;
    --connections) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; connections=$2; connections_given=1; shift ;;
    --proxies) (($# >= 2)) || usage_err "$1 needs a value"
      IFS=, read -ra proxies <<<"$2"
      for p in "${proxies[@]}"; do [[ -n ${PORT[$p]:-} ]] || usage_err "unknown proxy '$p'"; done
      ((${#proxies[@]})) || usage_err "--proxies is empty"
      shift ;;
    --scenario) (($# >= 2)) || usage_err "$1 needs a value"; scenario=$2; shift ;;
    --no-build) build=0 ;;
    --no-pin) pin=0 ;;
    --keep-tmp) keep_tmp=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage_err "unknown argument '$1'" ;;
    *) scenarios+=("$1") ;;
  esac
  shift
done
# Several scenarios (or none named: all of them): run each in turn through this script, after
# one build, and report each as usual. One failing scenario does not stop the others.
if [[ -z $scenario ]]; then
  if ((${#scenarios[@]} == 0)); then
    for f in "$HERE"/scenarios/*.sh; do scenarios+=("$(basename "$f" .sh)"); done
  fi
  if ((${#scenarios[@]} == 1)); then
    scenario=${scenarios[0]}
  else
    if ((build)); then
      (cd "$HERE/.." && cargo build --release --quiet --bin ringway) || die "cargo build --release failed"
    fi
    rest=()
    for a in "${orig_args[@]}"; do
      for sc in "${scenarios[@]}"; do [[ $a == "$sc" ]] && continue 2; done
      rest+=("$a")
    done
    worst=0
    for sc in "${scenarios[@]}"; do
      echo "=================== scenario: $sc"
      "$0" "${rest[@]}" --no-build --scenario "$sc" || { rc=$?; ((rc > worst)) && worst=$rc; }
    done
    exit "$worst"
  fi
fi
if ((quick)); then
  ((duration_set)) || duration=2
  ((rounds_set)) || rounds=1
fi
# wrk needs at least one connection per thread.
((connections >= 1)) || usage_err "--connections must be >= 1"

has_proxy() { local p; for p in "${proxies[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }

# ---- scenario -------------------------------------------------------------
scenario_file="$HERE/scenarios/$scenario.sh"
[[ $scenario =~ ^[A-Za-z0-9._-]+$ && -f $scenario_file ]] ||
  usage_err "no scenario '$scenario' (have: $(cd "$HERE/scenarios" && ls -- *.sh | sed 's/\.sh$//' | tr '\n' ' '))"
# A scenario with its own load generator (marked `# standalone-scenario`) runs on its own.
if grep -qx '# standalone-scenario' "$scenario_file"; then exec bash "$scenario_file" "${ORIG_ARGS[@]}"; fi
SCENARIO_WRK_ARGS=()
SCENARIO_RENDER_SED=()  # extra sed expressions for rendering this scenario's templates
SCENARIO_SCHEME=http
# shellcheck source=scenarios/small-keepalive.sh
source "$scenario_file"
# A scenario may ask for its own connection count unless --connections was given.
if [[ -n ${SCENARIO_CONNECTIONS:-} && $connections_given == 0 ]]; then connections=$SCENARIO_CONNECTIONS; fi
: "${SCENARIO_DESC:?} ${SCENARIO_PATH:?} ${SCENARIO_EXPECT_STATUS:?}"
: "${SCENARIO_EXPECT_BODY=}"
: "${SCENARIO_TEMPLATE_BACKEND:=nginx-backend.conf}" "${SCENARIO_TEMPLATE_RINGWAY:=ringway.yaml}"
: "${SCENARIO_TEMPLATE_NGINX:=nginx-proxy.conf}" "${SCENARIO_TEMPLATE_HAPROXY:=haproxy.cfg}"

# ---- tools (never installed here: print the line and stop) ----------------
find_tool() { # name -> path on PATH or in sbin dirs (nginx/haproxy live there)
  local d
  command -v "$1" 2>/dev/null && return 0
  for d in /usr/local/sbin /usr/sbin /sbin; do [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }; done
  return 1
}
missing=()
need() { # var tool package
  local path
  if path=$(find_tool "$2"); then printf -v "$1" %s "$path"; else missing+=("$3"); fi
}
need WRK wrk wrk
need NGINX nginx nginx
has_proxy haproxy && need HAPROXY haproxy haproxy
need PYTHON python3 python3
need TIMEOUT timeout coreutils
((pin)) && need TASKSET taskset util-linux
if ((${#missing[@]})); then
  echo "run.sh: missing tools. Install them (as root, after apt-get update) with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 2
fi

# Every port must be free: otherwise we would measure someone else's server.
for port in "$BACKEND_PORT" $(for p in "${proxies[@]}"; do echo "${PORT[$p]}"; done); do
  (: <>"/dev/tcp/$HOST/$port") 2>/dev/null && die "port $port on $HOST is already in use; stop whatever listens there"
done

# ---- run dir (everything at runtime goes here) and results dir -------------
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringway-loadtest.XXXXXX")
mkdir -p "$RUN_DIR"/{logs,raw,nginx-backend,nginx-proxy}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$HERE/results/$STAMP-$(hostname -s 2>/dev/null || hostname)"

declare -A PID=() PSTART=() STATUS=() REASON=()

proc_fields() { # pid -> fields 3.. of /proc/PID/stat (comm may contain spaces)
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  echo "${s##*) }"
}
alive() { # name: still our process, and not a zombie
  local pid=${PID[$1]:-} f
  [[ -n $pid ]] || return 1
  f=($(proc_fields "$pid")) || return 1
  [[ ${f[0]} != Z && ${f[19]} == "${PSTART[$1]}" ]]
}
cpu_ticks() { # pid -> "utime stime" (stat fields 14, 15; all threads summed)
  local f
  f=($(proc_fields "$1")) || { echo "0 0"; return 1; }
  echo "${f[11]} ${f[12]}"
}
sched_ns() { # pid -> on-CPU ns summed over live threads (finer than ticks)
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
}
port_open() { (: <>"/dev/tcp/$HOST/$1") 2>/dev/null; }

start_proc() { # name cpu cmd... (taskset execs, so $! is the server itself)
  local name=$1 cpu=$2 f; shift 2
  if ((pin)) && [[ -n $cpu ]]; then set -- "$TASKSET" -c "$cpu" "$@"; fi
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
  f=($(proc_fields "${PID[$name]}")) && PSTART[$name]=${f[19]} || PSTART[$name]=gone
}
wait_port() { # name port -> 0 listening, 1 process gone, 2 timeout
  local i
  for ((i = 0; i < START_TIMEOUT * 20; i++)); do
    port_open "$2" && return 0
    alive "$1" || return 1
    sleep 0.05
  done
  return 2
}
exit_reason() { # name -> "exited with status N" (reaps the child)
  local rc=0
  wait "${PID[$1]}" 2>/dev/null || rc=$?
  echo "exited with status $rc"
}
log_tail() { # name -> last log lines on one line
  tail -n 3 "$RUN_DIR/logs/$1.log" 2>/dev/null | tr '\n' ' ' | sed 's/[[:space:]]*$//' | cut -c1-300
}
stop_proc() {
  local name=$1 i
  alive "$name" || return 0
  kill -TERM "${PID[$name]}" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do alive "$name" || break; sleep 0.05; done
  if alive "$name"; then
    echo "run.sh: $name ignored SIGTERM for ${STOP_TIMEOUT}s, killing" >&2
    kill -KILL "${PID[$name]}" 2>/dev/null || true
  fi
  wait "${PID[$name]}" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${ALL_PROXIES[@]}" backend; do stop_proc "$p"; done
  if [[ -d $OUT ]]; then # keep non-empty logs next to the results
    mkdir -p "$OUT/logs"
    find "$RUN_DIR/logs" -type f -size +0 -exec cp {} "$OUT/logs/" \; 2>/dev/null || true
    rmdir "$OUT/logs" "$OUT" 2>/dev/null || true
  fi
  if ((keep_tmp)); then echo "run.sh: kept $RUN_DIR" >&2; else rm -rf "$RUN_DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail_proxy() { STATUS[$1]=failed; REASON[$1]=$2; echo "  $1: FAILED: $2"; }

render() { # template out -> copy with {{...}} filled in
  sed -e "s|{{RUN_DIR}}|$RUN_DIR|g" \
      -e "s|{{BACKEND_ADDR}}|$HOST:$BACKEND_PORT|g" \
      -e "s|{{LISTEN_ADDR}}|$HOST:${3:-0}|g" "${SCENARIO_RENDER_SED[@]}" "$HERE/$1" >"$2"
}

# ---- core layout ----------------------------------------------------------
# wrk gets a core of its own so the load generator is not the bottleneck; the
# proxy under test and the backend share the other one on a 2-core machine.
read -ra CPUS <<<"$("$PYTHON" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
PROXY_CPU='' BACKEND_CPU='' LOADGEN_CPU=''
if ((pin)); then
  if ((${#CPUS[@]} >= 3)); then
    PROXY_CPU=${CPUS[0]} BACKEND_CPU=${CPUS[1]} LOADGEN_CPU=${CPUS[-1]}
  elif ((${#CPUS[@]} == 2)); then
    PROXY_CPU=${CPUS[0]} BACKEND_CPU=${CPUS[0]} LOADGEN_CPU=${CPUS[1]}
  else
    echo "run.sh: only one CPU available, not pinning" >&2; pin=0
  fi
fi
wrk_cmd=("$WRK")
((pin)) && wrk_cmd=("$TASKSET" -c "$LOADGEN_CPU" "$WRK")

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- machine ----------------------------------------------------------------
mkdir -p "$OUT"
"$PYTHON" "$HELPER" machine --out "$RUN_DIR/machine.json" \
  --tool wrk="$WRK" --tool nginx="$NGINX" ${HAPROXY:+--tool haproxy="$HAPROXY"} --repo "$REPO"
echo "scenario:  $scenario — $SCENARIO_DESC"
echo "method:    $rounds round(s) x [${proxies[*]}], each 1 warm-up run of ${warmup}s then wrk -t1 -c$connections -d${duration}s --latency"
if ((pin)); then
  echo "cores:     proxy on CPU $PROXY_CPU, backend on CPU $BACKEND_CPU, wrk on CPU $LOADGEN_CPU (taskset)"
else
  echo "cores:     not pinned"
fi
echo "results:   ${OUT#"$REPO"/}"
echo

for p in "${ALL_PROXIES[@]}"; do has_proxy "$p" || STATUS[$p]=skipped; done

# ---- ringway build ----------------------------------------------------------
RINGWAY="${RINGWAY_BIN:-$REPO/target/release/ringway}"
if has_proxy ringway; then
  if ((build)) && [[ -z ${RINGWAY_BIN:-} ]]; then
    if command -v cargo >/dev/null; then
      echo "building:  cargo build --release (log: logs/ringway-build.log)"
      if ! (cd "$REPO" && "$TIMEOUT" "$BUILD_TIMEOUT" cargo build --release) >"$RUN_DIR/logs/ringway-build.log" 2>&1; then
        fail_proxy ringway "cargo build --release failed: $(grep -m1 '^error' "$RUN_DIR/logs/ringway-build.log" || tail -n1 "$RUN_DIR/logs/ringway-build.log")"
      fi
    else
      echo "run.sh: cargo not found, using the existing $RINGWAY if any" >&2
    fi
  fi
  if [[ -z ${STATUS[ringway]:-} && ! -x $RINGWAY ]]; then
    fail_proxy ringway "no executable at $RINGWAY"
  fi
fi

# ---- start everything (once; idle peers cost nothing while another is measured)
probe() { # port -> "" if the scenario's expected response comes back, else why not
  "$PYTHON" "$HELPER" probe --url "${2:-$SCENARIO_SCHEME}://$HOST:$1$SCENARIO_PATH" \
    --status "$SCENARIO_EXPECT_STATUS" --body "$SCENARIO_EXPECT_BODY" 2>&1 || true
}

# A scenario may prepare files in the run dir (e.g. an object for the backend to serve).
if declare -F scenario_setup >/dev/null; then scenario_setup "$RUN_DIR"; fi
render "$SCENARIO_TEMPLATE_BACKEND" "$RUN_DIR/nginx-backend.conf"
start_proc backend "$BACKEND_CPU" "$NGINX" -p "$RUN_DIR/nginx-backend" -e "$RUN_DIR/logs/nginx-backend.error.log" \
  -c "$RUN_DIR/nginx-backend.conf"
if ! wait_port backend "$BACKEND_PORT"; then
  die "backend nginx did not start on $HOST:$BACKEND_PORT: $(log_tail backend) $(tail -n2 "$RUN_DIR/logs/nginx-backend.error.log" 2>/dev/null)"
fi
why=$(probe "$BACKEND_PORT" http)
[[ -z $why ]] || die "backend answers wrongly: $why"

start_peer() { # name -> starts it, or marks it failed
  local p=$1 port=${PORT[$1]} conf why rc
  case $p in
    ringway)
      conf="$RUN_DIR/ringway.yaml"; render "$SCENARIO_TEMPLATE_RINGWAY" "$conf" "$port"
      # RUST_LOG would override the config's log level and skew the numbers.
      start_proc ringway "$PROXY_CPU" env -u RUST_LOG "$RINGWAY" --config "$conf" ;;
    nginx)
      conf="$RUN_DIR/nginx-proxy.conf"; render "$SCENARIO_TEMPLATE_NGINX" "$conf" "$port"
      start_proc nginx "$PROXY_CPU" "$NGINX" -p "$RUN_DIR/nginx-proxy" -e "$RUN_DIR/logs/nginx-proxy.error.log" -c "$conf" ;;
    haproxy)
      conf="$RUN_DIR/haproxy.cfg"; render "$SCENARIO_TEMPLATE_HAPROXY" "$conf" "$port"
      start_proc haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$conf" ;;
  esac
  rc=0; wait_port "$p" "$port" || rc=$?
  if ((rc == 1)); then
    why="$(exit_reason "$p") before listening on $HOST:$port"
    if [[ $p == ringway ]] && grep -qx 'fn main() {}' "$REPO/src/main.rs" 2>/dev/null; then
      why+=" (src/main.rs is still the 'fn main() {}' stub)"
    fi
    [[ -n $(log_tail "$p") ]] && why+=": $(log_tail "$p")"
    fail_proxy "$p" "$why"; return
  elif ((rc == 2)); then
    fail_proxy "$p" "not listening on $HOST:$port after ${START_TIMEOUT}s"; stop_proc "$p"; return
  fi
  why=$(probe "$port")
  if [[ -n $why ]]; then fail_proxy "$p" "wrong response through the proxy: $why"; stop_proc "$p"; return; fi
  STATUS[$p]=ok
  echo "  $p: pid ${PID[$p]} on $HOST:$port"
}
echo "starting:  backend nginx pid ${PID[backend]} on $HOST:$BACKEND_PORT"
for p in "${proxies[@]}"; do [[ -n ${STATUS[$p]:-} ]] || start_peer "$p"; done
echo

# ---- measure ----------------------------------------------------------------
seq=0
measure() { # proxy round
  local p=$1 r=$2 pid=${PID[$1]} url="$SCENARIO_SCHEME://$HOST:${PORT[$1]}$SCENARIO_PATH" base rc=0
  local cpu0 cpu1 bcpu0 bcpu1 ns0 ns1 stat0 stat1 t0 t1
  seq=$((seq + 1)); base="$RUN_DIR/raw/$(printf %03d "$seq")-$p-r$r"
  "$TIMEOUT" $((warmup + 30)) "${wrk_cmd[@]}" -t1 -c"$connections" -d"${warmup}s" \
    "${SCENARIO_WRK_ARGS[@]}" "$url" >"$base.warmup" 2>&1 || true
  cpu0=$(cpu_ticks "$pid") bcpu0=$(cpu_ticks "${PID[backend]}") ns0=$(sched_ns "$pid")
  stat0=$(head -n1 /proc/stat) t0=$(date +%s.%N)
  times >"$base.times0" # children's CPU so far; the delta is wrk's own CPU
  "$TIMEOUT" $((duration + 30)) "${wrk_cmd[@]}" -t1 -c"$connections" -d"${duration}s" --latency \
    "${SCENARIO_WRK_ARGS[@]}" "$url" >"$base.wrk" 2>&1 || rc=$?
  times >"$base.times1"
  cpu1=$(cpu_ticks "$pid") bcpu1=$(cpu_ticks "${PID[backend]}") ns1=$(sched_ns "$pid")
  stat1=$(head -n1 /proc/stat) t1=$(date +%s.%N)
  local up=1; alive "$p" || up=0
  cat >"$base.meta" <<EOF
proxy=$p
round=$r
seq=$seq
port=${PORT[$p]}
pid=$pid
wrk_rc=$rc
wall_start=$t0
wall_end=$t1
cpu_before=$cpu0
cpu_after=$cpu1
backend_cpu_before=$bcpu0
backend_cpu_after=$bcpu1
sched_ns_before=$ns0
sched_ns_after=$ns1
procstat_before=$stat0
procstat_after=$stat1
alive_after=$up
EOF
  "$PYTHON" "$HELPER" line "$base"
  if ((!up)); then
    fail_proxy "$p" "$(exit_reason "$p") during round $r: $(log_tail "$p")"
  fi
}
for ((r = 1; r <= rounds; r++)); do
  for p in "${proxies[@]}"; do
    [[ ${STATUS[$p]} == ok ]] && measure "$p" "$r"
  done
done
echo

# ---- report -------------------------------------------------------------------
{
  for p in "${ALL_PROXIES[@]}"; do
    printf '%s\t%s\t%s\t%s\n' "$p" "${STATUS[$p]:-skipped}" "${PORT[$p]}" "${REASON[$p]:-}"
  done
} >"$RUN_DIR/proxies.tsv"
cat >"$RUN_DIR/settings.env" <<EOF
scenario=$scenario
scenario_desc=$SCENARIO_DESC
scenario_path=$SCENARIO_PATH
duration_s=$duration
warmup_s=$warmup
rounds=$rounds
connections=$connections
wrk_threads=1
wrk_extra_args=${SCENARIO_WRK_ARGS[*]}
pinned=$pin
proxy_cpu=$PROXY_CPU
backend_cpu=$BACKEND_CPU
loadgen_cpu=$LOADGEN_CPU
started_utc=$STAMP
ringway_bin=$RINGWAY
EOF
rc=0
"$PYTHON" "$HELPER" report --run-dir "$RUN_DIR" --out "$OUT" || rc=$?
exit "$rc"
