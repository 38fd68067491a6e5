import json, sys, statistics as st
d = json.load(open(sys.argv[1]))
ref = sys.argv[2] if len(sys.argv) > 2 else "haproxy"
runs = [r for r in d["runs"] if r.get("valid")]
rounds = sorted({r["round"] for r in runs})
proxies = [p for p in d["summary"]]
def cpu(r):  # sched_ns per unit (finer than ticks) and ticks-based total
    s = r["sched_ns"]; s = (s[1]-s[0]) if isinstance(s, list) else s
    return r["cpu_us_per_unit"]["total"]
def sched(r):
    s = r["sched_ns"]
    v = s.get("delta") if isinstance(s, dict) else None
    return v
print("sched_ns sample:", runs[0]["sched_ns"], runs[0]["cpu_us_per_unit"])
by = {(r["proxy"], r["round"]): r for r in runs}
print(f"{'proxy':28} {'median us':>9} {'med/ref':>8} {'per-round ratio to '+ref:>30}")
for p in proxies:
    vals = [cpu(by[(p, k)]) for k in rounds if (p, k) in by]
    rat = [cpu(by[(p, k)]) / cpu(by[(ref, k)]) for k in rounds if (p, k) in by and (ref, k) in by]
    if not vals: continue
    print(f"{p:28} {st.median(vals):9.2f} {st.median(vals)/st.median([cpu(by[(ref,k)]) for k in rounds if (ref,k) in by]):8.3f}   median {st.median(rat):.3f}  [{' '.join(f'{x:.2f}' for x in rat)}]")
