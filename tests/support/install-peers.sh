#!/usr/bin/env bash
# Installs the real peers the black-box tests start: each test that needs one fails with a
# message naming it when it is missing, so CI must have all of them before `cargo test`.
set -euo pipefail
apt_pkgs=(nginx haproxy curl openssl php-fpm php-cli dnsmasq nghttp2-client systemd gnuplot-nox iproute2)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing test peers (install them): ${missing[*]}" >&2
    exit 1
  fi
fi
# The packages start services of their own on install; tests start their own instances on
# loopback ports, so the system ones must not hold :80 or :53.
for svc in nginx haproxy dnsmasq; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
  pkill -x "$svc" 2>/dev/null || true
done
pkill -f 'php-fpm: master' 2>/dev/null || true
# grpcio and h2 are the HTTP/2 and gRPC test peers.
py_pkgs=(grpcio h2)
for m in grpc h2; do
  python3 -c "import $m" 2>/dev/null || { python3 -m pip install -q "${py_pkgs[@]}"; break; }
done
echo "test peers: $(nginx -v 2>&1 | tr -d '\n'), $(haproxy -v | head -1), $(ls /usr/sbin/php-fpm* | head -1), $(dnsmasq --version | head -1), $(h2load --version 2>&1 | head -1), grpcio $(python3 -c 'import grpc; print(grpc.__version__)')"
