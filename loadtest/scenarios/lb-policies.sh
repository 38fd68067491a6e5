#!/usr/bin/env bash
# Scenario: lb-policies. Sourced by run.sh it is one policy (env LB_POLICY, default
# random_choose) over three targets; executed directly it runs run.sh once per policy
# (ringway only) and prints ringway's CPU per request for each, so a policy's cost shows:
#
#   loadtest/scenarios/lb-policies.sh [--quick] [other run.sh options]
#
# The three targets are three listening ports (18000, 18004, 18005) of one backend nginx
# process, so the backend side costs the same whatever the policy picks.
LB_POLICIES=(random random_choose first round_robin weighted_round_robin least_conn
  ip_hash client_ip_hash uri_hash query header cookie p2c_ewma)

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  declare -A cost=()
  build=()
  for p in "${LB_POLICIES[@]}"; do
    echo "== policy $p"
    out=$(LB_POLICY=$p "$here/run.sh" --scenario lb-policies --proxies ringway "${build[@]}" "$@" 2>&1) || true
    echo "$out" | grep -E 'round [0-9]+ ringway|FAILED' || echo "$out" | tail -n 3
    # The median over rounds is in the report; one line per round is enough here.
    cost[$p]=$(echo "$out" | grep -oE '=[0-9.]+ us/req' | tr -d '=' | awk '{print $1}' | sort -n |
      awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "n/a")}')
    build=(--no-build)
  done
  echo
  echo "| policy | ringway CPU us/request (median of rounds) |"
  echo "| --- | --- |"
  for p in "${LB_POLICIES[@]}"; do echo "| $p | ${cost[$p]} |"; done
  exit 0
fi

lb_policy=${LB_POLICY:-random_choose}
case $lb_policy in
  header) lb_map="{ policy: header, key: X-User }" ;;
  query) lb_map="{ policy: query, key: id }" ;;
  cookie) lb_map="{ policy: cookie, secret: bench }" ;;
  *) lb_map="{ policy: $lb_policy }" ;;
esac
SCENARIO_DESC="12-byte body over keep-alive, 3 targets, lb policy $lb_policy"
# A query, a header and a cookie so every hashing policy has its key to hash.
SCENARIO_PATH='/?id=12345'
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_WRK_ARGS=(-H "X-User: user-12345" -H "Cookie: theme=dark; lb=0123")
SCENARIO_RENDER_SED=(-e "s|{{LB}}|$lb_map|g")
SCENARIO_TEMPLATE_BACKEND=scenarios/lb-policies/nginx-backend.conf
SCENARIO_TEMPLATE_RINGWAY=scenarios/lb-policies/ringway.yaml
SCENARIO_TEMPLATE_NGINX=nginx-proxy.conf
SCENARIO_TEMPLATE_HAPROXY=haproxy.cfg
