# Scenario: new-connection (sourced by run.sh; bash). The small-keepalive request, but every
# request on a new client connection, so the cost is accept + close (upstream stays pooled).
# oha --disable-keepalive when oha is installed, else wrk with "Connection: close"; the report
# names the one used.
SCENARIO_DESC='12-byte body, a new client connection per request, keep-alive upstream, GET /'
SCENARIO_PATH=/
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_LOADGEN=oha
SCENARIO_OHA_ARGS=(--disable-keepalive)
SCENARIO_WRK_ARGS=(-H "Connection: close")
