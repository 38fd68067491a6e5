#!/usr/bin/env bash
# Syscalls and io_uring submissions per request of ringway, nginx and HAProxy in one run:
# small-keepalive and new-connection, one worker each, through run.sh --syscalls (perf stat on
# tracepoints attached to the proxy during each measured run; counts are divided by the
# requests the load generator completed). Extra arguments go to run.sh, e.g. --rounds 3.
#
#   flock /work/loadtest.lock loadtest/syscalls.sh [--no-build] [--duration SECS] ...
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$HERE/run.sh" small-keepalive new-connection --proxies ringway,nginx,haproxy \
  --workers 1 --rounds 1 --duration 5 --syscalls "$@"
