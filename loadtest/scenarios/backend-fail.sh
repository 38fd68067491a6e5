# Scenario: backend-fail (sourced by run.sh; bash). Three backends balanced round robin, with
# the health checks each proxy has: active (GET / every 1 s) and passive (one failure takes a
# backend out for 2 s) where supported; nginx has passive checks only (active ones are nginx
# Plus). A third into each run the third backend is killed (SIGKILL); the report counts the
# errors the client saw while the proxy noticed, and the requests/s around them. The backend
# comes back after the run, and the proxies get HEAL_WAIT to take it in again.
SCENARIO_DESC='3 backends round robin with health checks; one killed a third into the run: client errors and RPS'
SCENARIO_PATH=/
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_BACKEND_PORTS=(18000 18007 18008)
SCENARIO_ERRORS_OK=1   # the errors are what this scenario measures
SCENARIO_LOADGEN_NAME=wrk
SCENARIO_TEMPLATE_RINGWAY=scenarios/backend-fail/ringway.yaml
SCENARIO_TEMPLATE_NGINX=scenarios/backend-fail/nginx-proxy.conf
SCENARIO_TEMPLATE_HAPROXY=scenarios/backend-fail/haproxy.cfg
SCENARIO_TEMPLATE_CADDY=scenarios/backend-fail/Caddyfile
HEAL_WAIT=3   # seconds: > the 2 s passive timeouts and 1 s check interval, so all three are back

scenario_load() { # proxy url base
  local wrk_pid rc=0
  run_wrk "$2" "$3" "$duration" &
  wrk_pid=$!
  sleep "$(awk -v d="$duration" 'BEGIN { print d / 3 }')"
  kill -KILL "${PID[backend3]}" 2>/dev/null || true
  wait "${PID[backend3]}" 2>/dev/null || true
  wait "$wrk_pid" || rc=$?
  start_backend 2
  sleep "$HEAL_WAIT"
  return "$rc"
}
