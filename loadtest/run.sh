#!/usr/bin/env bash
# ringway load test: ringway vs nginx vs HAProxy vs Caddy, the same worker count each, in
# front of the same backend, all on 127.0.0.1. See README.md.
#
#   loadtest/run.sh [SCENARIO...] [--quick] [--duration SECS] [--rounds N] [--workers N]
#                   [--connections N] [--proxies ringway,nginx,haproxy,caddy] [--scenario NAME]
#                   [--no-build] [--no-pin] [--keep-tmp] [--baseline BIN] [--syscalls]
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
# 18004/18005 are lb-policies' extra backend ports; 18007/18008 backend-fail's extra backends.
# ringway-base (18009) is a second ringway binary, the build to compare with (--baseline).
declare -A PORT=([ringway]=18001 [nginx]=18002 [haproxy]=18003 [caddy]=18006 [ringway-base]=18009)
ALL_PROXIES=(ringway nginx haproxy caddy) # ringway-base joins after ringway with --baseline
# ringfloor-VARIANT (opt-in, never a default): loadtest/ringfloor, a minimal single-threaded
# io_uring relay measuring issue 18's floor (plain ring vs tuned ring, each tuning alone).
# Only small-keepalive and new-connection, one worker; elsewhere "not applicable".
declare -A RINGFLOOR_MODE=([plain]=plain [tuned]=tuned [acceptmulti]=plain+acceptmulti
  [recvmulti]=plain+recvmulti [upmulti]=plain+upmulti [fixed]=plain+fixed [ringfd]=plain+ringfd
  [pollfirst]=plain+pollfirst [notaskrun]=plain-taskrun [tuned-noupmulti]=tuned-upmulti)
RINGFLOOR_SCENARIOS=' small-keepalive new-connection '
rf_port=18010
for v in plain tuned acceptmulti recvmulti upmulti fixed ringfd pollfirst notaskrun tuned-noupmulti; do
  PORT[ringfloor-$v]=$rf_port; rf_port=$((rf_port + 1))
done
START_TIMEOUT=10   # seconds to wait for a listener
STOP_TIMEOUT=5     # seconds between SIGTERM and SIGKILL
BUILD_TIMEOUT=1800 # a cold release build on a small shared machine
RUN_SLACK=30       # seconds a load generator may overrun its duration before timeout kills it
REPORT_TIMEOUT=120 # report + charts; gnuplot on a few small data files
MAXCONN_CAP=20000  # HAProxy maxconn: room for idle-10k's 10,000 connections

usage() {
  sed -n '5,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

  --quick            2 s runs, 1 round (explicit --duration/--rounds still win)
  --duration SECS    measured wrk run per proxy per round (default 10)
  --rounds N         rounds; each round runs every proxy once, in order (default 3)
  --workers N        worker threads/processes of every proxy (default 1)
  --connections N    wrk connections (default 64; wrk always uses 1 thread)
  --proxies LIST     comma-separated subset of: ringway,nginx,haproxy,caddy (default all),
                     and ringway-base with --baseline; opt-in only: ringfloor-VARIANT
                     (plain, tuned, acceptmulti, recvmulti, upmulti, fixed, ringfd,
                     pollfirst, notaskrun, tuned-noupmulti), loadtest/ringfloor's relay,
                     small-keepalive and new-connection only (see README.md)
  SCENARIO...        names from loadtest/scenarios/ (default: every scenario, in turn)
  --scenario NAME    just loadtest/scenarios/NAME.sh
  --no-build         don't run `cargo build --release`; use the existing binary
  --no-pin           don't place processes on cores with taskset
  --placement P      split (default): the proxy alone on its core(s), backend and load
                     generator on the other(s), as in production where the backend is
                     another machine; shared: proxy and backend on one core, load generator
                     on the other (the round-1 layout, which doubles the peers' costs)
  --keep-tmp         keep the temp run dir (configs, logs, raw wrk output)
  --syscalls         count the proxy's syscalls and io_uring submissions per unit during each
                     measured run (perf stat on tracepoints; perf's own cost skews CPU a little)
  --baseline BIN     also measure the ringway binary BIN as the peer `ringway-base`: the same
                     rendered config and placement as ringway, its own port, measured right
                     after ringway in every round; the report gives ringway / ringway-base
Env: RINGWAY_BIN overrides target/release/ringway (and skips the build);
     RINGWAY_BASELINE_BIN is --baseline BIN;
     LOADTEST_OUT sets the results dir (default results/<UTC time>-<host>).
EOF
}

die() { echo "run.sh: $*" >&2; exit 1; }
usage_err() { echo "run.sh: $*" >&2; echo "try: $0 --help" >&2; exit 2; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_err "$1 needs a positive integer, got '$2'"; }

duration=10 rounds=3 connections=64 connections_given=0 warmup=1 workers=1
quick=0 build=1 pin=1 placement=split keep_tmp=0 scenario='' scenarios=() syscalls=0
orig_args=("$@")
duration_set=0 rounds_set=0
proxies=() proxies_given=0
baseline=${RINGWAY_BASELINE_BIN:-}

while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --duration) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; duration=$2; duration_set=1; shift ;;
    --rounds) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; rounds=$2; rounds_set=1; shift ;;
    --connections) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; connections=$2; connections_given=1; shift ;;
    --workers) (($# >= 2)) || usage_err "$1 needs a value"; posint "$1" "$2"; workers=$2; shift ;;
    --proxies) (($# >= 2)) || usage_err "$1 needs a value"
      IFS=, read -ra proxies <<<"$2"; proxies_given=1
      for p in "${proxies[@]}"; do [[ -n ${PORT[$p]:-} ]] || usage_err "unknown proxy '$p'"; done
      ((${#proxies[@]})) || usage_err "--proxies is empty"
      shift ;;
    --baseline) (($# >= 2)) || usage_err "$1 needs a value"; baseline=$2; shift ;;
    --scenario) (($# >= 2)) || usage_err "$1 needs a value"; scenario=$2; shift ;;
    --no-build) build=0 ;;
    --no-pin) pin=0 ;;
    --placement) (($# >= 2)) || usage_err "$1 needs a value"
      [[ $2 == split || $2 == shared ]] || usage_err "--placement is split or shared, got '$2'"
      placement=$2; shift ;;
    --keep-tmp) keep_tmp=1 ;;
    --syscalls) syscalls=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage_err "unknown argument '$1'" ;;
    *) scenarios+=("$1") ;;
  esac
  shift
done
# --baseline: a second ringway binary, measured as the peer ringway-base right after ringway.
if [[ -n $baseline ]]; then
  [[ -f $baseline && -x $baseline ]] || usage_err "--baseline: no executable at '$baseline'"
  baseline=$(cd "$(dirname -- "$baseline")" && pwd)/$(basename -- "$baseline")
  export RINGWAY_BASELINE_BIN=$baseline # nested runs and standalone scenarios see it
  ALL_PROXIES=(ringway ringway-base nginx haproxy caddy)
fi
((proxies_given)) || proxies=("${ALL_PROXIES[@]}")
for p in "${proxies[@]}"; do [[ $p == ringfloor-* ]] && ALL_PROXIES+=("$p"); done
for p in "${proxies[@]}"; do
  [[ $p != ringway-base || -n $baseline ]] || usage_err "ringway-base needs --baseline BIN (or env RINGWAY_BASELINE_BIN)"
done
# Every scenario of one invocation writes into one results dir; the last step merges them.
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
export LOADTEST_OUT=${LOADTEST_OUT:-$HERE/results/$STAMP-$(hostname -s 2>/dev/null || hostname)}
OUT=$LOADTEST_OUT
aggregate() { # merge every scenario under $OUT into results.json, summary.md and charts
  timeout "$REPORT_TIMEOUT" python3 "$HELPER" aggregate --out "$OUT" || echo "run.sh: aggregate failed" >&2
}
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
      LOADTEST_NESTED=1 "$0" "${rest[@]}" --no-build --scenario "$sc" || { rc=$?; ((rc > worst)) && worst=$rc; }
    done
    aggregate
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
if grep -qx '# standalone-scenario' "$scenario_file"; then
  # ringfloor does not apply to them: take it out of --proxies (all of it: skip the scenario).
  sa_args=() rf_out=''
  for ((i = 0; i < ${#ORIG_ARGS[@]}; i++)); do
    a=${ORIG_ARGS[i]}
    if [[ $a == --proxies ]] && ((i + 1 < ${#ORIG_ARGS[@]})); then
      i=$((i + 1)); kept=()
      IFS=, read -ra list <<<"${ORIG_ARGS[i]}"
      for q in "${list[@]}"; do if [[ $q == ringfloor-* ]]; then rf_out+=" $q"; else kept+=("$q"); fi; done
      if ((${#kept[@]} == 0)); then
        echo "$scenario: not applicable to$rf_out (loadtest/ringfloor relays small-keepalive and new-connection only)"
        exit 0
      fi
      sa_args+=(--proxies "$(IFS=,; echo "${kept[*]}")")
    else
      sa_args+=("$a")
    fi
  done
  [[ -z $rf_out ]] || echo "$scenario: not applicable to$rf_out (loadtest/ringfloor relays small-keepalive and new-connection only)"
  rc=0; bash "$scenario_file" "${sa_args[@]}" || rc=$?
  [[ -n ${LOADTEST_NESTED:-} ]] || aggregate
  exit "$rc"
fi
SCENARIO_WRK_ARGS=()
SCENARIO_OHA_ARGS=()
SCENARIO_WRK_LUA=''     # a lua file (relative to loadtest/) run before the percentile reporter
SCENARIO_RENDER_SED=()  # extra sed expressions for rendering this scenario's templates
SCENARIO_SCHEME=http
SCENARIO_UNIT=req       # what CPU is counted per: req, MiB (1 MiB per request), msg, conn
SCENARIO_BACKEND_PORTS=(18000)
SCENARIO_ERRORS_OK=0    # 1: errors are the measurement (backend-fail), not a broken run
SCENARIO_PROXIES=''     # proxies this scenario applies to (default: all)
# shellcheck source=scenarios/small-keepalive.sh
source "$scenario_file"
# A scenario may ask for its own connection count unless --connections was given.
if [[ -n ${SCENARIO_CONNECTIONS:-} && $connections_given == 0 ]]; then connections=$SCENARIO_CONNECTIONS; fi
: "${SCENARIO_DESC:?} ${SCENARIO_PATH:?} ${SCENARIO_EXPECT_STATUS:?}"
: "${SCENARIO_EXPECT_BODY=}"
: "${SCENARIO_TEMPLATE_BACKEND:=nginx-backend.conf}" "${SCENARIO_TEMPLATE_RINGWAY:=ringway.yaml}"
: "${SCENARIO_TEMPLATE_NGINX:=nginx-proxy.conf}" "${SCENARIO_TEMPLATE_HAPROXY:=haproxy.cfg}"
: "${SCENARIO_TEMPLATE_CADDY:=caddy.Caddyfile}"
BACKEND_PORT=${SCENARIO_BACKEND_PORTS[0]}

# ---- tools (never installed here: print the line and stop) ----------------
find_tool() { # name -> path on PATH or in sbin dirs (nginx/haproxy live there)
  local d
  command -v "$1" 2>/dev/null && return 0
  for d in /usr/local/sbin /usr/sbin /sbin "$HOME/.cargo/bin"; do [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }; done
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
((syscalls)) && need PERF perf linux-perf
if ((${#missing[@]})); then
  echo "run.sh: missing tools. Install them (as root, after apt-get update) with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  echo "  (optional: apt-get install -y caddy gnuplot-nox; cargo install oha --locked)" >&2
  exit 2
fi
# Optional tools: what needs them is skipped with the line that installs them.
CADDY=$(find_tool caddy) || CADDY=''
OHA=$(find_tool oha) || OHA=''
GNUPLOT=$(find_tool gnuplot) || GNUPLOT=''

declare -A PID=() PSTART=() STATUS=() REASON=()
for p in "${ALL_PROXIES[@]}"; do
  has_proxy "$p" || STATUS[$p]=skipped
  # ringway-base applies wherever ringway does.
  if [[ -n $SCENARIO_PROXIES && " $SCENARIO_PROXIES " != *" ${p%-base} "* && -z ${STATUS[$p]:-} ]]; then
    STATUS[$p]=skipped REASON[$p]="does not apply to this scenario"
  fi
done
for p in "${ALL_PROXIES[@]}"; do
  [[ $p == ringfloor-* && -z ${STATUS[$p]:-} ]] || continue
  if [[ $RINGFLOOR_SCENARIOS != *" $scenario "* ]]; then
    STATUS[$p]=skipped REASON[$p]="not applicable: loadtest/ringfloor relays small-keepalive and new-connection only"
  elif ((workers > 1)); then
    STATUS[$p]=skipped REASON[$p]="not applicable: loadtest/ringfloor is single-threaded (--workers 1 only)"
  fi
done
if has_proxy caddy && [[ -z $CADDY && -z ${STATUS[caddy]:-} ]]; then
  STATUS[caddy]=skipped REASON[caddy]="caddy not installed: apt-get install -y caddy"
  echo "run.sh: ${REASON[caddy]}; measuring without it" >&2
fi

# Every port must be free: otherwise we would measure someone else's server.
for port in "${SCENARIO_BACKEND_PORTS[@]}" $(for p in "${proxies[@]}"; do echo "${PORT[$p]}"; done); do
  (: <>"/dev/tcp/$HOST/$port") 2>/dev/null && die "port $port on $HOST is already in use; stop whatever listens there"
done

# ---- run dir (everything at runtime goes here) and results dir -------------
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringway-loadtest.XXXXXX")
mkdir -p "$RUN_DIR"/{logs,raw,nginx-backend,nginx-proxy,caddy}
SC_OUT="$OUT/$scenario"

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
tree() { # pid -> the pid and all its descendants (nginx with workers > 1 forks them)
  local c
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done
}
cpu_ticks() { # pid -> "utime stime" (stat fields 14, 15; all threads and children summed)
  local u=0 s=0 p f
  for p in $(tree "$1"); do
    f=($(proc_fields "$p")) || continue
    u=$((u + f[11])) s=$((s + f[12]))
  done
  echo "$u $s"
}
cpu_ticks_all() { # pid... -> "utime stime" summed
  local u=0 s=0 p t
  for p; do t=($(cpu_ticks "$p")); u=$((u + t[0])) s=$((s + t[1])); done
  echo "$u $s"
}
sched_ns() { # pid -> on-CPU ns summed over live threads (finer than ticks)
  local p
  for p in $(tree "$1"); do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{s += $1} END {printf "%.0f\n", s}'
}
rss_kb() { # pid -> "VmRSS VmHWM" in KiB, summed over the process tree (shared pages count twice)
  local p
  for p in $(tree "$1"); do cat /proc/"$p"/status 2>/dev/null; done |
    awk '/^VmRSS:/ {r += $2} /^VmHWM:/ {h += $2} END {printf "%d %d\n", r, h}'
}
port_open() { (: <>"/dev/tcp/$HOST/$1") 2>/dev/null; }

start_proc() { # name cpu cmd... (taskset execs, so $! is the server itself)
  local name=$1 cpu=$2 f; shift 2
  if ((pin)) && [[ -n $cpu ]]; then set -- "$TASKSET" -c "$cpu" "$@"; fi
  "$@" >>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null & # appended: a fresh proxy per run keeps the earlier runs' lines
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
BACKENDS=()
for ((i = 0; i < ${#SCENARIO_BACKEND_PORTS[@]}; i++)); do BACKENDS+=("backend$((i + 1))"); done
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${ALL_PROXIES[@]}" "${BACKENDS[@]}"; do stop_proc "$p"; done
  if [[ -d $SC_OUT ]]; then # keep non-empty logs next to the results
    mkdir -p "$SC_OUT/logs"
    find "$RUN_DIR/logs" -type f -size +0 -exec cp {} "$SC_OUT/logs/" \; 2>/dev/null || true
    rmdir "$SC_OUT/logs" 2>/dev/null || true
  fi
  if ((keep_tmp)); then echo "run.sh: kept $RUN_DIR" >&2; else rm -rf "$RUN_DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail_proxy() { STATUS[$1]=failed; REASON[$1]=$2; echo "  $1: FAILED: $2"; }

# Idle-connection scenarios hold thousands of sockets in every process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# HAProxy refuses to start when 2 x maxconn (+ a little) exceeds the fd limit.
MAXCONN=$((($(ulimit -n) - 100) / 2)); ((MAXCONN > MAXCONN_CAP)) && MAXCONN=$MAXCONN_CAP
NGINX_MASTER=off; ((workers > 1)) && NGINX_MASTER=on # one process is the one measured, unless workers are forked
render() { # template out [listen port] [instance name] -> copy with {{...}} filled in
  local i sed_args=()
  for ((i = 1; i < ${#SCENARIO_BACKEND_PORTS[@]}; i++)); do
    sed_args+=(-e "s|{{BACKEND_ADDR$((i + 1))}}|$HOST:${SCENARIO_BACKEND_PORTS[i]}|g")
  done
  sed -e "s|{{RUN_DIR}}|$RUN_DIR|g" \
      -e "s|{{BACKEND_ADDR}}|$HOST:$BACKEND_PORT|g" \
      -e "s|{{LISTEN_ADDR}}|$HOST:${3:-0}|g" -e "s|{{LISTEN_PORT}}|${3:-0}|g" \
      -e "s|{{INSTANCE}}|${4:-proxy}|g" -e "s|{{WORKERS}}|$workers|g" -e "s|{{NGINX_MASTER}}|$NGINX_MASTER|g" \
      -e "s|{{MAXCONN}}|$MAXCONN|g" \
      "${sed_args[@]}" "${SCENARIO_RENDER_SED[@]}" "$HERE/$1" >"$2"
}

# ---- core layout ----------------------------------------------------------
# split (default): the proxy alone on its core(s); the backend shares the load generator's,
# because in production the backend is another machine and a proxy that shares its core with
# the backend pays for the backend's cache and scheduler pressure (doubling nginx's and
# HAProxy's costs on a 2-core machine). shared: the round-1 layout, kept for comparison.
read -ra CPUS <<<"$("$PYTHON" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
PROXY_CPU='' BACKEND_CPU='' LOADGEN_CPU=''
if ((pin)); then
  if ((workers > 1 && ${#CPUS[@]} < workers + 1)); then
    echo "run.sh: $workers workers need $((workers + 1)) CPUs to pin; not pinning" >&2; pin=0
  elif ((${#CPUS[@]} < 2)); then
    echo "run.sh: only one CPU available, not pinning" >&2; pin=0
  elif [[ $placement == split ]]; then
    PROXY_CPU=$(IFS=,; echo "${CPUS[*]:0:workers}")
    BACKEND_CPU=$(IFS=,; echo "${CPUS[*]:workers}") LOADGEN_CPU=$BACKEND_CPU
  elif ((workers > 1)); then
    PROXY_CPU=$(IFS=,; echo "${CPUS[*]:0:workers}") BACKEND_CPU=$PROXY_CPU LOADGEN_CPU=${CPUS[-1]}
  elif ((${#CPUS[@]} >= 3)); then
    PROXY_CPU=${CPUS[0]} BACKEND_CPU=${CPUS[1]} LOADGEN_CPU=${CPUS[-1]}
  else
    PROXY_CPU=${CPUS[0]} BACKEND_CPU=${CPUS[0]} LOADGEN_CPU=${CPUS[1]}
  fi
fi


# ---- machine ----------------------------------------------------------------
mkdir -p "$SC_OUT"
tools=(--tool wrk="$WRK" --tool nginx="$NGINX")
[[ -n ${HAPROXY:-} ]] && tools+=(--tool haproxy="$HAPROXY")
[[ -n $CADDY ]] && tools+=(--tool caddy="$CADDY")
[[ -n $OHA ]] && tools+=(--tool oha="$OHA")
[[ -n $GNUPLOT ]] && tools+=(--tool gnuplot="$GNUPLOT")
"$PYTHON" "$HELPER" machine --out "$RUN_DIR/machine.json" "${tools[@]}" --repo "$REPO"
[[ -n $OHA ]] || echo "oha:       not installed (optional: cargo install oha --locked)"
[[ -n $GNUPLOT ]] || echo "gnuplot:   not installed, no charts (optional: apt-get install -y gnuplot-nox)"
[[ -n $CADDY ]] || echo "caddy:     not installed, not measured (optional: apt-get install -y caddy)"
cp "$RUN_DIR/machine.json" "$OUT/machine.json"
echo "scenario:  $scenario — $SCENARIO_DESC"
echo "method:    $rounds round(s) x [${proxies[*]}] with $workers worker(s) each, each a ${warmup}s warm-up then ${duration}s measured, $connections connections"
if ((pin)); then
  echo "cores:     $placement placement: proxy on CPU $PROXY_CPU, backend on CPU $BACKEND_CPU, load generator on CPU $LOADGEN_CPU (taskset)"
else
  echo "cores:     not pinned"
fi
echo "results:   ${SC_OUT#"$REPO"/}"
echo

# ---- ringway build ----------------------------------------------------------
RINGWAY="${RINGWAY_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ringway}"
if has_proxy ringway && [[ -z ${STATUS[ringway]:-} ]]; then
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
RINGWAY_BASE=$baseline # checked to be executable above
if has_proxy ringway-base && [[ -z ${STATUS[ringway-base]:-} ]]; then
  echo "baseline:  ringway-base is $RINGWAY_BASE$([[ -f $RINGWAY_BASE.rev ]] && echo " ($(cut -c1-12 "$RINGWAY_BASE.rev"))")"
fi

# tcpbench is the load generator and backend of some scenarios (websocket).
TCPBENCH_DIR="$HERE/tcpbench"
TCPBENCH="$TCPBENCH_DIR/target/release/tcpbench"
build_tcpbench() { # always (a no-op when up to date): --no-build is about ringway
  [[ -n ${TCPBENCH_BUILT:-} ]] && return 0
  echo "building:  tcpbench (cargo build --release in loadtest/tcpbench)"
  (cd "$TCPBENCH_DIR" && CARGO_TARGET_DIR="$TCPBENCH_DIR/target" "$TIMEOUT" "$BUILD_TIMEOUT" cargo build --release -q) ||
    die "tcpbench build failed"
  TCPBENCH_BUILT=1
}

# ringfloor: built like tcpbench (always; a no-op when up to date), only when it is measured.
RINGFLOOR_DIR="$HERE/ringfloor"
RINGFLOOR_TARGET=${RINGFLOOR_TARGET_DIR:-$RINGFLOOR_DIR/target}
RINGFLOOR="$RINGFLOOR_TARGET/release/ringfloor"
rf_wanted=0
for p in "${ALL_PROXIES[@]}"; do [[ $p == ringfloor-* && -z ${STATUS[$p]:-} ]] && rf_wanted=1; done
if ((rf_wanted)); then
  echo "building:  ringfloor (cargo build --release in loadtest/ringfloor)"
  if ! (cd "$RINGFLOOR_DIR" && CARGO_TARGET_DIR="$RINGFLOOR_TARGET" "$TIMEOUT" "$BUILD_TIMEOUT" cargo build --release -q) \
    >"$RUN_DIR/logs/ringfloor-build.log" 2>&1; then
    for p in "${ALL_PROXIES[@]}"; do
      [[ $p == ringfloor-* && -z ${STATUS[$p]:-} ]] && fail_proxy "$p" "ringfloor build failed: $(tail -n1 "$RUN_DIR/logs/ringfloor-build.log")"
    done
  fi
fi

# ---- start everything (once; idle peers cost nothing while another is measured)
probe() { # port [scheme] -> "" if the scenario's expected response comes back, else why not
  if declare -F scenario_probe >/dev/null; then scenario_probe "$1"; return; fi
  "$PYTHON" "$HELPER" probe --url "${2:-$SCENARIO_SCHEME}://$HOST:$1$SCENARIO_PATH" \
    --status "$SCENARIO_EXPECT_STATUS" --body "$SCENARIO_EXPECT_BODY" 2>&1 || true
}

# A scenario may prepare files in the run dir (e.g. an object for the backend to serve).
if declare -F scenario_setup >/dev/null; then scenario_setup "$RUN_DIR"; fi
start_backend() { # index (0-based) -> started and listening, or die
  local i=$1 name=${BACKENDS[$1]} port=${SCENARIO_BACKEND_PORTS[$1]} conf
  if declare -F scenario_backend_cmd >/dev/null; then
    scenario_backend_cmd "$HOST:$port" # sets BACKEND_CMD
    start_proc "$name" "$BACKEND_CPU" "${BACKEND_CMD[@]}"
  else
    conf="$RUN_DIR/nginx-$name.conf"
    render "$SCENARIO_TEMPLATE_BACKEND" "$conf" "$port" "$name"
    # The template listens on {{BACKEND_ADDR}}: point it at this instance's port.
    sed -i "s|listen $HOST:$BACKEND_PORT;|listen $HOST:$port;|" "$conf"
    start_proc "$name" "$BACKEND_CPU" "$NGINX" -p "$RUN_DIR/nginx-backend" -e "$RUN_DIR/logs/nginx-$name.error.log" -c "$conf"
  fi
  wait_port "$name" "$port" || die "backend $name did not start on $HOST:$port: $(log_tail "$name")"
}
for ((i = 0; i < ${#BACKENDS[@]}; i++)); do start_backend "$i"; done
if [[ -z ${SCENARIO_SKIP_BACKEND_PROBE:-} ]]; then
  why=$(probe "$BACKEND_PORT" http)
  [[ -z $why ]] || die "backend answers wrongly: $why"
fi

start_peer() { # name -> starts it, or marks it failed
  local p=$1 port=${PORT[$1]} conf why rc
  case $p in
    ringway|ringway-base) # the same template, placement and environment; only the port differs
      local bin=$RINGWAY; [[ $p == ringway-base ]] && bin=$RINGWAY_BASE
      conf="$RUN_DIR/$p.yaml"; render "$SCENARIO_TEMPLATE_RINGWAY" "$conf" "$port"
      # RUST_LOG would override the config's log level and skew the numbers.
      start_proc "$p" "$PROXY_CPU" env -u RUST_LOG "$bin" --config "$conf" ;;
    nginx)
      conf="$RUN_DIR/nginx-proxy.conf"; render "$SCENARIO_TEMPLATE_NGINX" "$conf" "$port"
      start_proc nginx "$PROXY_CPU" "$NGINX" -p "$RUN_DIR/nginx-proxy" -e "$RUN_DIR/logs/nginx-proxy.error.log" -c "$conf" ;;
    haproxy)
      conf="$RUN_DIR/haproxy.cfg"; render "$SCENARIO_TEMPLATE_HAPROXY" "$conf" "$port"
      start_proc haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$conf" ;;
    ringfloor-*) # no config: listen, backend and mode on the command line
      start_proc "$p" "$PROXY_CPU" "$RINGFLOOR" "$HOST:$port" "$HOST:$BACKEND_PORT" "${RINGFLOOR_MODE[${p#ringfloor-}]}" ;;
    caddy)
      conf="$RUN_DIR/Caddyfile"; render "$SCENARIO_TEMPLATE_CADDY" "$conf" "$port"
      # GOMAXPROCS is Caddy's worker count; HOME/XDG keep its state inside the run dir.
      start_proc caddy "$PROXY_CPU" env GOMAXPROCS="$workers" HOME="$RUN_DIR/caddy" \
        XDG_DATA_HOME="$RUN_DIR/caddy" XDG_CONFIG_HOME="$RUN_DIR/caddy" \
        "$CADDY" run --adapter caddyfile --config "$conf" ;;
  esac
  rc=0; wait_port "$p" "$port" || rc=$?
  if ((rc == 1)); then
    why="$(exit_reason "$p") before listening on $HOST:$port"
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
echo "starting:  backend(s) ${BACKENDS[*]} on ports ${SCENARIO_BACKEND_PORTS[*]}"
for p in "${proxies[@]}"; do [[ -n ${STATUS[$p]:-} ]] || start_peer "$p"; done
echo

# ---- load generators ----------------------------------------------------------
# Every measured wrk run reports exact percentiles through a done() hook, after the
# scenario's own lua (if any).
WRK_LUA="$RUN_DIR/wrk.lua"
{ [[ -n $SCENARIO_WRK_LUA ]] && cat "$HERE/$SCENARIO_WRK_LUA"; cat "$HERE/wrk/percentiles.lua"; } >"$WRK_LUA"
WARM_LUA=()
[[ -n $SCENARIO_WRK_LUA ]] && WARM_LUA=(-s "$HERE/$SCENARIO_WRK_LUA")
loadgen_prefix=()
((pin)) && loadgen_prefix=("$TASKSET" -c "$LOADGEN_CPU")
run_wrk() { # url base seconds [warmup] -> wrk output in base.wrk (or base.warmup)
  local url=$1 base=$2 secs=$3 lua=(-s "$WRK_LUA") out=$2.wrk
  if [[ ${4:-} == warmup ]]; then lua=("${WARM_LUA[@]}"); out=$2.warmup; fi
  "$TIMEOUT" $((secs + RUN_SLACK)) "${loadgen_prefix[@]}" "$WRK" -t1 -c"$connections" -d"${secs}s" --latency \
    "${lua[@]}" "${SCENARIO_WRK_ARGS[@]}" "$url" >"$out" 2>&1
}
run_oha() { # url base seconds [warmup] -> oha's JSON in base.oha (or base.warmup)
  local url=$1 base=$2 secs=$3 out=$2.oha
  [[ ${4:-} == warmup ]] && out=$2.warmup
  "$TIMEOUT" $((secs + RUN_SLACK)) "${loadgen_prefix[@]}" "$OHA" --no-tui "${OHA_JSON[@]}" -z "${secs}s" -c "$connections" \
    "${SCENARIO_OHA_ARGS[@]}" "$url" >"$out" 2>"$out.err"
}
# Newer oha spells JSON output --output-format json; older ones -j.
OHA_JSON=(-j)
[[ -n $OHA ]] && "$OHA" --help 2>/dev/null | grep -q -- '--output-format' && OHA_JSON=(--output-format json)
LOADGEN=wrk
if [[ ${SCENARIO_LOADGEN:-wrk} == oha ]]; then
  if [[ -n $OHA ]]; then LOADGEN=oha
  else echo "run.sh: oha not installed (cargo install oha --locked): this scenario falls back to wrk ${SCENARIO_WRK_ARGS[*]}" >&2
  fi
fi

# ---- measure ----------------------------------------------------------------
# --syscalls: every syscall the proxy's threads enter (raw_syscalls plus one counter per
# syscall) and the io_uring work it submits: SQEs (io_uring_submit_req), CQEs, internal poll
# arms (a recv/accept not ready at submission), io-wq punts, plus context switches.
PERF_EVENTS='raw_syscalls:sys_enter,syscalls:sys_enter_*,context-switches'
PERF_EVENTS+=',io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm'
PERF_EVENTS+=',io_uring:io_uring_queue_async_work,io_uring:io_uring_task_add'
start_counting() { # pid file -> COUNTING_PID (perf stat attached to every thread of pid)
  "$PERF" stat -x, -o "$2" -e "$PERF_EVENTS" -p "$1" >/dev/null 2>"$2.err" &
  COUNTING_PID=$!
  sleep 0.5 # attached before the first request (the proxy is idle meanwhile)
}
stop_counting() { kill -INT "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
seq=0
measure() { # proxy round
  local p=$1 r=$2 pid=${PID[$1]} url="$SCENARIO_SCHEME://$HOST:${PORT[$1]}$SCENARIO_PATH" base rc=0
  local cpu0 cpu1 bcpu0 bcpu1 ns0 ns1 stat0 stat1 t0 t1 rss0 rss1 bpids=()
  if [[ -n ${SCENARIO_FRESH_PROXY:-} ]]; then # a new process per run (idle-10k measures its growth)
    stop_proc "$p"; start_peer "$p" >/dev/null
    [[ ${STATUS[$p]} == ok ]] || { echo "  round $r $p: FAILED to restart: ${REASON[$p]}"; return 0; }
    pid=${PID[$p]}
  fi
  for b in "${BACKENDS[@]}"; do bpids+=("${PID[$b]}"); done
  seq=$((seq + 1)); base="$RUN_DIR/raw/$(printf %03d "$seq")-$p-r$r"
  if declare -F scenario_warmup >/dev/null; then scenario_warmup "$p" "$url" "$base" || true
  elif ! declare -F scenario_load >/dev/null; then "run_$LOADGEN" "$url" "$base" "$warmup" warmup || true
  fi
  local perf_pid=''
  if ((syscalls)); then start_counting "$pid" "$base.perf"; perf_pid=$COUNTING_PID; fi
  rss0=$(rss_kb "$pid")
  cpu0=$(cpu_ticks "$pid") bcpu0=$(cpu_ticks_all "${bpids[@]}") ns0=$(sched_ns "$pid")
  stat0=$(head -n1 /proc/stat) t0=$(date +%s.%N)
  times >"$base.times0" # children's CPU so far; the delta is the load generator's own CPU
  if declare -F scenario_load >/dev/null; then
    scenario_load "$p" "$url" "$base" || rc=$?
  else
    "run_$LOADGEN" "$url" "$base" "$duration" || rc=$?
  fi
  times >"$base.times1"
  [[ -n $perf_pid ]] && stop_counting "$perf_pid"
  cpu1=$(cpu_ticks "$pid") bcpu1=$(cpu_ticks_all "${bpids[@]}") ns1=$(sched_ns "$pid")
  stat1=$(head -n1 /proc/stat) t1=$(date +%s.%N)
  rss1=$(rss_kb "$pid")
  local up=1; alive "$p" || up=0
  cat >"$base.meta" <<EOF
proxy=$p
round=$r
seq=$seq
port=${PORT[$p]}
pid=$pid
loadgen_rc=$rc
wall_start=$t0
wall_end=$t1
cpu_before=$cpu0
cpu_after=$cpu1
backend_cpu_before=$bcpu0
backend_cpu_after=$bcpu1
sched_ns_before=$ns0
sched_ns_after=$ns1
rss_before=$rss0
rss_after=$rss1
procstat_before=$stat0
procstat_after=$stat1
alive_after=$up
unit=$SCENARIO_UNIT
errors_ok=$SCENARIO_ERRORS_OK
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
unit=$SCENARIO_UNIT
loadgen=$(if declare -F scenario_load >/dev/null; then echo "${SCENARIO_LOADGEN_NAME:-custom}"; else echo "$LOADGEN"; fi)
duration_s=$duration
warmup_s=$warmup
rounds=$rounds
workers=$workers
connections=$connections
loadgen_extra_args=${SCENARIO_WRK_ARGS[*]} ${SCENARIO_WRK_LUA}
pinned=$pin
placement=$placement
syscalls=$syscalls
proxy_cpu=$PROXY_CPU
backend_cpu=$BACKEND_CPU
loadgen_cpu=$LOADGEN_CPU
started_utc=$STAMP
ringway_bin=$RINGWAY
ringway_base_bin=$(has_proxy ringway-base && echo "$RINGWAY_BASE")
ringway_base_rev=$(has_proxy ringway-base && [[ -f $RINGWAY_BASE.rev ]] && head -n1 "$RINGWAY_BASE.rev")
EOF
rc=0
"$PYTHON" "$HELPER" report --run-dir "$RUN_DIR" --out "$SC_OUT" || rc=$?
[[ -n ${LOADTEST_NESTED:-} ]] || aggregate
exit "$rc"
