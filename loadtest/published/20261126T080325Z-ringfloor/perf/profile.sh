#!/usr/bin/env bash
# perf profile of one proxy under small-keepalive load (split placement), own ports.
set -euo pipefail
name=$1; shift   # label; rest: the proxy command (listening on 127.0.0.1:28101, backend 127.0.0.1:28100)
D=/tmp/rf/prof; mkdir -p $D/nb $D/logs $D/nginx-backend/client_body $D/nginx-backend/proxy $D/nginx-backend/fastcgi $D/nginx-backend/uwsgi $D/nginx-backend/scgi
sed -e "s|{{RUN_DIR}}|$D|g" -e "s|{{BACKEND_ADDR}}|127.0.0.1:28100|g" -e "s|{{INSTANCE}}|b|g" /work/wt-ringfloor/loadtest/nginx-backend.conf > $D/nb.conf
taskset -c 1 nginx -p $D/nb -e $D/logs/e.log -c $D/nb.conf & B=$!
sleep 0.3
taskset -c 0 "$@" > $D/logs/$name.log 2>&1 & P=$!
sleep 0.5
curl -sf http://127.0.0.1:28101/ >/dev/null || { echo "$name: no answer"; kill $P $B; exit 1; }
taskset -c 1 wrk -t1 -c64 -d9s http://127.0.0.1:28101/ > $D/$name.wrk 2>&1 & W=$!
sleep 1.5
perf record -F 4999 -g -p $P -o $D/$name.perf.data -- sleep 6 2>/dev/null >/dev/null
wait $W
kill $P $B; wait $P $B 2>/dev/null || true
grep Requests/sec $D/$name.wrk
