# Scenario: large-body (sourced by run.sh; bash). 1 MiB responses over keep-alive, 8
# connections: the cost is moving bytes, so CPU per request here is CPU per MiB. ringway
# splices bodies of 64 KiB and more; nginx copies through user space; HAProxy may splice.
SCENARIO_DESC='1 MiB response body (sendfile from the backend), keep-alive, 8 connections, GET /1m'
SCENARIO_PATH=/1m
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=''
SCENARIO_WRK_ARGS=()
SCENARIO_CONNECTIONS=8
SCENARIO_TEMPLATE_BACKEND=nginx-backend-large.conf
SCENARIO_UNIT=MiB

scenario_setup() { # run dir -> the 1 MiB object the backend serves
  head -c 1048576 /dev/urandom >"$1/1m.bin"
}
