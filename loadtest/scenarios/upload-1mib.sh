# Scenario: upload-1mib (sourced by run.sh; bash). 1 MiB request bodies POSTed over keep-alive
# (8 connections); the backend (`tcpbench http-sink`) reads each body to the end and answers
# "ok\n". CPU per request is CPU per uploaded MiB. nginx streams the body like the others
# (proxy_request_buffering off) instead of spooling it to a temp file first.
SCENARIO_DESC='1 MiB request body POSTed, keep-alive, 8 connections, backend reads it and answers "ok\n"'
SCENARIO_PATH=/upload
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'ok\n'
SCENARIO_WRK_LUA=wrk/upload-1mib.lua
SCENARIO_CONNECTIONS=8
SCENARIO_UNIT=MiB
# nginx's `return` answers before the body has arrived; a streaming proxy then has to close the
# client connection. A backend that reads the body first is what an upload endpoint does.
scenario_backend_cmd() { build_tcpbench; BACKEND_CMD=("$TCPBENCH" http-sink "$1"); }
