#!/usr/bin/env python3
"""Raw HTTP/2 client scenarios for tests/http2.rs, on the Python `h2` package.

Usage: probe.py SCENARIO HOST PORT [ARGS...]
Each scenario prints diagnostic lines and, last, one verdict line the Rust test compares.
"""

import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.errors
import h2.settings

TIMEOUT = 15.0


def connect(host, port, validate=True, settings=None):
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    cfg = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=validate,
        normalize_outbound_headers=validate,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=cfg)
    conn.initiate_connection()
    if settings:
        conn.update_settings(settings)
    sock.sendall(conn.data_to_send())
    return sock, conn


def pump(sock, conn, until, deadline=TIMEOUT):
    """Reads and handles events until `until(events_so_far)` is true or the peer closes.
    Returns (events, closed)."""
    events = []
    end = time.time() + deadline
    while not until(events):
        sock.settimeout(max(0.05, end - time.time()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return events, False
        except ConnectionResetError:
            return events, True
        if not data:
            return events, True
        try:
            evs = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            print("protocol error from server:", e)
            return events, True
        for ev in evs:
            print("event:", ev)
            events.append(ev)
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                return events, True
        if time.time() > end:
            return events, False
    return events, False


def ended(stream_id):
    def check(events):
        return any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == stream_id
            for e in events
        ) or any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    return check


def request_headers(host, port, path, method="GET", extra=()):
    return [
        (":method", method),
        (":path", path),
        (":scheme", "http"),
        (":authority", "%s:%s" % (host, port)),
    ] + list(extra)


def response_of(events, sid):
    status, body, trailers, reset = None, b"", [], None
    for e in events:
        if getattr(e, "stream_id", None) != sid:
            continue
        if isinstance(e, h2.events.ResponseReceived):
            status = dict(e.headers)[":status"]
        elif isinstance(e, h2.events.DataReceived):
            body += e.data
        elif isinstance(e, h2.events.TrailersReceived):
            trailers = e.headers
        elif isinstance(e, h2.events.StreamReset):
            reset = e.error_code
    return status, body, trailers, reset


def goaway(events):
    for e in events:
        if isinstance(e, h2.events.ConnectionTerminated):
            return e
    return None


def scenario_trailers(host, port, path):
    sock, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, path), end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(1))
    status, body, trailers, _ = response_of(events, 1)
    t = ",".join("%s:%s" % (k, v) for k, v in trailers)
    print("status=%s body=%s trailers=%s" % (status, body.decode(), t))


SCENARIOS = {
    "trailers": scenario_trailers,
}


def main():
    name, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
    SCENARIOS[name](host, port, *sys.argv[4:])


if __name__ == "__main__":
    main()
