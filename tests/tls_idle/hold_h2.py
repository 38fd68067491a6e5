"""Holds idle HTTP/2 connections for tests/idle_h2_memory.rs, in its own process so that the
client's state is not counted in the proxy's heap.

    hold_h2.py HOST PORT N tls|h2c

Opens N connections one after another (TLS with ALPN h2, or h2c with prior knowledge), sends
one GET on each and reads its whole answer, prints "ready N", then holds them until stdin
closes. A line "again" on stdin sends one more GET on every held connection (and prints
"again N" once all were answered whole); the connections stay open after it."""
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events

host, port, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = None
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])


def get(s, c):
    """One GET on connection `c` over socket `s`, read to its END_STREAM: the status."""
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "https" if ctx else "http"),
                         (":authority", "idle.test")], end_stream=True)
    s.sendall(c.data_to_send())
    status = None
    while True:
        data = s.recv(65536)
        if not data:
            sys.exit("the proxy closed a connection")
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
            elif isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                s.sendall(c.data_to_send())
                return status
        s.sendall(c.data_to_send())


held = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=10)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="idle.test")
        if s.selected_alpn_protocol() != "h2":
            sys.exit(f"ALPN chose {s.selected_alpn_protocol()!r}, not h2")
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    status = get(s, c)
    if status != b"200":
        sys.exit(f"unexpected status {status!r}")
    held.append((s, c))
print("ready", len(held), flush=True)
for line in sys.stdin:
    if line.strip() == "again":
        ok = sum(get(s, c) == b"200" for s, c in held)
        print("again", ok, flush=True)
