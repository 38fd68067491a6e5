# Scenario: websocket (sourced by run.sh; bash). WebSocket echo through each proxy: the
# backend is `tcpbench ws-echo`, the client `tcpbench ws-load` (16 connections, each sending a
# 128-byte message and waiting for its echo). Reports messages/s and the proxy's CPU µs per
# message (each message crosses the proxy twice: there and back).
SCENARIO_DESC='WebSocket echo, 16 connections ping-ponging 128-byte binary messages, GET /ws + Upgrade'
SCENARIO_PATH=/ws
SCENARIO_EXPECT_STATUS=200
SCENARIO_UNIT=msg
SCENARIO_CONNECTIONS=16
SCENARIO_LOADGEN_NAME=tcpbench-ws
WS_MESSAGE_BYTES=128
PROBE_SECONDS=0.3   # one short echo session proves the upgrade works through a proxy
# nginx forwards Upgrade only when told to (HAProxy, Caddy and ringway do it by themselves).
SCENARIO_RENDER_SED=(-e 's|proxy_set_header Connection "";|proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";|')

scenario_backend_cmd() { build_tcpbench; BACKEND_CMD=("$TCPBENCH" ws-echo "$1"); }
ws_load() { # port seconds connections -> tcpbench's result line
  "$TIMEOUT" $(( ${2%.*} + RUN_SLACK )) "${loadgen_prefix[@]}" "$TCPBENCH" ws-load "$HOST:$1" "$2" "$3" "$WS_MESSAGE_BYTES"
}
scenario_probe() { # port -> "" when an echo session works
  local out
  out=$(ws_load "$1" "$PROBE_SECONDS" 1 2>&1) || true
  [[ $out =~ messages=[1-9].*errors=0 ]] || echo "WebSocket echo through port $1 failed: ${out:-no output}"
}
scenario_warmup() { ws_load "${PORT[$1]}" "$warmup" "$connections" >/dev/null; }
scenario_load() { # proxy url base
  local out
  out=$(ws_load "${PORT[$1]}" "$duration" "$connections") || return
  echo "loadgen=tcpbench-ws ${out/messages=/units=}" >"$3.metrics"
}
