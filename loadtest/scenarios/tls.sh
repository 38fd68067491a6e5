# Scenario: tls (sourced by run.sh; bash). The small-keepalive load over HTTPS:
# every proxy terminates TLS with the same ECDSA P-256 certificate and proxies
# to the plaintext backend over keep-alive. Client connections are keep-alive,
# so this measures TLS record cost per request, not handshakes; see
# tls-handshake.sh for a new connection (full handshake) per request.
SCENARIO_DESC='12-byte body over HTTPS (TLS terminated, ECDSA P-256), keep-alive client and upstream, GET /'
SCENARIO_SCHEME=https
SCENARIO_PATH=/
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_WRK_ARGS=()
SCENARIO_TEMPLATE_BACKEND=nginx-backend.conf
SCENARIO_TEMPLATE_RINGWAY=ringway-tls.yaml
SCENARIO_TEMPLATE_NGINX=nginx-proxy-tls.conf
SCENARIO_TEMPLATE_HAPROXY=haproxy-tls.cfg
SCENARIO_TEMPLATE_CADDY=caddy-tls.Caddyfile

# One self-signed certificate for every proxy, made fresh in the run dir:
# tls.pem + tls.key (PKCS#8), and tls-haproxy.pem (both, as HAProxy wants).
scenario_setup() {
  local dir=$1
  command -v openssl >/dev/null || {
    echo "run.sh: the tls scenario needs openssl: apt-get install -y openssl" >&2
    return 1
  }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/tls.key" -out "$dir/tls.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 || return 1
  cat "$dir/tls.pem" "$dir/tls.key" >"$dir/tls-haproxy.pem"
}
