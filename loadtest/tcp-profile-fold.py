"""Folds `perf script -F comm,tid,ip,sym` of one proxy's samples into microseconds per
connection: self time of the top symbols, and the inclusive time (with its top callees) of the
kernel paths a short connection goes through. Used by tcp-profile.sh.

usage: perf script ... | python3 tcp-profile-fold.py CONNS FREQ TOP COMMS_REPORT
"""
import collections
import re
import sys

# The kernel paths of a short connection's setup and teardown (whichever a proxy uses).
KEY = [
    "__do_sys_io_uring_enter", "io_submit_sqes", "io_cqring_wait", "io_accept", "io_connect",
    "io_async_cancel", "io_close", "io_queue_async", "io_wq_submit_work", "task_work_run",
    "__sys_accept4", "__sys_connect", "tcp_v4_connect", "__inet_hash_connect", "__x64_sys_close",
    "__fput", "sock_close", "__tcp_close", "__sys_shutdown", "__sys_sendto", "__sys_recvfrom",
    "__sys_setsockopt", "__sys_getsockopt", "__sys_socket", "__x64_sys_splice",
    "__x64_sys_epoll_wait", "__x64_sys_epoll_ctl", "handle_softirqs", "tcp_v4_rcv",
    "tcp_rcv_state_process", "tcp_conn_request", "tcp_v4_syn_recv_sock", "tcp_time_wait",
    "tcp_fin", "schedule",
]


def main():
    n, freq, top, comms_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    stacks = collections.Counter()
    frames, have = [], False

    def flush():
        if have:
            stacks[tuple(reversed(frames))] += 1

    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            frames, have = [], False
        elif not line.startswith("\t"):
            flush()
            frames, have = [], True
        else:
            parts = line.split(None, 1)
            sym = parts[1].split(" (")[0] if len(parts) > 1 else "[unknown]"
            frames.append(re.sub(r"\+0x[0-9a-f]+$", "", sym))
    flush()
    if not n or not stacks:
        print("  no samples")
        return
    us = lambda c: c / freq / n * 1e6
    total, all_total, comm_rows = sum(stacks.values()), None, []
    for line in open(comms_path):
        m = re.match(r"# Samples: (\d+)(K?)", line)
        if m and all_total is None:
            all_total = int(m.group(1)) * (1000 if m.group(2) else 1)
        m = re.match(r"\s+([\d.]+)%\s+(\S.*?)\s*$", line)
        if m:
            comm_rows.append((float(m.group(1)), m.group(2)))
    if all_total:
        print("  the core's samples by command (us/conn): " + ", ".join(
            f"{c} {us(v / 100 * all_total):.1f}" for v, c in comm_rows[:5]))
    print(f"  proxy process: {us(total):.1f} us/conn ({total} samples)")
    selfs = collections.Counter()
    for s, c in stacks.items():
        selfs[s[-1] if s else "?"] += c
    print("  self: " + ", ".join(f"{k} {us(v):.2f}" for k, v in selfs.most_common(top)))
    for f in KEY:
        inc = sum(c for s, c in stacks.items() if f in s)
        if us(inc) < 0.3:
            continue
        callees = collections.Counter()
        for s, c in stacks.items():
            if f in s:
                i = s.index(f)
                callees[s[i + 1] if i + 1 < len(s) else "(self)"] += c
        print(f"  {f} {us(inc):.2f}: " + ", ".join(
            f"{k} {us(v):.2f}" for k, v in callees.most_common(5)))


main()
