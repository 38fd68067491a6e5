"""A raw HTTP/2 (h2c) target for tests/upstream_h2.rs, built on the Python `h2` package.
Usage: reset_server.py. Prints "PORT <n>", then serves connections one at a time:
  GET /reset: a 200 head and 7 bytes of body, then RST_STREAM INTERNAL_ERROR;
  any other request: RST_STREAM REFUSED_STREAM before any response.
"""

import socket
import sys

import h2.config
import h2.connection
import h2.errors
import h2.events

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(16)
print(f"PORT {sock.getsockname()[1]}", flush=True)


def serve(conn):
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2c.initiate_connection()
    conn.sendall(h2c.data_to_send())
    while True:
        data = conn.recv(65536)
        if not data:
            return
        for ev in h2c.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                path = dict(ev.headers).get(b":path", b"")
                if path == b"/reset":
                    h2c.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "text/plain")])
                    h2c.send_data(ev.stream_id, b"partial")
                    conn.sendall(h2c.data_to_send())
                    h2c.reset_stream(ev.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                else:
                    h2c.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return
        out = h2c.data_to_send()
        if out:
            conn.sendall(out)


while True:
    c, _ = sock.accept()
    try:
        serve(c)
    except Exception as e:  # noqa: BLE001 - a broken test connection ends only itself
        print(f"connection ended: {e}", file=sys.stderr, flush=True)
    finally:
        c.close()
