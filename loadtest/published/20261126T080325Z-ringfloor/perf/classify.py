"""Split a perf profile's samples (perf record -g) into categories by call chain."""
import subprocess, sys, re, collections
NET = re.compile(r"^(tcp_(?!poll)|__tcp|ip_|__ip|sock_sendmsg|sock_recvmsg|sock_def|skb|__skb|kfree_skb|net_rx|__netif|netif|inet_|__inet|__dev_queue|loopback|process_backlog|bbr_|napi_|_copy_to_iter|_copy_from_iter|__alloc_skb|release_sock|lock_sock)")
ARM = ("io_arm_apoll", "io_arm_poll_handler", "__io_arm_poll_handler")
SCHED = ("schedule", "__schedule", "finish_task_switch", "io_cqring_wait", "__io_cqring_wait_schedule")
def classify(frames):
    leaf_sym, leaf_dso = frames[0]
    if "kernel.kallsyms" not in leaf_dso:
        return "user space"
    names = [s for s, _ in frames]
    if any(n.startswith(ARM) for n in names):
        return "io_uring: arming a poll (receive not ready)"
    if any(NET.match(n) for n in names):
        return "TCP/IP, socket, loopback softirq"
    if any(n.startswith(SCHED) for n in names):
        return "sleeping/waking in io_uring_enter or epoll_wait"
    if any(n.startswith(("io_", "__io_", "io_uring")) for n in names):
        return "io_uring: submit, complete, task work, fd lookup"
    if any(n.startswith(("__x64_sys", "do_syscall", "entry_SYSCALL", "syscall_exit")) for n in names):
        return "syscall entry/exit, other syscalls"
    return "other kernel"
out = subprocess.run(["perf", "script", "-i", sys.argv[1]], capture_output=True, text=True).stdout
cnt = collections.Counter(); frames = []
for line in out.splitlines() + [""]:
    s = line.strip()
    if not s:
        if frames:
            cnt[classify(frames)] += 1
        frames = []
        continue
    if line[0] not in " \t":
        continue  # sample header
    m = re.match(r"\s*[0-9a-f]+\s+(\S+?)(\+0x[0-9a-f]+)?\s+\((.*)\)$", line)
    if m:
        frames.append((m.group(1), m.group(3)))
total = sum(cnt.values())
us = float(sys.argv[2]) if len(sys.argv) > 2 else None
for k, v in cnt.most_common():
    print(f"  {k:52} {100*v/total:5.1f}%" + (f"  {us*v/total:5.2f} us/req" if us else ""))
print(f"  samples {total}")
