#!/usr/bin/env python3
"""Parsing and reporting for loadtest/run.sh (stdlib only).

  helper.py machine --out FILE --tool NAME=PATH... --repo DIR   print + save machine info
  helper.py probe --url URL --status N --body TEXT              silent on success, else why
  helper.py line RAW_BASE                                       one progress line for a run
  helper.py report --run-dir DIR --out DIR                      one scenario: scenario.json, summary.md
  helper.py report-runs --runs FILE.jsonl --out DIR ...         the same from ready-made runs (tcp-bulk)
  helper.py idle --port N --conns N --pid PID --out FILE        idle-10k's client: RSS per connection
  helper.py aggregate --out DIR                                 every scenario: results.json, summary.md, charts
"""
import argparse
import datetime
import glob
import hashlib
import shutil
import time
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
STEAL_WARN = 0.02  # CPU steal above this during a run makes its numbers noisy
# ringway-base is a second ringway binary (run.sh --baseline): the build ringway is compared with.
# ringfloor-VARIANT (run.sh --proxies, opt-in): loadtest/ringfloor, the io_uring floor instrument.
RINGFLOOR = [f"ringfloor-{v}" for v in ("plain", "tuned", "acceptmulti", "recvmulti", "upmulti", "fixed",
                                         "ringfd", "pollfirst", "notaskrun", "tuned-noupmulti")]
PROXY_ORDER = ["ringway", "ringway-base", *RINGFLOOR, "nginx", "haproxy", "caddy"]
BASE = "ringway-base"
PERCENTILES = ["p50", "p90", "p99", "p99.9"]
CHART_TIMEOUT = 60  # seconds for one gnuplot call; a few small data files


# ---------------------------------------------------------------- machine
VERSION_ARGS = {"wrk": ["-v"], "nginx": ["-v"], "haproxy": ["-v"], "caddy": ["version"], "gnuplot": ["--version"]}
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
    version_args = VERSION_ARGS
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


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x  # NaN -> None


def load_generator_result(base):
    """(loadgen, units, elapsed_s, latency_us, errors, extra, raw) from whichever output the run left."""
    raw = _read(base + ".wrk")
    if raw is not None:
        w = parse_wrk(raw)
        m = re.search(r"^LT_RESULT (.*)$", raw, re.M)
        lat = {k: v for k, v in w["latency_us"].items() if k in ("p50", "p90", "p99")}
        if m:
            kv = dict(x.split("=", 1) for x in m.group(1).split())
            lat = {"p50": _num(kv["p50_us"]), "p90": _num(kv["p90_us"]), "p99": _num(kv["p99_us"]),
                   "p99.9": _num(kv["p999_us"])}
        return "wrk", w["requests"], w["elapsed_s"], lat, w["errors"], {}, raw
    raw = _read(base + ".oha")
    if raw is not None:
        try:
            j = json.loads(raw)
        except ValueError:
            return "oha", None, None, {}, {"oha_output": 1}, {}, raw + (_read(base + ".oha.err") or "")
        codes = {int(k): v for k, v in (j.get("statusCodeDistribution") or {}).items()}
        # Requests cut off by the -z deadline are not errors of the proxy.
        errs = {k: v for k, v in (j.get("errorDistribution") or {}).items() if "deadline" not in k}
        n = sum(codes.values())
        lp = j.get("latencyPercentiles") or {}
        lat = {p: (lp.get(p) * 1e6 if lp.get(p) is not None else None) for p in PERCENTILES}
        errors = {"socket": sum(errs.values()), "non_2xx_3xx": sum(v for c, v in codes.items() if c >= 400)}
        elapsed = (j.get("summary") or {}).get("total")
        return "oha", n, elapsed, lat, errors, {}, raw
    raw = _read(base + ".metrics")
    if raw is not None:
        kv = dict(x.split("=", 1) for x in raw.split() if "=" in x)
        units = _num(kv.pop("units", None))
        elapsed = _num(kv.pop("seconds", None))
        errors = {"errors": int(_num(kv.pop("errors", 0)) or 0)}
        lat = {}
        for p, key in (("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us")):
            if key in kv:
                lat[p] = _num(kv.pop(key))
        extra = {k: _num(v) for k, v in kv.items() if _num(v) is not None}
        return kv.get("loadgen", "custom"), units, elapsed, lat, errors, extra, raw
    return "none", None, None, {}, {}, {}, ""


def parse_perf_stat(text):
    """`perf stat -x,` output -> {short event name: count}, nonzero counts only."""
    out = {}
    for line in (text or "").splitlines():
        f = line.split(",")
        if len(f) < 3 or line.startswith("#"):
            continue
        try:
            n = int(float(f[0]))
        except ValueError:
            continue  # <not counted> / <not supported>
        name = f[2].split(":")[-1]
        name = name[len("sys_enter_"):] if name.startswith("sys_enter_") else name
        if n:
            out[name] = out.get(name, 0) + n
    return out


# What the --syscalls table shows first: all syscalls, ring entries, ring work, wakeups.
SYSCALL_COLUMNS = (("sys_enter", "syscalls"), ("io_uring_enter", "io_uring_enter"),
                   ("io_uring_submit_req", "SQEs"), ("io_uring_complete", "CQEs"),
                   ("io_uring_poll_arm", "poll arms"), ("io_uring_queue_async_work", "io-wq punts"),
                   ("context-switches", "ctx switches"))


def load_run(base):
    meta = _read_meta(base + ".meta")
    loadgen, units, elapsed, lat, errors, extra, raw = load_generator_result(base)
    u0, s0 = _ticks(meta["cpu_before"])
    u1, s1 = _ticks(meta["cpu_after"])
    bu0, bs0 = _ticks(meta["backend_cpu_before"])
    bu1, bs1 = _ticks(meta["backend_cpu_after"])
    r0, h0 = _ticks(meta["rss_before"])
    r1, h1 = _ticks(meta["rss_after"])
    tick_us = 1e6 / CLK_TCK
    d = _procstat_delta(meta["procstat_before"], meta["procstat_after"])
    total = sum(d)
    c0, c1 = _children_cpu_s(base + ".times0"), _children_cpu_s(base + ".times1")
    gen_cpu = c1 - c0 if c0 is not None and c1 is not None else None
    wall = float(meta["wall_end"]) - float(meta["wall_start"])
    ours = (u1 - u0) + (s1 - s0) + (bu1 - bu0) + (bs1 - bs0) + (gen_cpu or 0) * CLK_TCK
    other = d[0] + d[1] + d[2] + d[5] + d[6] - ours
    unit = meta.get("unit", "req")
    run = {
        "proxy": meta["proxy"], "round": int(meta["round"]), "seq": int(meta["seq"]),
        "port": int(meta["port"]), "pid": int(meta["pid"]), "loadgen": loadgen,
        "loadgen_exit": int(meta["loadgen_rc"]), "alive_after": meta["alive_after"] == "1",
        "wall_s": wall, "unit": unit, "units": units, "elapsed_s": elapsed,
        "rate": units / elapsed if units and elapsed else None,
        "latency_us": lat, "errors": errors, "errors_total": int(sum(errors.values())),
        "cpu_ticks": {"utime": u1 - u0, "stime": s1 - s0, "clk_tck": CLK_TCK},
        "backend_cpu_ticks": {"utime": bu1 - bu0, "stime": bs1 - bs0},
        "sched_ns": int(meta["sched_ns_after"]) - int(meta["sched_ns_before"]),
        "rss_kb": {"before": r0, "after": r1, "peak": max(h0, h1)},
        "loadgen_cpu_s": gen_cpu,
        "machine_ticks": dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), d)),
        "steal_fraction": d[7] / total if total else 0.0,
        # Busy CPU on the whole machine not spent in the proxy, the backend or the load
        # generator: other work sharing the box (builds, tests) that skews the run.
        "other_busy_fraction": max(0.0, other / total) if total and gen_cpu is not None else None,
        "extra": extra,
        "raw_output": raw[-20000:],
    }
    perf = _read(base + ".perf")
    if perf is not None:
        run["syscalls"] = parse_perf_stat(perf)
    # One load-generator thread can't beat the wall clock: another child was reaped meanwhile.
    if gen_cpu is not None and gen_cpu > wall * 4 + 0.1:
        run["loadgen_cpu_s"] = run["other_busy_fraction"] = None
    n = units or 0
    problems = []
    if run["loadgen_exit"] != 0:
        problems.append(f"load generator exit {run['loadgen_exit']}" + (" (timed out)" if run["loadgen_exit"] == 124 else ""))
    if not n:
        problems.append("nothing completed")
    if run["errors_total"] and meta.get("errors_ok") != "1":
        problems.append("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items() if v))
    if not run["alive_after"]:
        problems.append("proxy process died")
    run["valid"] = not problems
    run["problems"] = problems
    if n and "syscalls" in run:
        run["syscalls_per_unit"] = {k: v / n for k, v in run["syscalls"].items()}
    if n:
        run["cpu_us_per_unit"] = {
            "user": (u1 - u0) * tick_us / n,
            "sys": (s1 - s0) * tick_us / n,
            "total": ((u1 - u0) + (s1 - s0)) * tick_us / n,
            "sched_total": run["sched_ns"] / 1e3 / n,
        }
        run["backend_cpu_us_per_unit"] = ((bu1 - bu0) + (bs1 - bs0)) * tick_us / n
    else:
        run["cpu_us_per_unit"] = None
        run["backend_cpu_us_per_unit"] = None
    return run


def _fmt(v, spec=",.0f"):
    return "-" if v is None else format(v, spec)


def cmd_line(a):
    r = load_run(a.base)
    c = r["cpu_us_per_unit"]
    head = f"  round {r['round']} {r['proxy']:<8}"
    if c is None:
        print(f"{head} FAILED: {'; '.join(r['problems'])}")
        return 0
    lat = r["latency_us"]
    extra = "".join(f"  {k} {_fmt(v, ',.1f')}" for k, v in r["extra"].items()
                    if k.endswith(("_kb", "_ms", "_per_conn")))
    print(f"{head} {_fmt(r['rate'])} {r['unit']}/s  p50 {_ms(lat.get('p50'))}  p99 {_ms(lat.get('p99'))} "
          f"p99.9 {_ms(lat.get('p99.9'))} ms  cpu {c['user']:.2f}u+{c['sys']:.2f}s={c['total']:.2f} us/{r['unit']}"
          f"  errors {r['errors_total']}  rss {r['rss_kb']['peak'] / 1024:.1f} MiB{extra}"
          + (f"  (other load {r['other_busy_fraction']:.0%})"
             if (r["other_busy_fraction"] or 0) > OTHER_LOAD_WARN else "")
          + (f"  [{'; '.join(r['problems'])}]" if r["problems"] else ""))
    if r.get("syscalls_per_unit"):
        print(f"    per {r['unit']}: " + render_syscalls(r["syscalls_per_unit"]))
    return 0


def render_syscalls(per):
    """The headline counts, then the syscalls that cost at least 0.05 per unit, most first."""
    head = [f"{label} {per.get(k, 0):.2f}" for k, label in SYSCALL_COLUMNS]
    shown = {k for k, _ in SYSCALL_COLUMNS}
    rest = sorted(((v, k) for k, v in per.items() if k not in shown and not k.startswith("io_uring_")
                   and v >= 0.05), reverse=True)
    return ", ".join(head) + "; " + (", ".join(f"{k} {v:.2f}" for v, k in rest) or "no other syscall")


# ---------------------------------------------------------------- report
def _ms(us):
    return "-" if us is None else f"{us / 1e3:.3f}"


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _minmax(vals):
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def summarize(runs):
    ok = [r for r in runs if r["valid"]]
    s = {"runs": len(runs), "valid_runs": len(ok)}
    if not ok:
        return s
    cpu = [r["cpu_us_per_unit"]["total"] for r in ok]
    s.update({
        "rate": _med(r["rate"] for r in ok),
        "rate_min": _minmax(r["rate"] for r in ok)[0],
        "rate_max": _minmax(r["rate"] for r in ok)[1],
        "latency_us": {p: _med(r["latency_us"].get(p) for r in ok) for p in PERCENTILES},
        "cpu_us_per_unit": {k: _med(r["cpu_us_per_unit"][k] for r in ok)
                            for k in ("user", "sys", "total", "sched_total")},
        "cpu_us_per_unit_min": min(cpu), "cpu_us_per_unit_max": max(cpu),
        "backend_cpu_us_per_unit": _med(r.get("backend_cpu_us_per_unit") for r in ok),
        "errors": _med(r["errors_total"] for r in ok),
        "errors_max": max(r["errors_total"] for r in ok),
        "rss_peak_kb": max(r["rss_kb"]["peak"] for r in ok),
        "extra": {k: _med(r["extra"].get(k) for r in ok) for k in sorted({k for r in ok for k in r["extra"]})},
        "extra_min": {k: _minmax(r["extra"].get(k) for r in ok)[0] for k in sorted({k for r in ok for k in r["extra"]})},
        "extra_max": {k: _minmax(r["extra"].get(k) for r in ok)[1] for k in sorted({k for r in ok for k in r["extra"]})},
        "max_steal_fraction": max(r.get("steal_fraction") or 0 for r in ok),
        "max_other_busy_fraction": max((r.get("other_busy_fraction") or 0) for r in ok),
    })
    counted = [r["syscalls_per_unit"] for r in ok if r.get("syscalls_per_unit")]
    if counted:
        s["syscalls_per_unit"] = {k: _med(c.get(k, 0) for c in counted) for k in sorted({k for c in counted for k in c})}
    return s


def _ratio(a, b):
    return a / b if a is not None and b else None


def build_scenario(settings, proxies, runs):
    selected = [p for p in PROXY_ORDER if p in proxies and proxies[p]["status"] != "skipped"]
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
            ratios[p] = {"rate_ratio": _ratio(rw["rate"], peer["rate"]),
                         "cpu_per_unit_ratio": _ratio(rw["cpu_us_per_unit"]["total"], peer["cpu_us_per_unit"]["total"])}
            for k, v in rw["extra"].items():
                if k.endswith(("per_conn_kb", "_per_conn")):
                    ratios[p][k + "_ratio"] = _ratio(v, peer["extra"].get(k))
        else:
            ratios[p] = {"rate_ratio": None, "cpu_per_unit_ratio": None}
    skipped = {p: proxies[p]["reason"] for p in PROXY_ORDER
               if p in proxies and proxies[p]["status"] == "skipped" and proxies[p]["reason"]}
    doc = {"scenario": settings["scenario"], "settings": settings, "proxies": proxies, "skipped": skipped,
           "summary": summary, "ringway_ratios": ratios, "runs": runs}
    if BASE in selected:
        doc["baseline"] = baseline_comparison(settings, summary, runs)
    return doc


def _sha256(path):
    if not path:
        return None
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def baseline_comparison(settings, summary, runs):
    """ringway / ringway-base: the medians' ratios, and the ratio within each round (the two run
    back to back, so slow drift of the machine cancels out in those)."""
    rw, base = summary.get("ringway", {}), summary.get(BASE, {})
    bin_base = settings.get("ringway_base_bin") or None
    rev = settings.get("ringway_base_rev") or None
    if bin_base and not rev:
        try:
            with open(bin_base + ".rev") as f:
                rev = f.readline().strip() or None
        except OSError:
            pass
    out = {"ringway_bin": settings.get("ringway_bin") or None, "ringway_base_bin": bin_base,
           "ringway_base_rev": rev, "ringway_sha256": _sha256(settings.get("ringway_bin")),
           "ringway_base_sha256": _sha256(bin_base),
           "cpu_per_unit_ratio": None, "user_ratio": None, "sys_ratio": None, "sched_ratio": None,
           "rate_ratio": None, "per_round_cpu_ratio": [], "per_round_cpu_ratio_median": None}
    if not (rw.get("valid_runs") and base.get("valid_runs")):
        return out
    c, b = rw["cpu_us_per_unit"], base["cpu_us_per_unit"]
    out.update({"cpu_per_unit_ratio": _ratio(c["total"], b["total"]), "user_ratio": _ratio(c["user"], b["user"]),
                "sys_ratio": _ratio(c["sys"], b["sys"]), "sched_ratio": _ratio(c["sched_total"], b["sched_total"]),
                "rate_ratio": _ratio(rw["rate"], base["rate"]),
                "ringway_cpu_us_per_unit": c["total"], "ringway_base_cpu_us_per_unit": b["total"]})
    by_round = {}
    for r in runs:
        if r["valid"] and r["proxy"] in ("ringway", BASE) and r.get("cpu_us_per_unit"):
            by_round.setdefault(r["round"], {})[r["proxy"]] = r["cpu_us_per_unit"]["total"]
    per = [_ratio(v.get("ringway"), v.get(BASE)) for _, v in sorted(by_round.items())]
    out["per_round_cpu_ratio"] = [x for x in per if x is not None]
    out["per_round_cpu_ratio_median"] = _med(out["per_round_cpu_ratio"])
    return out


def render_baseline(bl):
    """One line: ringway / ringway-base CPU per unit, with what went into it."""
    if bl.get("cpu_per_unit_ratio") is None:
        return "ringway / ringway-base CPU per unit: - (not both measured)"
    same = (" (the same binary)" if bl.get("ringway_sha256") and bl["ringway_sha256"] == bl.get("ringway_base_sha256")
            else "")
    rev = f", rev {bl['ringway_base_rev'].split()[0][:12]}" if bl.get("ringway_base_rev") else ""
    return (f"**ringway / ringway-base CPU per unit: {bl['cpu_per_unit_ratio']:.3f}** "
            f"({bl['ringway_cpu_us_per_unit']:.3f} / {bl['ringway_base_cpu_us_per_unit']:.3f} µs; "
            f"user {_fmt(bl['user_ratio'], '.3f')}, sys {_fmt(bl['sys_ratio'], '.3f')}, "
            f"sched {_fmt(bl['sched_ratio'], '.3f')}; rate ratio {_fmt(bl['rate_ratio'], '.3f')}; per round "
            + (", ".join(f"{x:.3f}" for x in bl["per_round_cpu_ratio"]) or "-")
            + (f", their median {bl['per_round_cpu_ratio_median']:.3f}" if len(bl["per_round_cpu_ratio"]) > 1 else "")
            + f"). ringway-base: {bl.get('ringway_base_bin') or '?'}{rev}{same}.")


def cmd_report(a):
    settings = _read_meta(os.path.join(a.run_dir, "settings.env"))
    proxies = {}
    with open(os.path.join(a.run_dir, "proxies.tsv")) as f:
        for line in f:
            name, status, port, reason = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            proxies[name] = {"status": status, "port": int(port), "reason": reason}
    raw = os.path.join(a.run_dir, "raw")
    runs = [load_run(os.path.join(raw, f[:-5])) for f in sorted(os.listdir(raw)) if f.endswith(".meta")]
    return write_scenario(build_scenario(settings, proxies, runs), a.out)


def write_scenario(doc, out):
    md = render_scenario(doc)
    print(md, end="")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "scenario.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"\nwrote {os.path.relpath(out)}/scenario.json and summary.md")
    s = doc["summary"]
    return 0 if s and all(v["valid_runs"] > 0 for v in s.values()) else 3


def cmd_report_runs(a):
    """Scenarios with their own driver (tcp-bulk) hand over finished runs as JSON lines."""
    with open(a.runs) as f:
        runs = [json.loads(l) for l in f if l.strip()]
    proxies = {}
    for spec in a.proxy:
        name, status, reason = (spec.split(":", 2) + ["", ""])[:3]
        proxies[name] = {"status": status, "port": 0, "reason": reason}
    settings = {"scenario": a.name, "scenario_desc": a.desc, "unit": a.unit, "loadgen": "tcpbench",
                "duration_s": a.duration, "rounds": a.rounds, "workers": "1", "connections": a.connections,
                "warmup_s": "1", "pinned": a.pinned, "placement": a.placement, "proxy_cpu": a.proxy_cpu,
                "backend_cpu": a.backend_cpu, "loadgen_cpu": a.loadgen_cpu, "started_utc": a.started}
    if a.ringway_bin:
        settings["ringway_bin"] = a.ringway_bin
    if a.ringway_base_bin:
        settings["ringway_base_bin"] = a.ringway_base_bin
    return write_scenario(build_scenario(settings, proxies, runs), a.out)


def _unit_rate(unit):
    return {"req": "req/s", "MiB": "MiB/s", "msg": "msg/s", "conn": "conn/s"}.get(unit, unit + "/s")


def _placement_text(st):
    if st.get("pinned") != "1":
        return "Processes not pinned."
    return (f"Placement {st.get('placement') or 'shared'}: proxy on CPU {st.get('proxy_cpu')}, "
            f"backend on CPU {st.get('backend_cpu')}, load generator on CPU {st.get('loadgen_cpu')}.")


def render_scenario(doc):
    st, summary, ratios = doc["settings"], doc["summary"], doc["ringway_ratios"]
    unit = st.get("unit", "req")
    L = [f"### {st['scenario']}\n",
         f"{st['scenario_desc']}. Load: {st.get('loadgen', 'wrk')}, {st.get('connections', '?')} connections, "
         f"{st.get('duration_s')}s per run after a {st.get('warmup_s')}s warm-up, {st.get('rounds')} round(s), "
         f"{st.get('workers', 1)} worker(s) per proxy; medians over valid runs. "
         f"{_placement_text(st)}\n"]
    extra_keys = sorted({k for s in summary.values() for k in s.get("extra", {})
                         if k.endswith(("_kb", "_1w", "_2w", "_x", "_ms", "_per_conn"))})
    head = (f"| proxy | runs ok | {_unit_rate(unit)} | min–max | p50 ms | p90 ms | p99 ms | p99.9 ms "
            f"| CPU µs/{unit} user | sys | total | backend µs/{unit} | errors | peak RSS MiB |")
    head += "".join(f" {k.replace('_kb', ' KiB')} |" for k in extra_keys)
    L.append(head)
    L.append("|---|" + "---:|" * (head.count("|") - 2))
    for p, s in summary.items():
        if not s["valid_runs"]:
            L.append(f"| {p} | {s['valid_runs']}/{s['runs']} | FAILED: {s['reason'].replace('|', '/')} |")
            continue
        c, lat = s["cpu_us_per_unit"], s["latency_us"]
        row = (f"| {p} | {s['valid_runs']}/{s['runs']} | {_fmt(s['rate'])} | {_fmt(s['rate_min'])}–{_fmt(s['rate_max'])} "
               f"| {_ms(lat['p50'])} | {_ms(lat['p90'])} | {_ms(lat['p99'])} | {_ms(lat['p99.9'])} "
               f"| {_fmt(c['user'], '.2f')} | {_fmt(c['sys'], '.2f')} | {c['total']:.2f} | {_fmt(s['backend_cpu_us_per_unit'], '.2f')} "
               f"| {_fmt(s['errors'])} | {s['rss_peak_kb'] / 1024:.1f} |")
        row += "".join(f" {_fmt(s['extra'].get(k), ',.2f')} |" for k in extra_keys)
        L.append(row)
    if ratios:
        L.append("")
        head = "| ringway vs | rate ratio (>1: ringway more) | CPU/unit ratio (<1: ringway cheaper) |"
        ratio_keys = [k for k in extra_keys if k.endswith(("per_conn_kb", "_per_conn"))]
        head += "".join(f" {k.replace('_kb', '')} ratio (<1: ringway smaller) |" for k in ratio_keys)
        L.append(head)
        L.append("|---|" + "---:|" * (head.count("|") - 2))
        for p, r in ratios.items():
            row = f"| {p} | {_fmt(r['rate_ratio'], '.2f')} | {_fmt(r['cpu_per_unit_ratio'], '.2f')} |"
            row += "".join(f" {_fmt(r.get(k + '_ratio'), '.2f')} |" for k in ratio_keys)
            L.append(row)
    counted = {p: s["syscalls_per_unit"] for p, s in summary.items() if s.get("syscalls_per_unit")}
    if counted:
        L.append("")
        L.append(f"Syscalls and io_uring work per {unit} (perf stat on tracepoints, every thread of the proxy; "
                 "medians over valid runs; perf's own cost skews this run's CPU figures a little):")
        L.append("")
        L.extend(f"- {p}: {render_syscalls(c)}" for p, c in counted.items())
    if "baseline" in doc:
        L.append("")
        L.append(render_baseline(doc["baseline"]))
    notes = [f"{p}: not measured: {why}" for p, why in doc.get("skipped", {}).items()]
    for p, s in summary.items():
        if s["valid_runs"] and s["valid_runs"] < s["runs"]:
            notes.append(f"{p}: {s['runs'] - s['valid_runs']} run(s) excluded (errors or failures, see results.json).")
        if s.get("max_steal_fraction", 0) > STEAL_WARN:
            notes.append(f"{p}: up to {s['max_steal_fraction']:.0%} CPU steal during a run; numbers are noisy.")
        if s.get("max_other_busy_fraction", 0) > OTHER_LOAD_WARN:
            notes.append(f"{p}: up to {s['max_other_busy_fraction']:.0%} of the machine's CPU went to other "
                         "processes during a run; numbers are skewed, rerun on a quiet machine.")
    if notes:
        L.append("")
        L.extend(f"- {n}" for n in notes)
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- idle connections
def _tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for t in glob.glob(f"/proc/{p}/task/*/children"):
            try:
                todo.extend(int(c) for c in open(t).read().split())
            except OSError:
                pass
    return out


def _rss_kb(pid):
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def _one_response(sock, buf=b""):
    """Reads one small HTTP response (Content-Length or chunked); returns the status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    done = (lambda b: len(b) >= int(m.group(1))) if m else (lambda b: b.endswith(b"0\r\n\r\n"))
    while not done(body):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return status


def cmd_idle(a):
    """Opens N keep-alive connections one after another, one request on each (so each is a
    real, used connection and the proxy's upstream pool stays small), holds them, and reports
    the proxy's RSS growth per connection. Closes with RST so no TIME_WAIT piles up."""
    before = _rss_kb(a.pid)
    socks, errors, t0 = [], 0, time.monotonic()
    req = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode()
    deadline = t0 + a.timeout
    for _ in range(a.conns):
        if time.monotonic() > deadline:
            errors += a.conns - len(socks) - errors
            break
        try:
            s = socket.create_connection((a.host, a.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(req)
            if _one_response(s) != 200:
                errors += 1
            socks.append(s)
        except OSError:
            errors += 1
    opened = time.monotonic() - t0
    # Longer than ringway's PARK_AFTER (100 ms): every connection measured is idle, not between requests.
    time.sleep(a.settle)
    alive = 0
    for s in socks:  # a peer that closed an idle connection would show as readable EOF
        try:
            s.setblocking(False)
            alive += 1 if s.recv(1) else 0
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    with_conns = _rss_kb(a.pid)
    for s in socks:
        s.close()
    n = len(socks)
    per = (with_conns - before) / n if n else float("nan")
    line = (f"loadgen=idle units={n} seconds={opened:.3f} errors={errors + (n - alive)} "
            f"rss_before_kb={before} rss_with_conns_kb={with_conns} rss_per_conn_kb={per:.3f} held={alive}")
    with open(a.out, "w") as f:
        f.write(line + "\n")
    return 0


# ---------------------------------------------------------------- aggregate + charts
def _find_tool(name):
    p = shutil.which(name)
    if p:
        return p
    for d in ("/usr/local/sbin", "/usr/sbin", "/sbin", os.path.expanduser("~/.cargo/bin")):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def machine_info(repo):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    tools = {}
    for n in ("wrk", "oha", "nginx", "haproxy", "caddy", "gnuplot"):
        p = _find_tool(n)
        tools[n] = {"path": p, "version": _cmd_first_line([p] + VERSION_ARGS.get(n, ["--version"])) if p else "not installed"}
    return {"hostname": socket.gethostname(), "cpu_model": model, "cpus_online": os.cpu_count(),
            "cpus_allowed": sorted(os.sched_getaffinity(0)), "kernel": platform.release(), "clk_tck": CLK_TCK,
            "tools": tools,
            "ringway_git": _cmd_first_line(["git", "-C", repo, "describe", "--always", "--dirty", "--abbrev=12"])}


COLORS = {"ringway": "#cc3311", "ringway-base": "#ee99aa", "nginx": "#009988", "haproxy": "#0077bb",
          "caddy": "#ee7733"}


def _gnuplot(gp, script, cwd):
    try:
        p = subprocess.run([gp], input=script, text=True, cwd=cwd, capture_output=True, timeout=CHART_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return p.stderr.strip() if p.returncode else None


def disturbed(s):
    """Why a proxy's runs are not to be trusted as a clean measurement, or None."""
    why = []
    if (s.get("max_steal_fraction") or 0) > STEAL_WARN:
        why.append(f"steal {s['max_steal_fraction']:.0%}")
    if (s.get("max_other_busy_fraction") or 0) > OTHER_LOAD_WARN:
        why.append(f"other load {s['max_other_busy_fraction']:.0%}")
    return ", ".join(why) or None


CHART_TERMINAL = "set terminal svg size 640,400 dynamic font 'sans,12' background rgb 'white'\n"
DISTURBED_NOTE = ("set label 1 '* disturbed by other load (hatched / dashed): see summary.md' "
                  "at graph 0.01, graph -0.13 font 'sans,9' tc rgb '#555555'\nset bmargin 5\n")


def bar_chart_script(name, title, ylabel, dat, svg, any_disturbed):
    """gnuplot script for one bar chart of `dat` rows: proxy, median, min, max, colour, disturbed."""
    return (CHART_TERMINAL
            + "set style fill solid 0.7 border -1\nset boxwidth 0.6\nset grid ytics\nset yrange [0:*]\n"
            + "set xrange [-0.6:*]\nunset key\nset xtics nomirror\n"
            + f"set output '{svg}'\nset title \"{name}: {title}\"\nset ylabel \"{ylabel}\"\n"
            + (DISTURBED_NOTE if any_disturbed else "")
            + f"plot '{dat}' using 0:2:5:xtic(1) with boxes lc rgb variable, "
            + "'' using 0:($6 > 0 ? $2 : 1/0) with boxes fs pattern 4 transparent lc rgb '#333333', "
            + "'' using 0:2:3:4 with yerrorbars lc rgb 'black' pt 0 lw 1.5\n")


def latency_chart_script(name, dat, svg, proxies):
    """gnuplot script for the percentile lines; `proxies` is [(name, disturbed?)] in column order.
    The data file's header is a comment, so the percentiles sit at x = 0..n-1 and the x range
    holds all of them, p99.9 included (a header read as a row shifted them one to the right)."""
    plots = ", ".join(
        f"'{dat}' using 0:{i + 2}:xtic(1) with linespoints lw 2 pt 7 "
        f"lc rgb '{COLORS.get(p, '#777777')}'" + (" dt 2" if bad else "")
        + f" title '{p}{' *' if bad else ''}'" for i, (p, bad) in enumerate(proxies))
    return (CHART_TERMINAL
            + f"set output '{svg}'\nset title \"{name}: latency percentiles (median of runs; log scale)\"\n"
            + "set ylabel 'ms'\nset datafile missing '-'\nset logscale y\nset grid ytics\nset key top left\n"
            + (DISTURBED_NOTE if any(bad for _, bad in proxies) else "")
            + f"set xrange [-0.3:{len(PERCENTILES) - 0.7}]\nplot {plots}\n")


def charts(gp, out, name, doc):
    """SVGs for one scenario: rate and CPU/unit (median bars, min–max whiskers), latency percentiles.
    Proxies whose runs were disturbed by other load are hatched (bars) or dashed (lines)."""
    summary = {p: s for p, s in doc["summary"].items() if s.get("valid_runs")}
    if not summary:
        return []
    unit = doc["settings"].get("unit", "req")
    d = os.path.join(out, "charts")
    os.makedirs(d, exist_ok=True)
    made = []
    bad = {p: disturbed(s) is not None for p, s in summary.items()}
    bars = [("rate", f"{_unit_rate(unit)} (median, whiskers min–max; higher is better)", f"{unit}/s",
             lambda s: (s["rate"], s["rate_min"], s["rate_max"])),
            ("cpu", f"proxy CPU µs per {unit} (median, whiskers min–max; lower is better)",
             f"CPU µs per {unit}",
             lambda s: (s["cpu_us_per_unit"]["total"], s["cpu_us_per_unit_min"], s["cpu_us_per_unit_max"]))]
    for k in sorted({k for s in summary.values() for k in s.get("extra", {}) if k.endswith("per_conn_kb")}):
        bars.append((k, f"{k.replace('_kb', '').replace('_', ' ')} KiB (median, whiskers min–max; lower is better)",
                     "KiB", lambda s, k=k: (s["extra"].get(k), s["extra_min"].get(k), s["extra_max"].get(k))))
    for key, title, ylabel, get in bars:
        rows = [(p, *get(s)) for p, s in summary.items()]
        rows = [r for r in rows if r[1] is not None]
        if not rows:
            continue
        dat = f"{name}-{key}.dat"
        with open(os.path.join(d, dat), "w") as f:
            for p, med, lo, hi in rows:
                label = f"{p}*" if bad[p] else p
                f.write(f"{label} {med} {lo} {hi} 0x{COLORS.get(p, '#777777')[1:]} {int(bad[p])}\n")
        svg = f"{name}-{key}.svg"
        err = _gnuplot(gp, bar_chart_script(name, title, ylabel, dat, svg, any(bad[r[0]] for r in rows)), d)
        if err:
            print(f"gnuplot ({svg}): {err}", file=sys.stderr)
        else:
            made.append(f"charts/{svg}")
    lat_rows = [(p, s["latency_us"]) for p, s in summary.items()
                if any(s.get("latency_us", {}).get(q) for q in PERCENTILES)]
    if lat_rows:
        dat, svg = f"{name}-latency.dat", f"{name}-latency.svg"
        with open(os.path.join(d, dat), "w") as f:
            f.write("# pct " + " ".join(p for p, _ in lat_rows) + "\n")
            for q in PERCENTILES:
                f.write(q + " " + " ".join(_fmt(l.get(q) and l[q] / 1e3, ".4f") for _, l in lat_rows) + "\n")
        err = _gnuplot(gp, latency_chart_script(name, dat, svg, [(p, bad[p]) for p, _ in lat_rows]), d)
        if err:
            print(f"gnuplot ({svg}): {err}", file=sys.stderr)
        else:
            made.append(f"charts/{svg}")
    return made


def cmd_aggregate(a):
    out = a.out
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    machine = machine_info(repo)
    docs = {}
    for path in sorted(glob.glob(os.path.join(out, "*", "scenario.json"))):
        with open(path) as f:
            doc = json.load(f)
        docs[doc["scenario"]] = doc
    gp = _find_tool("gnuplot")
    if not gp:
        print("charts skipped: gnuplot is not installed (apt-get install -y gnuplot-nox)", file=sys.stderr)
    L = ["# ringway load test\n"]
    t = machine["tools"]
    L.append(f"Machine: {machine['cpu_model']}, {machine['cpus_online']} cores "
             f"(allowed {','.join(map(str, machine['cpus_allowed']))}), kernel {machine['kernel']}, "
             f"host {machine['hostname']}. ringway {machine['ringway_git']}.\n")
    L.append("Tools: " + "; ".join(f"{n}: {v['version']}" for n, v in t.items()) + ".\n")
    L.append("All load on 127.0.0.1; each proxy runs alone while measured, in turn (A B C D per round). "
             "Rates and latencies depend on this machine; the ratios are what carries over. "
             "Numbers from a machine busy with other work (see the notes) are not worth comparing.\n")
    # ringway-base only has columns when some scenario measured it (run.sh --baseline).
    has_base = any("baseline" in doc for doc in docs.values())
    # ringfloor-* only has columns when some scenario measured it (run.sh --proxies ringfloor-...).
    shown = [p for p in PROXY_ORDER if (p != BASE or has_base)
             and (p not in RINGFLOOR or any(p in doc["summary"] for doc in docs.values()))]
    L.append("| scenario | unit | " + " | ".join(f"{p} rate" for p in shown)
             + " | " + " | ".join(f"{p} CPU µs/unit" for p in shown) + " |"
             + (" ringway / ringway-base CPU |" if has_base else ""))
    L.append("|---|---|" + "---:|" * (2 * len(shown) + has_base))
    for name, doc in docs.items():
        s = doc["summary"]
        g = lambda p, f: (f(s[p]) if p in s and s[p].get("valid_runs") else None)
        L.append(f"| {name} | {doc['settings'].get('unit', 'req')} | "
                 + " | ".join(_fmt(g(p, lambda x: x["rate"]), ",.0f") for p in shown) + " | "
                 + " | ".join(_fmt(g(p, lambda x: x["cpu_us_per_unit"]["total"]), ",.2f") for p in shown) + " |"
                 + (f" {_fmt(doc.get('baseline', {}).get('cpu_per_unit_ratio'), '.3f')} |" if has_base else ""))
    L.append("")
    if has_base:
        L.append("## ringway vs ringway-base (two builds, side by side)\n")
        L.append("Both run the same rendered config on the same core, back to back in every round. "
                 "A CPU ratio < 1 means ringway (the new build) is cheaper; per-round ratios pair the two "
                 "runs of one round.\n")
        L.append("| scenario | unit | ringway CPU µs/unit | ringway-base CPU µs/unit | ringway / ringway-base CPU "
                 "| user | sys | rate ratio | median of per-round ratios | per round |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for name, doc in docs.items():
            bl = doc.get("baseline")
            if not bl:
                continue
            L.append(f"| {name} | {doc['settings'].get('unit', 'req')} "
                     f"| {_fmt(bl.get('ringway_cpu_us_per_unit'), ',.3f')} | {_fmt(bl.get('ringway_base_cpu_us_per_unit'), ',.3f')} "
                     f"| {_fmt(bl['cpu_per_unit_ratio'], '.3f')} | {_fmt(bl['user_ratio'], '.3f')} "
                     f"| {_fmt(bl['sys_ratio'], '.3f')} | {_fmt(bl['rate_ratio'], '.3f')} "
                     f"| {_fmt(bl.get('per_round_cpu_ratio_median'), '.3f')} "
                     f"| {', '.join(f'{x:.3f}' for x in bl['per_round_cpu_ratio']) or '-'} |")
        bins = {(bl.get("ringway_bin"), bl.get("ringway_sha256"), bl.get("ringway_base_bin"),
                 bl.get("ringway_base_sha256"), bl.get("ringway_base_rev"))
                for bl in (d["baseline"] for d in docs.values() if "baseline" in d)}
        for rb, rsha, bb, bsha, rev in sorted(bins, key=str):
            L.append(f"\nringway: {rb or '?'}" + (f" (sha256 {rsha[:12]})" if rsha else "")
                     + f"; ringway-base: {bb or '?'}" + (f" (sha256 {bsha[:12]})" if bsha else "")
                     + (f", rev {rev.split()[0][:12]}" if rev else "")
                     + (" — the same binary" if rsha and rsha == bsha else "") + ".")
        L.append("")
    for name, doc in docs.items():
        L.append(render_scenario(doc))
        if gp:
            made = charts(gp, out, name, doc)
            doc["charts"] = made
            if made:
                L.append(" ".join(f"![{os.path.basename(c)[:-4]}]({c})" for c in made) + "\n")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"schema": 2, "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                   "machine": machine, "scenarios": docs}, f, indent=2)
    print(f"wrote {os.path.relpath(out)}/results.json, summary.md" + (" and charts/" if gp else "")
          + f" ({len(docs)} scenario(s))")
    return 0


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
    rr = sub.add_parser("report-runs")
    rr.add_argument("--runs", required=True)
    rr.add_argument("--out", required=True)
    rr.add_argument("--name", required=True)
    rr.add_argument("--desc", required=True)
    rr.add_argument("--unit", required=True)
    rr.add_argument("--proxy", action="append", default=[], help="NAME:STATUS[:REASON]")
    rr.add_argument("--ringway-bin", default="")
    rr.add_argument("--ringway-base-bin", default="")
    for k in ("duration", "rounds", "connections", "pinned", "placement", "proxy-cpu", "backend-cpu",
              "loadgen-cpu", "started"):
        rr.add_argument("--" + k, default="")
    i = sub.add_parser("idle")
    i.add_argument("--host", default="127.0.0.1")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--path", default="/")
    i.add_argument("--conns", type=int, required=True)
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--settle", type=float, default=3.0)
    i.add_argument("--timeout", type=float, default=120.0)
    i.add_argument("--out", required=True)
    g = sub.add_parser("aggregate")
    g.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"machine": cmd_machine, "probe": cmd_probe, "line": cmd_line, "report": cmd_report,
            "report-runs": cmd_report_runs, "idle": cmd_idle, "aggregate": cmd_aggregate}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
