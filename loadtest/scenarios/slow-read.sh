# Scenario: slow-read (sourced by run.sh; bash). A slow-read attack (slowhttptest -X): slow
# readers ask for a 1 MiB response with a tiny receive window and read 32 bytes a second, so
# the proxy holds a response it cannot hand on. Meanwhile a normal client asks for a small
# response 200 times a second on one keep-alive connection (every 10th request the 1 MiB one,
# on a second connection). Reports the normal client's latency (p50..p99.9, max_us; the 1 MiB
# fetches' big_p99_us, big_max_us), and the proxy's file descriptors and RSS per slow
# connection. A fresh proxy process per run, so every run starts from no held connections.
SLOW_CONNS=1000
((quick)) && SLOW_CONNS=300
SCENARIO_DESC="$SLOW_CONNS slow readers of 1 MiB responses (32 B/s each); a normal client's latency, GET / at 200/s"
SCENARIO_PATH=/
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_TEMPLATE_BACKEND=nginx-backend-large.conf
SCENARIO_UNIT=req
SCENARIO_LOADGEN_NAME=slowread
SCENARIO_CONNECTIONS=2     # the normal client's connections (the slow readers are extra)
SCENARIO_FRESH_PROXY=1
SLOW_SETUP_TIMEOUT=120     # seconds to connect every slow reader and tear them down again
# SLOWREAD_TRACE=DIR (off by default, it costs CPU): ringway logs at debug level (its splices'
# stall-grace expiries) and writes a JSON access log to DIR/ringway-access.log (client ports and
# timings), to match with the outliers slowread.py lists on stderr.
if [[ -n ${SLOWREAD_TRACE:-} ]]; then
  mkdir -p "$SLOWREAD_TRACE"
  SCENARIO_RENDER_SED=(-e "s|^log: { level: warn }|log: { level: debug, access_log: { path: \"$SLOWREAD_TRACE/ringway-access.log\", format: json } }|")
fi

scenario_setup() { # run dir -> the 1 MiB object the backend serves
  head -c 1048576 /dev/urandom >"$1/1m.bin"
}
scenario_load() { # proxy url base
  "$TIMEOUT" $((duration + SLOW_SETUP_TIMEOUT)) "${loadgen_prefix[@]}" "$PYTHON" "$HERE/slowread.py" run \
    --port "${PORT[$1]}" --pid "${PID[$1]}" --backend-pid "${PID[${BACKENDS[0]}]}" --conns "$SLOW_CONNS" --seconds "$duration" --out "$3.metrics" >/dev/null
}
