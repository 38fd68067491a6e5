# Scenario: grpc-unary (sourced by run.sh; bash). gRPC-sized unary calls over HTTP/2 end to
# end: h2load speaks h2c (prior knowledge) to the proxy, 16 connections x 10 streams, each a
# POST of a 105-byte gRPC message with content-type application/grpc; the proxy forwards over
# cleartext HTTP/2 to an nginx h2c backend answering 100 bytes: ringway to an `h2c://` target,
# nginx with grpc_pass, HAProxy with `proto h2`. Caddy is left out (its h2c listener and
# upstream need options Debian's 2.6 build does not document). The backend's body has a
# length and no trailers (nginx serves a 100-byte file); gRPC trailers are tested in
# tests/grpc.rs, not here.
SCENARIO_DESC='gRPC-sized unary calls: h2c clients (h2load, 16 connections x 10 streams, 105-byte POSTs) to an h2c backend (100-byte answers)'
SCENARIO_PATH=/bench.Svc/Echo
SCENARIO_EXPECT_STATUS=200
SCENARIO_CONNECTIONS=16
SCENARIO_PROXIES='ringway nginx haproxy'
SCENARIO_LOADGEN_NAME=h2load
SCENARIO_SKIP_BACKEND_PROBE=1 # the backend speaks h2c only; each proxy is probed through h2load
SCENARIO_TEMPLATE_BACKEND=nginx-backend-h2c.conf
SCENARIO_TEMPLATE_RINGWAY=ringway-grpc.yaml
SCENARIO_TEMPLATE_NGINX=nginx-grpc.conf
SCENARIO_TEMPLATE_HAPROXY=haproxy-grpc.cfg
GRPC_STREAMS=10

scenario_setup() { # run dir
  H2LOAD=$(find_tool h2load) || die "grpc-unary needs h2load: apt-get install -y nghttp2-client"
  # A gRPC message: 1 flag byte, a 4-byte big-endian length (100), 100 bytes of payload.
  { printf '\x00\x00\x00\x00\x64'; head -c 100 /dev/zero | tr '\0' 'p'; } >"$1/grpc-request.bin"
  mkdir -p "$1/www"
  head -c 100 /dev/zero | tr '\0' 'r' >"$1/www/grpc-reply.bin"
}

grpc_load() { # port seconds connections -> h2load's output
  "$TIMEOUT" $(( ${2%.*} + RUN_SLACK )) "${loadgen_prefix[@]}" "$H2LOAD" -c "$3" -m "$GRPC_STREAMS" \
    -D "$2" -d "$RUN_DIR/grpc-request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://$HOST:$1$SCENARIO_PATH" 2>&1
}

# h2load's summary -> the harness's metrics line (units: calls answered 2xx).
grpc_metrics() { # seconds <<< h2load output
  awk -v secs="$1" '
    /^requests:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^(failed|errored|timeout),?$/) bad += $i; if ($(i+1) ~ /^succeeded,?$/) ok = $i } }
    /^status codes:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^2xx,?$/) two = $i }
    END { if (ok == "") exit 1; printf "loadgen=h2load units=%d seconds=%s errors=%d\n", (two < ok ? two : ok), secs, bad + (ok > two ? ok - two : 0) }'
}

scenario_probe() { # port -> "" when calls come back 200
  local out
  out=$(grpc_load "$1" 1 1) || true
  [[ $out =~ status\ codes:\ [1-9][0-9]*\ 2xx ]] && [[ $out =~ [[:space:]]0\ failed ]] ||
    echo "h2load through port $1 failed: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
}
scenario_warmup() { grpc_load "${PORT[$1]}" "$warmup" "$connections" >/dev/null; }
scenario_load() { # proxy url base
  local out
  out=$(grpc_load "${PORT[$1]}" "$duration" "$connections") || { echo "$out" >"$3.h2load"; return 1; }
  echo "$out" >"$3.h2load"
  grpc_metrics "$duration" <<<"$out" >"$3.metrics"
}
