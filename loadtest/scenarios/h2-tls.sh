# Scenario: h2-tls (sourced by run.sh; bash). HTTP/2 over TLS from the client, HTTP/1.1
# keep-alive to the backend: h2load with 16 connections x 10 concurrent streams each, the 12-byte
# response of small-keepalive. Every proxy terminates TLS with the tls scenario's certificate and
# offers h2 by ALPN: ringway by default (`protocols: [h1, h2]`), nginx `listen ... ssl http2`
# (nginx 1.22 has no `http2 on;`), HAProxy `alpn h2,http/1.1`, Caddy `protocols h1 h2`.
# The issue 13 goal: ringway's CPU per request at most 0.7x HAProxy's and below nginx's.
source "$HERE/scenarios/tls.sh" # certificate setup and the TLS templates
SCENARIO_DESC='12-byte body over HTTP/2 + TLS (h2load, 16 connections x 10 streams), HTTP/1.1 keep-alive upstream, GET /'
SCENARIO_CONNECTIONS=16
SCENARIO_LOADGEN_NAME=h2load
H2_STREAMS=10
SCENARIO_RENDER_SED=(
  -e 's|^\( *listen [^;]*\) ssl;|\1 ssl http2;|'
  -e 's|alpn http/1.1$|alpn h2,http/1.1|'
  -e 's|protocols h1$|protocols h1 h2|'
)
H2LOAD=$(command -v h2load) || die "the h2-tls scenario needs h2load: apt-get install -y nghttp2-client"

h2() { # port seconds connections -> h2load's output (h2 by ALPN over TLS)
  "$TIMEOUT" $(( ${2%.*} + RUN_SLACK )) "${loadgen_prefix[@]}" "$H2LOAD" -t1 -c"$3" -m"$H2_STREAMS" \
    -D "$2" "https://$HOST:$1$SCENARIO_PATH"
}
scenario_probe() { # port -> "" when the proxy answers over h2 (the backend: plain HTTP/1.1)
  if [[ $1 == "$BACKEND_PORT" ]]; then
    "$PYTHON" "$HELPER" probe --url "http://$HOST:$1$SCENARIO_PATH" --status "$SCENARIO_EXPECT_STATUS" \
      --body "$SCENARIO_EXPECT_BODY" 2>&1 || true
    return
  fi
  local out
  out=$("$TIMEOUT" 20 "$H2LOAD" -n4 -c1 -m2 "https://$HOST:$1$SCENARIO_PATH" 2>&1) || true
  if [[ $out != *"Application protocol: h2"* || $out != *"4 succeeded"* || $out != *"4 2xx"* ]]; then
    echo "no h2 answer through port $1: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
  fi
}
scenario_warmup() { h2 "${PORT[$1]}" "$warmup" "$connections" >/dev/null 2>&1; }
scenario_load() { # proxy url base -> base.metrics
  local out rc=0 n secs bad codes f e t c4 c5
  out=$(h2 "${PORT[$1]}" "$duration" "$connections" 2>&1) || rc=$?
  printf '%s\n' "$out" >"$3.h2load"
  # "finished in 10.00s, ..." and "requests: N total, N started, N done, S succeeded, F failed,
  # E errored, T timeout"; requests cut off by -D's deadline are neither.
  secs=$(sed -n 's/^finished in \([0-9.]*\)s.*/\1/p' <<<"$out")
  n=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
  bad=$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3/p' <<<"$out")
  # "status codes: A 2xx, B 3xx, C 4xx, D 5xx": an error status is an error too.
  codes=$(sed -n 's/^status codes: .* \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\1 \2/p' <<<"$out")
  [[ -n $secs && -n $n && -n $bad && -n $codes ]] || { echo "h2load said: $out" >&2; return 1; }
  read -r f e t <<<"$bad"
  read -r c4 c5 <<<"$codes"
  echo "loadgen=h2load units=$((n - c4 - c5)) seconds=$secs errors=$((f + e + t + c4 + c5)) streams=$H2_STREAMS" >"$3.metrics"
  return "$rc"
}
