#!/usr/bin/env bash
# standalone-scenario
# Scenario: scaling. small-keepalive run twice through run.sh, with 1 and then 2 workers per
# proxy; reports each proxy's 2-worker run with rate_1w, rate_2w and scaling_x (= rate_2w /
# rate_1w) beside it. Both runs unpinned: on a 2-core machine 2 workers leave no core of their
# own to the backend and wrk, so split placement is impossible and the two runs are kept alike.
# Also cpu_1w, cpu_2w and cpu_x (CPU per request with 2 workers / with 1): on a machine too small
# for the rate to double (the proxy's second core is shared with the backend and wrk), a flat
# CPU cost per request still shows that the workers share nothing on the data path.
# Takes run.sh's options (run.sh passes them through); --workers and --scenario are its own.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${LOADTEST_OUT:?run through loadtest/run.sh}
pass=()
while (($#)); do
  case $1 in
    --workers|--scenario|--placement) shift ;;
    --no-pin|--no-build|scaling) ;;
    *) pass+=("$1") ;;
  esac
  shift
done
for w in 1 2; do
  echo "=================== scaling: $w worker(s)"
  LOADTEST_NESTED=1 LOADTEST_OUT="$OUT/scaling/w$w" "$HERE/run.sh" "${pass[@]}" --no-build --no-pin \
    --workers "$w" --scenario small-keepalive || true
done
python3 - "$OUT/scaling" <<'PY'
import json, os, sys
d = sys.argv[1]
docs = {}
for w in (1, 2):
    p = os.path.join(d, f"w{w}", "small-keepalive", "scenario.json")
    if os.path.exists(p):
        docs[w] = json.load(open(p))
if 2 not in docs:
    sys.exit("scaling: the 2-worker run produced no report")
doc = docs[2]
doc["scenario"] = "scaling"
st = doc["settings"]
st["scenario"] = "scaling"
st["scenario_desc"] = ("small-keepalive with 1 then 2 workers per proxy (both unpinned); "
                       "rows are the 2-worker runs, scaling_x = 2-worker rate / 1-worker rate")
for p, s in doc["summary"].items():
    one = docs.get(1, {}).get("summary", {}).get(p, {})
    r1, r2 = one.get("rate") if one.get("valid_runs") else None, s.get("rate") if s.get("valid_runs") else None
    x = {"rate_1w": r1, "rate_2w": r2, "scaling_x": (r2 / r1) if r1 and r2 else None}
    c1 = (one.get("cpu_us_per_unit") or {}).get("total") if r1 else None
    c2 = (s.get("cpu_us_per_unit") or {}).get("total") if r2 else None
    x.update({"cpu_1w": c1, "cpu_2w": c2, "cpu_x": (c2 / c1) if c1 and c2 else None})
    s.setdefault("extra", {}).update(x)
    if x["scaling_x"] is None and s.get("valid_runs"):
        s["valid_runs"], s["reason"] = 0, "no 1-worker figure to compare with"
with open(os.path.join(d, "scenario.json"), "w") as f:
    json.dump(doc, f, indent=1)
for p, s in doc["summary"].items():
    e = s.get("extra", {})
    print(f"scaling {p}: 1 worker {e.get('rate_1w')}, 2 workers {e.get('rate_2w')}, x{e.get('scaling_x')}; "
          f"CPU us/req {e.get('cpu_1w')} -> {e.get('cpu_2w')}, x{e.get('cpu_x')}")
PY
