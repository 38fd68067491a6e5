#!/usr/bin/env bash
# User-space instructions per request under callgrind (kernel work not counted): proxy on
# 127.0.0.1:28101, nginx backend on 28100; wrk -c8 for 8 s after counters are zeroed.
set -uo pipefail
name=$1; shift
D=/tmp/rf/prof; mkdir -p $D/nb $D/logs $D/nginx-backend/client_body $D/nginx-backend/proxy $D/nginx-backend/fastcgi $D/nginx-backend/uwsgi $D/nginx-backend/scgi
sed -e "s|{{RUN_DIR}}|$D|g" -e "s|{{BACKEND_ADDR}}|127.0.0.1:28100|g" -e "s|{{INSTANCE}}|b|g" /work/wt-ringfloor/loadtest/nginx-backend.conf > $D/nb.conf
taskset -c 1 nginx -p $D/nb -e $D/logs/e.log -c $D/nb.conf & B=$!
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file=$D/$name.cg.%p "$@" > $D/logs/$name.cg.log 2>&1 & P=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:28101/ >/dev/null && break; sleep 0.2; done
taskset -c 1 wrk -t1 -c8 -d2s http://127.0.0.1:28101/ >/dev/null 2>&1
callgrind_control -z $P >/dev/null
taskset -c 1 wrk -t1 -c8 -d8s http://127.0.0.1:28101/ > $D/$name.cg.wrk 2>&1
callgrind_control -d $P >/dev/null
kill $P; wait $P 2>/dev/null; kill $B; wait $B 2>/dev/null
reqs=$(awk '/requests in/ {print $1}' $D/$name.cg.wrk)
f=$(ls -t $D/$name.cg.* | grep -v -e log -e wrk | head -1)
ir=$(callgrind_annotate $f 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "$name: requests $reqs, Ir $ir, Ir/req $(python3 -c "print(round($ir/$reqs))")"
