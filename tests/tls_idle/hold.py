"""Holds idle TLS keep-alive connections for tests/idle_tls_memory.rs, in its own process so
that the client's TLS state is not counted in the proxy's heap.

    hold.py HOST PORT N [BODY]

Opens N connections one after another, sends one request on each (a POST with BODY bytes,
sent as full TLS records, when BODY is given) and reads the answer's head, prints "ready N",
then holds them until stdin closes."""
import socket
import ssl
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = int(sys.argv[4]) if len(sys.argv) > 4 else 0
if body:
    req = f"POST / HTTP/1.1\r\nHost: idle.test\r\nContent-Length: {body}\r\n\r\n".encode() + b"x" * body
else:
    req = b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n"
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
    if not got.startswith(b"HTTP/1.1 200"):
        sys.exit(f"unexpected answer: {got[:40]!r}")
    held.append(s)
print("ready", len(held), flush=True)
sys.stdin.read()
