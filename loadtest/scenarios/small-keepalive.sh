# Scenario: small-keepalive (sourced by run.sh; bash, no side effects).
# A tiny fixed response over keep-alive connections on both sides, so the
# numbers are dominated by per-request proxy overhead (parse, route, forward,
# pool reuse), not by bytes moved.
#
# A scenario sets these variables; run.sh provides the rest:
#   SCENARIO_DESC           one line for the report
#   SCENARIO_PATH           request path wrk (and the probe) use
#   SCENARIO_EXPECT_STATUS  status the probe must see through every proxy
#   SCENARIO_EXPECT_BODY    body the probe must see ("" = don't check)
#   SCENARIO_WRK_ARGS       extra wrk arguments (array), e.g. (-H "Connection: close")
#   SCENARIO_TEMPLATE_*     config templates (relative to loadtest/), override to
#                           change a backend or peer config for this scenario only
#   SCENARIO_RENDER_SED     extra sed expressions (array) applied when rendering
#                           the templates, e.g. (-e "s|{{LB}}|round_robin|g")
SCENARIO_DESC='12-byte body ("hello world\n"), keep-alive client and upstream, GET /'
SCENARIO_PATH=/
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_WRK_ARGS=()
SCENARIO_TEMPLATE_BACKEND=nginx-backend.conf
SCENARIO_TEMPLATE_RINGWAY=ringway.yaml
SCENARIO_TEMPLATE_NGINX=nginx-proxy.conf
SCENARIO_TEMPLATE_HAPROXY=haproxy.cfg
