#!/usr/bin/env python3
"""Parsing and reporting for loadtest/run.sh (stdlib only).

  helper.py machine --out FILE --tool NAME=PATH... --repo DIR   print + save machine info
  helper.py probe --url URL --status N --body TEXT              silent on success, else why
  helper.py line RAW_BASE                                       one progress line for a run
  helper.py report --run-dir DIR --out DIR                      table, results.json, exit code
"""
import argparse
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")
UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
OTHER_LOAD_WARN = 0.05
PROXY_ORDER = ["ringway", "nginx", "haproxy"]


# ---------------------------------------------------------------- machine
def _cmd_first_line(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    # wrk -v exits 1 and nginx -v writes to stderr: take whatever came out.
    lines = [l.strip() for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    if not lines:
        return "unknown"
    return re.sub(r"\s+(Copyright|- https?://).*", "", lines[0])


def cmd_machine(a):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    tools = dict(t.split("=", 1) for t in a.tool)
    version_args = {"wrk": ["-v"], "nginx": ["-v"], "haproxy": ["-v"]}
    versions = {n: _cmd_first_line([p] + version_args.get(n, ["--version"])) for n, p in tools.items()}
    git = _cmd_first_line(["git", "-C", a.repo, "describe", "--always", "--dirty", "--abbrev=12"])
    info = {
        "hostname": socket.gethostname(),
        "cpu_model": model,
        "cpus_online": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "clk_tck": CLK_TCK,
        "tools": {n: {"path": tools[n], "version": versions[n]} for n in tools},
        "ringway_git": git,
    }
    with open(a.out, "w") as f:
        json.dump(info, f, indent=2)
    print(f"machine:   {info['cpu_model']}, {info['cpus_online']} cores "
          f"(allowed: {','.join(map(str, info['cpus_allowed']))}), kernel {info['kernel']}, host {info['hostname']}")
    for n in tools:
        print(f"{n + ':':<10} {versions[n]}")
    print(f"ringway:   git {git}")


# ---------------------------------------------------------------- probe
def cmd_probe(a):
    u = urllib.parse.urlsplit(a.url)
    # http.client, not urllib.request: an http_proxy in the environment must not apply.
    try:
        if u.scheme == "https":
            # The benchmark certificate is self-signed: the probe checks the answer, not trust.
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection(u.hostname, u.port, timeout=5, context=ctx)
        else:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        c.request("GET", u.path or "/")
        r = c.getresponse()
        status, body = r.status, r.read()
        c.close()
    except Exception as e:  # refused, reset, timeout, malformed response...
        print(f"GET {a.url}: {type(e).__name__}: {e}")
        return 1
    problems = []
    if status != a.status:
        problems.append(f"status {status}, want {a.status}")
    if a.body and body != a.body.encode():
        problems.append(f"body {body[:80]!r}, want {a.body.encode()!r}")
    if problems:
        print(f"GET {a.url}: " + "; ".join(problems))
        return 1
    return 0


# ---------------------------------------------------------------- wrk parsing
def _dur_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS_US[m.group(2)] if m else None


def parse_wrk(text):
    """Numbers from `wrk --latency` output; missing ones stay None."""
    out = {"requests": None, "elapsed_s": None, "rps": None, "latency_avg_us": None,
           "latency_us": {}, "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx_3xx": 0}}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["elapsed_s"] = float(m.group(2)) * UNITS_US[m.group(3)] / 1e6
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"^\s*Latency\s+(\S+)", text, re.M)
    if m:
        out["latency_avg_us"] = _dur_us(m.group(1))
    for pct, val in re.findall(r"^\s*(\d+)%\s+(\S+)\s*$", text, re.M):
        out["latency_us"][f"p{pct}"] = _dur_us(val)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            out["errors"][k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["errors"]["non_2xx_3xx"] = int(m.group(1))
    return out


def _read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def _ticks(s):
    u, st = (int(x) for x in s.split())
    return u, st


def _procstat_delta(before, after):
    # /proc/stat "cpu user nice system idle iowait irq softirq steal ..." (ticks)
    b = [int(x) for x in before.split()[1:9]]
    e = [int(x) for x in after.split()[1:9]]
    return [y - x for x, y in zip(b, e)]


def _children_cpu_s(path):
    # bash `times`: line 1 = the shell, line 2 = its waited-for children, "0m1.234s 0m0.567s"
    try:
        with open(path) as f:
            line = f.read().splitlines()[1]
    except (OSError, IndexError):
        return None
    total = 0.0
    for m, sec in re.findall(r"(\d+)m([\d.]+)s", line):
        total += int(m) * 60 + float(sec)
    return total


def load_run(base):
    meta = _read_meta(base + ".meta")
    try:
        with open(base + ".wrk", errors="replace") as f:
            raw = f.read()
    except OSError:
        raw = ""
    w = parse_wrk(raw)
    u0, s0 = _ticks(meta["cpu_before"])
    u1, s1 = _ticks(meta["cpu_after"])
    bu0, bs0 = _ticks(meta["backend_cpu_before"])
    bu1, bs1 = _ticks(meta["backend_cpu_after"])
    tick_us = 1e6 / CLK_TCK
    d = _procstat_delta(meta["procstat_before"], meta["procstat_after"])
    total = sum(d)
    c0, c1 = _children_cpu_s(base + ".times0"), _children_cpu_s(base + ".times1")
    wrk_cpu = c1 - c0 if c0 is not None and c1 is not None else None
    wall = float(meta["wall_end"]) - float(meta["wall_start"])
    if wrk_cpu is not None and wrk_cpu > wall + 0.1:
        wrk_cpu = None  # one wrk thread can't beat the wall clock: another child was reaped meanwhile
    ours = (u1 - u0) + (s1 - s0) + (bu1 - bu0) + (bs1 - bs0) + (wrk_cpu or 0) * CLK_TCK
    other = d[0] + d[1] + d[2] + d[5] + d[6] - ours
    run = {
        "proxy": meta["proxy"], "round": int(meta["round"]), "seq": int(meta["seq"]),
        "port": int(meta["port"]), "pid": int(meta["pid"]), "wrk_exit": int(meta["wrk_rc"]),
        "alive_after": meta["alive_after"] == "1",
        "wall_s": wall,
        "requests": w["requests"], "elapsed_s": w["elapsed_s"], "rps": w["rps"],
        "latency_avg_us": w["latency_avg_us"], "latency_us": w["latency_us"], "errors": w["errors"],
        "cpu_ticks": {"utime": u1 - u0, "stime": s1 - s0, "clk_tck": CLK_TCK},
        "backend_cpu_ticks": {"utime": bu1 - bu0, "stime": bs1 - bs0},
        "sched_ns": int(meta["sched_ns_after"]) - int(meta["sched_ns_before"]),
        "wrk_cpu_s": wrk_cpu,
        "machine_ticks": dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), d)),
        "steal_fraction": d[7] / total if total else 0.0,
        # Busy CPU on the whole machine not spent in the proxy, the backend or
        # wrk: other work sharing the box (builds, tests) that skews the run.
        "other_busy_fraction": max(0.0, other / total) if total and wrk_cpu is not None else None,
        "wrk_output": raw,
    }
    n = run["requests"] or 0
    problems = []
    if run["wrk_exit"] != 0:
        problems.append(f"wrk exit {run['wrk_exit']}" + (" (timed out)" if run["wrk_exit"] == 124 else ""))
    if not n or run["rps"] is None:
        problems.append("no requests completed")
    nerr = sum(run["errors"].values())
    if nerr:
        problems.append("errors: " + ", ".join(f"{k} {v}" for k, v in run["errors"].items() if v))
    if not run["alive_after"]:
        problems.append("proxy process died")
    run["valid"] = not problems
    run["problems"] = problems
    if n:
        run["cpu_us_per_req"] = {
            "user": (u1 - u0) * tick_us / n,
            "sys": (s1 - s0) * tick_us / n,
            "total": ((u1 - u0) + (s1 - s0)) * tick_us / n,
            "sched_total": run["sched_ns"] / 1e3 / n,
        }
        run["backend_cpu_us_per_req"] = ((bu1 - bu0) + (bs1 - bs0)) * tick_us / n
    else:
        run["cpu_us_per_req"] = None
        run["backend_cpu_us_per_req"] = None
    return run


def cmd_line(a):
    r = load_run(a.base)
    c = r["cpu_us_per_req"]
    head = f"  round {r['round']} {r['proxy']:<8}"
    if r["rps"] is None or c is None:
        print(f"{head} FAILED: {'; '.join(r['problems'])}")
        return 0
    lat = r["latency_us"]
    print(f"{head} {r['rps']:>10,.0f} req/s  p50 {_ms(lat.get('p50'))}  p99 {_ms(lat.get('p99'))} ms  "
          f"cpu {c['user']:.2f}u+{c['sys']:.2f}s={c['total']:.2f} us/req"
          + (f"  (other load {r['other_busy_fraction']:.0%})"
             if (r["other_busy_fraction"] or 0) > OTHER_LOAD_WARN else "")
          + (f"  [{'; '.join(r['problems'])}]" if r["problems"] else ""))
    return 0


# ---------------------------------------------------------------- report
def _ms(us):
    return "-" if us is None else f"{us / 1e3:.3f}"


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs):
    ok = [r for r in runs if r["valid"]]
    s = {"runs": len(runs), "valid_runs": len(ok)}
    if not ok:
        return s
    s.update({
        "rps": _med(r["rps"] for r in ok),
        "rps_min": min(r["rps"] for r in ok),
        "rps_max": max(r["rps"] for r in ok),
        "p50_us": _med(r["latency_us"].get("p50") for r in ok),
        "p99_us": _med(r["latency_us"].get("p99") for r in ok),
        "cpu_us_per_req": {k: _med(r["cpu_us_per_req"][k] for r in ok)
                           for k in ("user", "sys", "total", "sched_total")},
        "backend_cpu_us_per_req": _med(r["backend_cpu_us_per_req"] for r in ok),
        "max_steal_fraction": max(r["steal_fraction"] for r in ok),
        "max_other_busy_fraction": max((r["other_busy_fraction"] or 0) for r in ok),
        "max_wrk_core_fraction": max((r["wrk_cpu_s"] or 0) / r["wall_s"] for r in ok),
    })
    return s


def cmd_report(a):
    settings = _read_meta(os.path.join(a.run_dir, "settings.env"))
    with open(os.path.join(a.run_dir, "machine.json")) as f:
        machine = json.load(f)
    proxies = {}
    with open(os.path.join(a.run_dir, "proxies.tsv")) as f:
        for line in f:
            name, status, port, reason = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            proxies[name] = {"status": status, "port": int(port), "reason": reason}
    raw = os.path.join(a.run_dir, "raw")
    runs = [load_run(os.path.join(raw, f[:-5])) for f in sorted(os.listdir(raw)) if f.endswith(".meta")]

    selected = [p for p in PROXY_ORDER if proxies.get(p, {}).get("status") != "skipped"]
    summary = {p: summarize([r for r in runs if r["proxy"] == p]) for p in selected}
    for p in selected:
        summary[p]["status"] = proxies[p]["status"]
        summary[p]["reason"] = proxies[p]["reason"]
        if summary[p]["valid_runs"] == 0 and not summary[p]["reason"]:
            bad = [r for r in runs if r["proxy"] == p]
            summary[p]["reason"] = ("; ".join(bad[-1]["problems"]) if bad else "no runs")
    ratios = {}
    rw = summary.get("ringway", {})
    for p in selected:
        if p == "ringway":
            continue
        peer = summary[p]
        if rw.get("valid_runs") and peer.get("valid_runs"):
            ratios[p] = {"rps_ratio": rw["rps"] / peer["rps"],
                         "cpu_per_req_ratio": (rw["cpu_us_per_req"]["total"] / peer["cpu_us_per_req"]["total"]
                                               if peer["cpu_us_per_req"]["total"] else None)}
        else:
            ratios[p] = {"rps_ratio": None, "cpu_per_req_ratio": None}

    md = render_markdown(settings, machine, selected, summary, ratios)
    print(md, end="")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(md)
    doc = {"schema": 1, "settings": settings, "machine": machine, "proxies": proxies,
           "summary": summary, "ringway_ratios": ratios, "runs": runs}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"\nwrote {os.path.relpath(a.out)}/results.json and summary.md")
    return 0 if all(summary[p]["valid_runs"] > 0 for p in selected) else 3


def render_markdown(st, m, selected, summary, ratios):
    L = []
    L.append(f"## ringway load test: {st['scenario']}\n")
    L.append(f"{st['scenario_desc']}. wrk -t{st['wrk_threads']} -c{st['connections']} "
             f"-d{st['duration_s']}s --latency after a {st['warmup_s']}s warm-up; "
             f"{st['rounds']} round(s), medians over valid runs.\n")
    pin = (f"proxy CPU {st['proxy_cpu']}, backend CPU {st['backend_cpu']}, wrk CPU {st['loadgen_cpu']}"
           if st["pinned"] == "1" else "not pinned")
    tools = ", ".join(f"{t['version']}" for t in m["tools"].values())
    L.append(f"Machine: {m['cpu_model']}, {m['cpus_online']} cores, kernel {m['kernel']}; {pin}. "
             f"{tools}; ringway {m['ringway_git']}. Started {st['started_utc']} on {m['hostname']}.\n")
    L.append("| proxy | runs ok | RPS | RPS min–max | p50 ms | p99 ms "
             "| CPU µs/req user | sys | total | backend µs/req |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in selected:
        s = summary[p]
        if not s["valid_runs"]:
            L.append(f"| {p} | {s['valid_runs']}/{s['runs']} | FAILED: {s['reason'].replace('|', '/')} "
                     "| | | | | | | |")
            continue
        c = s["cpu_us_per_req"]
        L.append(f"| {p} | {s['valid_runs']}/{s['runs']} | {s['rps']:,.0f} | {s['rps_min']:,.0f}–{s['rps_max']:,.0f} "
                 f"| {_ms(s['p50_us'])} | {_ms(s['p99_us'])} "
                 f"| {c['user']:.2f} | {c['sys']:.2f} | {c['total']:.2f} | {s['backend_cpu_us_per_req']:.2f} |")
    if ratios:
        L.append("")
        L.append("| ringway vs | RPS ratio (>1: ringway serves more) | CPU/req ratio (<1: ringway cheaper) |")
        L.append("|---|---:|---:|")
        for p, r in ratios.items():
            f = lambda v: "n/a" if v is None else f"{v:.2f}"
            L.append(f"| {p} | {f(r['rps_ratio'])} | {f(r['cpu_per_req_ratio'])} |")
    notes = []
    for p in selected:
        s = summary[p]
        if s["valid_runs"] and s["valid_runs"] < s["runs"]:
            notes.append(f"{p}: {s['runs'] - s['valid_runs']} run(s) excluded (errors or failures, see results.json).")
        if s.get("max_steal_fraction", 0) > 0.02:
            notes.append(f"{p}: up to {s['max_steal_fraction']:.0%} CPU steal during a run; the host was busy, "
                         "numbers are noisy.")
        if s.get("max_other_busy_fraction", 0) > OTHER_LOAD_WARN:
            notes.append(f"{p}: up to {s['max_other_busy_fraction']:.0%} of the machine's CPU went to other "
                         "processes during a run; numbers are skewed, rerun on a quiet machine.")
        if s.get("max_wrk_core_fraction", 0) > 0.85:
            notes.append(f"{p}: wrk used {s['max_wrk_core_fraction']:.0%} of its core; the load generator may be "
                         "the bottleneck, so RPS understates this proxy.")
    if notes:
        L.append("")
        L.extend(f"- {n}" for n in notes)
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("machine")
    m.add_argument("--out", required=True)
    m.add_argument("--tool", action="append", default=[])
    m.add_argument("--repo", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--url", required=True)
    p.add_argument("--status", type=int, required=True)
    p.add_argument("--body", default="")
    ln = sub.add_parser("line")
    ln.add_argument("base")
    r = sub.add_parser("report")
    r.add_argument("--run-dir", required=True)
    r.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"machine": cmd_machine, "probe": cmd_probe, "line": cmd_line, "report": cmd_report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
