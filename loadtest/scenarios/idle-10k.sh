# Scenario: idle-10k (sourced by run.sh; bash). Memory per idle keep-alive connection: a fresh
# proxy process per run, then 10,000 client connections opened one after another, one request
# on each (so each is a real, used keep-alive connection), held; the proxy's RSS growth divided
# by the connections held is rss_per_conn_kb. --quick opens 1,000.
SCENARIO_DESC='idle keep-alive connections held (one request each): proxy RSS per connection'
SCENARIO_PATH=/
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_UNIT=conn
SCENARIO_LOADGEN_NAME=idle
SCENARIO_FRESH_PROXY=1   # RSS growth is only meaningful from a process that never held them
IDLE_CONNS=${IDLE_CONNS_FULL:-10000} # idle-http sets 5,000
((quick)) && IDLE_CONNS=1000
# HAProxy needs two fds per connection: with a low hard limit, hold what fits and say so.
IDLE_FIT=$((($(ulimit -Hn) - 100) / 2 - 200))
if ((IDLE_CONNS > IDLE_FIT)); then
  echo "$scenario: ulimit -Hn is $(ulimit -Hn); HAProxy needs 2 fds per connection: holding $IDLE_FIT, not $IDLE_CONNS" >&2
  IDLE_CONNS=$IDLE_FIT
fi
IDLE_TIMEOUT=180         # seconds to open, hold and close them all, even on a slow machine
SCENARIO_CONNECTIONS=$IDLE_CONNS
SCENARIO_DESC="$IDLE_CONNS $SCENARIO_DESC"

scenario_load() { # proxy url base
  "$TIMEOUT" "$IDLE_TIMEOUT" "${loadgen_prefix[@]}" "$PYTHON" "$HELPER" idle --port "${PORT[$1]}" \
    --conns "$IDLE_CONNS" --pid "${PID[$1]}" --timeout $((IDLE_TIMEOUT - 30)) --out "$3.metrics"
}
