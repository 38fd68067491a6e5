#!/usr/bin/env python3
"""The slow-read scenario's load (stdlib only): slow readers plus a normal client.

  slowread.py run --port N --pid PID --conns N --seconds S --out FILE

Opens N "slow readers" (a separate process): each asks for PATH (a 1 MiB response) with a
tiny receive window (SO_RCVBUF set before connect, as slowhttptest -X does) and a remote
client's segment size (TCP_MAXSEG), and then reads READ bytes every INTERVAL seconds, so the
proxy is left holding a response it cannot hand on.
Once they all stall, it counts the proxy's file descriptors and RSS per slow connection, then
runs a normal client for S seconds: one keep-alive connection asking for NORMAL_PATH at a fixed
pace (every BIG_EVERY-th request a 1 MiB BIG_PATH on a second keep-alive connection), and writes
one `key=value` line for run.sh: units (normal requests), latency percentiles and max of the
small requests, the 1 MiB fetches' p99 and max, fds and RSS per slow connection, and how many
slow readers the proxy still held at the end (a proxy that dropped them did not bear the attack).
To attribute outliers, it also writes every normal request (wall-clock start, latency, time to
the first byte, whether it opened its connection, its client port, for matching with a proxy's
access log) to OUT.requests.tsv, lists each request slower than SLOW_MS on stderr with what the
kernel counted meanwhile (loopback drops, retransmissions, listen queue overflows), the CPU time
and run-queue wait of the proxy, the backend and the load generator, and how late the load
generator itself woke up; the run's kernel counter deltas, and each process's CPU time and
run-queue wait over the whole run (`proxy_wait_ms`...), go on the line.
"""
import argparse
import glob
import os
import re
import select
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helper import _rss_kb, _tree  # noqa: E402  (the harness's process-tree readers)

LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER {on, 0}: close with RST, no TIME_WAIT
OPEN_BATCH = 50      # slow readers connected at once: stays under every proxy's listen backlog
HEAD_TIMEOUT = 20.0  # seconds for every slow reader's response head to arrive
STALL_SETTLE = 1.0   # seconds for the proxies to fill what they buffer before fds/RSS are read
IO_TIMEOUT = 10.0    # the normal client's socket timeout: a request this slow counts as an error
SLOW_MS = 100.0      # a normal request slower than this is an outlier: listed with what the kernel saw
SAMPLE_EVERY = 0.02  # seconds between samples of the kernel's network counters during the run
TCPI_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (8 bytes of u8s, then u32s)


def fds(pid):
    n = 0
    for p in _tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def cmd_attack(a):
    """Connects the slow readers, prints `ready N` once each has its response head (N: how
    many did), then reads a little from each every interval until stdin closes."""
    req = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    socks, heads = [], {}
    for start in range(0, a.conns, OPEN_BATCH):
        batch = []
        for _ in range(min(OPEN_BATCH, a.conns - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.window)  # before connect: the window
            # A remote client's segment size: on loopback (MSS 64 KiB) the proxy's send buffer
            # autotunes to megabytes and swallows a whole 1 MiB response, so nothing would stall.
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, a.mss)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            try:
                s.settimeout(5)
                s.connect((a.host, a.port))
                s.sendall(req)
                s.setblocking(False)
            except OSError:
                s.close()
                continue
            batch.append(s)
            heads[s] = b""
            sel.register(s, selectors.EVENT_READ)
        socks.extend(batch)
        # Wait for this batch's heads before the next one (and read no more than the head).
        deadline = time.monotonic() + HEAD_TIMEOUT
        while any(b"\r\n\r\n" not in heads[s] for s in batch) and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                s = key.fileobj
                if b"\r\n\r\n" in heads[s]:
                    continue
                try:
                    chunk = s.recv(a.read)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(s)
                    heads[s] = b"closed\r\n\r\n"
                else:
                    heads[s] += chunk
    ok = sum(1 for s in socks if heads[s].startswith(b"HTTP/1.1 200"))
    print(f"ready {ok}", flush=True)
    # Slow reading: READ bytes per reader per INTERVAL, until the parent closes our stdin.
    alive = set(s for s in socks if heads[s].startswith(b"HTTP/1.1 200"))
    stdin = sys.stdin.fileno()
    while True:
        if select.select([stdin], [], [], a.interval)[0] and os.read(stdin, 4096) == b"":
            break
        for s in list(alive):
            try:
                if not s.recv(a.read):
                    alive.discard(s)
            except BlockingIOError:
                pass
            except OSError:
                alive.discard(s)
    # How many the proxy still held open: not closed by it during the run.
    held = 0
    for s in alive:
        try:
            held += 1 if s.recv(a.read) else 0
        except BlockingIOError:
            held += 1
        except OSError:
            pass
    print(f"held {held}", flush=True)
    for s in socks:
        s.close()
    return 0


# ---------------------------------------------------------------- what the kernel saw
# Counters that explain a stall outside the proxy: segments lost on loopback (the per-CPU
# backlog overflowing drops packets; TCP then waits a retransmission timeout, 200 ms or more),
# retransmissions, and SYNs dropped by a full listen queue (the first SYN retransmit is 1 s).
NETSTAT_KEYS = {("Tcp", "RetransSegs"): "tcp_retrans", ("TcpExt", "TCPTimeouts"): "tcp_rto",
                ("TcpExt", "TCPLossProbes"): "tcp_tlp", ("TcpExt", "TCPSynRetrans"): "syn_retrans",
                ("TcpExt", "ListenOverflows"): "listen_overflows", ("TcpExt", "ListenDrops"): "listen_drops",
                ("TcpExt", "TCPBacklogDrop"): "backlog_drops", ("TcpExt", "TCPRcvQDrop"): "rcvq_drops"}


def kernel_counters():
    """{name: count} of NETSTAT_KEYS, plus `lo_drops`: packets the per-CPU input backlogs dropped
    (/proc/net/softnet_stat's second column, every CPU)."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2]):
            proto, names = names.split(":", 1)
            for k, v in zip(names.split(), values.split(":", 1)[1].split()):
                key = NETSTAT_KEYS.get((proto, k))
                if key:
                    out[key] = int(v)
    try:
        with open("/proc/net/softnet_stat") as f:
            out["lo_drops"] = sum(int(line.split()[1], 16) for line in f if line.strip())
    except (OSError, IndexError, ValueError):
        pass
    return out


def diff(a, b):
    return {k: b[k] - a.get(k, 0) for k in b}


def sched_ns(pids):
    """{thread id: (name, ns on a CPU, ns runnable but waiting for one)} of the threads of `pids`
    (/proc/PID/task/TID/schedstat): a thread starved of CPU waits, a thread waiting for an
    event neither runs nor waits."""
    out = {}
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                with open(task + "/schedstat") as f:
                    run, wait, _ = f.read().split()
                with open(task + "/comm") as f:
                    name = f.read().strip()
                out[int(os.path.basename(task))] = (name, int(run), int(wait))
            except (OSError, ValueError):
                pass
    return out


class Sampler(threading.Thread):
    """Samples the kernel's counters and the CPU time and run-queue wait of the processes in
    `watch` ({label: pid, with its children, or [pid...]}) every SAMPLE_EVERY seconds, and how late each
    sample woke (a load generator starved of CPU shows as a late wakeup, not as a slow proxy)."""

    def __init__(self, watch):
        super().__init__(daemon=True)
        self.watch = {k: pids if isinstance(pids, list) else _tree(pids) for k, pids in watch.items() if pids}
        self.samples = []  # (monotonic time, counters, lateness s)
        self.stop = threading.Event()

    def run(self):
        due = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            c = kernel_counters()
            for label, pids in self.watch.items():
                c[label] = sched_ns(pids)
            self.samples.append((now, c, max(0.0, now - due)))
            due = now + SAMPLE_EVERY
            self.stop.wait(SAMPLE_EVERY)

    def whole(self):
        """CPU time and run-queue wait (ms) of each watched process over the whole run: how much
        the machine kept each from running, to compare proxies measured at different times."""
        if len(self.samples) < 2:
            return {}
        seen, _ = self.window(self.samples[0][0], self.samples[-1][0])
        return {k: v for k, v in seen.items()
                if k.split("_")[0] in self.watch and k.endswith(("_run_ms", "_wait_ms")) and "[" not in k}

    def window(self, t0, t1):
        """(counter deltas, worst sampler lateness) from the last sample before t0 to the first after t1."""
        before = [s for s in self.samples if s[0] <= t0]
        after = [s for s in self.samples if s[0] >= t1]
        if not before or not after:
            return {}, None
        inside = [s[2] for s in self.samples if t0 <= s[0] <= after[0][0]]
        a, b = before[-1][1], after[0][1]
        out = {k: b[k] - a.get(k, 0) for k in b if k not in self.watch}
        for label in self.watch:
            # Per process: CPU time and run-queue wait of all its threads, and the thread that
            # waited longest (a proxy's worker starved of CPU, or one of its helper threads).
            d = {t: (n, r - a[label].get(t, (n, 0, 0))[1], w - a[label].get(t, (n, 0, 0))[2])
                 for t, (n, r, w) in b[label].items()}
            out[f"{label}_run_ms"] = sum(r for _, r, _ in d.values()) / 1e6
            out[f"{label}_wait_ms"] = sum(w for _, _, w in d.values()) / 1e6
            if d:
                name, r, w = max(d.values(), key=lambda v: v[2])
                out[f"{label}_most_waiting[{name}]_wait_ms"] = w / 1e6
                out[f"{label}_most_waiting[{name}]_run_ms"] = r / 1e6
        return out, max(inside, default=0.0)


def total_retrans(sock):
    """The client socket's own retransmissions so far (tcp_info), or None."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_TOTAL_RETRANS + 4)
        return struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0]
    except (OSError, struct.error):
        return None


# ---------------------------------------------------------------- normal client
class Conn:
    def __init__(self, host, port):
        self.addr = (host, port)
        self.sock = None
        self.buf = b""
        self.new = False       # whether the last request opened the connection
        self.connected = None  # monotonic time the last request's connection was up
        self.first_byte = None  # monotonic time the last response's first byte arrived
        self.retrans0 = None   # the socket's retransmissions before the last request

    def get(self, path, host_header):
        """One GET; returns (status, body length). Reconnects once if a kept-alive socket was closed."""
        self.new = False
        for attempt in (0, 1):
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, timeout=IO_TIMEOUT)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf = b""
                self.new = True
            self.connected = time.monotonic()
            self.first_byte = None
            self.retrans0 = total_retrans(self.sock)
            try:
                self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode())
                return self._response()
            except (ConnectionError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise ConnectionError("unreachable")

    def _recv(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        self.buf += chunk

    def _response(self):
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if not m:
            raise ConnectionError("no content-length")
        n = int(m.group(1))
        while len(self.buf) < n:
            self._recv()
        self.buf = self.buf[n:]
        return status, n

    def local_port(self):
        try:
            return self.sock.getsockname()[1] if self.sock else 0
        except OSError:
            return 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def pct(sorted_us, q):
    if not sorted_us:
        return None
    return sorted_us[min(len(sorted_us) - 1, int(q * len(sorted_us)))]


REQUEST_COLUMNS = ("i", "kind", "wall_start", "latency_ms", "connect_ms", "first_byte_ms", "new_conn",
                   "client_port", "status", "client_retrans")


def normal_client(a):
    """Paced requests for a.seconds: (small latencies us, big latencies us, errors, elapsed,
    one record per request: REQUEST_COLUMNS)."""
    host_header = f"{a.host}:{a.port}"
    small, big = Conn(a.host, a.port), Conn(a.host, a.port)
    lat_small, lat_big, errors, records = [], [], 0, []
    period = 1.0 / a.rate
    t0 = time.monotonic()
    end = t0 + a.seconds
    i = 0
    while True:
        slot = t0 + i * period
        now = time.monotonic()
        if slot >= end:
            break
        if slot > now:
            time.sleep(slot - now)
        is_big = a.big_every and i % a.big_every == a.big_every - 1
        conn, path = (big, a.big_path) if is_big else (small, a.normal_path)
        wall, start = time.time(), time.monotonic()
        status = 0
        try:
            status, _ = conn.get(path, host_header)
            if status != 200:
                errors += 1
        except OSError:
            errors += 1
        done = time.monotonic()
        port, retrans = conn.local_port(), total_retrans(conn.sock) if conn.sock else None
        retrans = None if retrans is None or conn.retrans0 is None else retrans - conn.retrans0
        if status == 0:
            conn.close()
        us = (done - start) * 1e6
        (lat_big if is_big else lat_small).append(us)
        ms = lambda t: None if t is None else round((t - start) * 1e3, 3)
        records.append((i, "1m" if is_big else "small", round(wall, 6), round(us / 1e3, 3),
                        ms(conn.connected) if conn.new else 0.0, ms(conn.first_byte), int(conn.new),
                        port, status, retrans, start, done))
        i += 1
    small.close()
    big.close()
    return sorted(lat_small), sorted(lat_big), errors, time.monotonic() - t0, records


def report_outliers(records, sampler, path):
    """Writes every request to PATH (tab-separated, REQUEST_COLUMNS) and lists the outliers on
    stderr with what was counted during each (Sampler); returns how many there were."""
    slow = 0
    with open(path, "w") as f:
        f.write("\t".join(REQUEST_COLUMNS) + "\n")
        for r in records:
            f.write("\t".join("-" if v is None else str(v) for v in r[:len(REQUEST_COLUMNS)]) + "\n")
            if r[3] < SLOW_MS:
                continue
            slow += 1
            seen, late = sampler.window(r[-2], r[-1])
            kernel = " ".join(f"{k}={v:.0f}" for k, v in sorted(seen.items()) if round(v))
            print(f"slowread: outlier #{r[0]} {r[1]} at {r[2]:.6f}: {r[3]:.1f} ms (first byte after "
                  f"{r[5]} ms, new connection {bool(r[6])}, client port {r[7]}, status {r[8]}, "
                  f"client retransmitted {r[9]}); during it: {kernel or 'nothing'}; "
                  f"load generator woke up to {'-' if late is None else f'{late * 1e3:.0f}'} ms late",
                  file=sys.stderr)
    return slow


def cmd_run(a):
    fds0, rss0 = fds(a.pid), _rss_kb(a.pid)
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "attack", "--host", a.host, "--port", str(a.port),
         "--path", a.big_path, "--conns", str(a.conns), "--window", str(a.window), "--read", str(a.read),
         "--interval", str(a.interval), "--mss", str(a.mss)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline().split()
        ready = int(line[1]) if len(line) == 2 and line[0] == "ready" else 0
        time.sleep(STALL_SETTLE)
        fds1, rss1 = fds(a.pid), _rss_kb(a.pid)
        sampler = Sampler({"proxy": a.pid, "backend": a.backend_pid, "gen": [os.getpid()]})
        sampler.start()
        k0 = kernel_counters()
        small, bigs, errors, elapsed, records = normal_client(a)
        k1 = kernel_counters()
        sampler.stop.set()
        sampler.join()
        fds2, rss2 = fds(a.pid), _rss_kb(a.pid)
    finally:
        child.stdin.close()
        try:
            out = child.stdout.read().split()
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            out = []
    held = int(out[1]) if len(out) == 2 and out[0] == "held" else 0
    n = max(ready, 1)
    per_fd = (max(fds1, fds2) - fds0) / n
    per_rss = (max(rss1, rss2) - rss0) / n
    us = lambda v: "-" if v is None else f"{v:.0f}"
    ms = lambda v: "-" if v is None else f"{v / 1e3:.3f}"
    line = (f"loadgen=slowread units={len(small) + len(bigs)} seconds={elapsed:.3f} "
            f"errors={errors + (a.conns - ready)} "
            f"p50_us={us(pct(small, 0.50))} p90_us={us(pct(small, 0.90))} p99_us={us(pct(small, 0.99))} "
            f"p999_us={us(pct(small, 0.999))} max_ms={ms(small[-1] if small else None)} "
            f"big_p50_ms={ms(pct(bigs, 0.50))} big_p99_ms={ms(pct(bigs, 0.99))} "
            f"big_max_ms={ms(bigs[-1] if bigs else None)} "
            f"slow_conns={ready} slow_held={held} fds_idle={fds0} fds_attacked={max(fds1, fds2)} "
            f"slow_fds_per_conn={per_fd:.2f} slow_rss_per_conn_kb={per_rss:.2f} "
            f"outliers={report_outliers(records, sampler, a.out + '.requests.tsv')} "
            + " ".join(f"{k}={v}" for k, v in sorted(diff(k0, k1).items())) + " "
            + " ".join(f"{k}={v:.0f}" for k, v in sorted(sampler.whole().items())))
    with open(a.out, "w") as f:
        f.write(line + "\n")
    print(line)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "attack"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--conns", type=int, default=1000)
        p.add_argument("--window", type=int, default=2048, help="slow readers' SO_RCVBUF")
        p.add_argument("--read", type=int, default=32, help="bytes a slow reader reads per interval")
        p.add_argument("--interval", type=float, default=1.0)
        p.add_argument("--mss", type=int, default=1460, help="slow readers' TCP_MAXSEG (Ethernet's)")
    sub.choices["attack"].add_argument("--path", default="/1m")
    r = sub.choices["run"]
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--backend-pid", type=int, default=0, help="the backend's, for its CPU time and run-queue wait")
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--rate", type=float, default=200.0, help="normal requests per second")
    r.add_argument("--normal-path", default="/")
    r.add_argument("--big-path", default="/1m")
    r.add_argument("--big-every", type=int, default=10, help="every Nth normal request is BIG_PATH (0: none)")
    r.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"run": cmd_run, "attack": cmd_attack}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
