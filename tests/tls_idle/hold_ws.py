"""Holds idle upgraded TLS connections for tests/idle_upgrade_memory.rs, in its own process so
that the client's TLS state is not counted in the proxy's heap.

    hold_ws.py HOST PORT N

Opens N TLS connections one after another, asks each for a WebSocket upgrade, reads the 101,
sends 100 bytes through the tunnel, prints "ready N", then holds them until stdin closes."""
import socket
import ssl
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
req = b"GET /ws HTTP/1.1\r\nHost: idle.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
held = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="idle.test")
    s.sendall(req)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("the proxy closed a fresh connection")
        got += chunk
    if not got.startswith(b"HTTP/1.1 101"):
        sys.exit(f"unexpected answer: {got[:40]!r}")
    s.sendall(b"\x07" * 100)
    held.append(s)
print("ready", len(held), flush=True)
sys.stdin.read()
