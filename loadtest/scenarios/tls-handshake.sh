# Scenario: tls-handshake (sourced by run.sh; bash). Like tls.sh, but every
# request comes on a new client connection (wrk -H "Connection: close"), so
# requests/sec is full TLS handshakes per second (plus a TCP connect and the
# proxied request). Upstream connections stay pooled.
# shellcheck source=scenarios/tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls.sh"
SCENARIO_DESC='HTTPS with a new connection (full TLS handshake) per request: wrk -H "Connection: close"'
SCENARIO_WRK_ARGS=(-H "Connection: close")
