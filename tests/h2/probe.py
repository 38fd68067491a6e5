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


def scenario_trailers_length(host, port, path):
    """As `trailers`, also saying the content-length the response came with."""
    sock, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, path), end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(1))
    status, body, trailers, reset = response_of(events, 1)
    length = next(
        (dict(e.headers).get("content-length") for e in events
         if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 1),
        None,
    )
    t = ",".join("%s:%s" % (k, v) for k, v in trailers)
    print("status=%s length=%s body=%s trailers=%s reset=%s" % (status, length, body.decode(), t, reset))


def error_name(code):
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


def raw_frames(data):
    """Splits raw bytes into (type, flags, stream_id, payload) frames."""
    frames, i = [], 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        ftype, flags = data[i + 3], data[i + 4]
        sid = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        if i + 9 + length > len(data):
            break
        frames.append((ftype, flags, sid, data[i + 9:i + 9 + length]))
        i += 9 + length
    return frames


def frame(ftype, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def read_all(sock, seconds):
    data, end = b"", time.time() + seconds
    while time.time() < end:
        sock.settimeout(max(0.05, end - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def goaway_code(data):
    for ftype, _, _, payload in raw_frames(data):
        if ftype == 0x7:
            return error_name(int.from_bytes(payload[4:8], "big"))
    return None


def scenario_rapid_reset(host, port, count):
    """Opens and cancels COUNT streams as fast as possible (CVE-2023-44487)."""
    sock, conn = connect(host, port)
    sid = 1
    try:
        for _ in range(int(count)):
            conn.send_headers(sid, request_headers(host, port, "/sleep?ms=200"), end_stream=True)
            conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
            sid += 2
            sock.sendall(conn.data_to_send())
    except (OSError, h2.exceptions.ProtocolError) as e:
        print("sending stopped:", e)
    events, closed = pump(sock, conn, lambda ev: goaway(ev) is not None, deadline=5)
    g = goaway(events)
    print("goaway=%s" % (error_name(g.error_code) if g else "none"))


def scenario_few_resets(host, port, count):
    """Cancels COUNT streams (a browser navigating away), then makes a normal request."""
    sock, conn = connect(host, port)
    sid = 1
    for _ in range(int(count)):
        conn.send_headers(sid, request_headers(host, port, "/sleep?ms=100"), end_stream=True)
        sock.sendall(conn.data_to_send())
        time.sleep(0.02)
        conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        sock.sendall(conn.data_to_send())
        sid += 2
    conn.send_headers(sid, request_headers(host, port, "/after"), end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(sid))
    status, body, _, _ = response_of(events, sid)
    g = goaway(events)
    print("status=%s goaway=%s" % (status, error_name(g.error_code) if g else "none"))


def scenario_upload_trailers(host, port, path):
    """A POST without content-length: two DATA frames, then trailers (x-sum: 15)."""
    sock, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, path, method="POST"))
    conn.send_data(1, b"hello")
    conn.send_data(1, b", h2 world")
    conn.send_headers(1, [("x-sum", "15")], end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(1))
    status, body, _, reset = response_of(events, 1)
    print("status=%s body=%s reset=%s" % (status, body.decode(), reset))


def scenario_reset_after(host, port, ms):
    """Cancels a request MS milliseconds after sending it (its answer not come), then makes
    another on the same connection."""
    sock, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, "/held"), end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(int(ms) / 1000)
    conn.reset_stream(1, error_code=h2.errors.ErrorCodes.CANCEL)
    sock.sendall(conn.data_to_send())
    conn.send_headers(3, request_headers(host, port, "/local"), end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(3))
    status, body, _, _ = response_of(events, 3)
    print("status=%s body=%s" % (status, body.decode()))


def scenario_continuation_flood(host, port):
    """A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION after
    CONTINUATION (CVE-2024-27316)."""
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b""))
    import hpack
    block = hpack.Encoder().encode(request_headers(host, port, "/"))
    sock.sendall(frame(0x1, 0x1, 1, block))  # END_STREAM, no END_HEADERS
    # Each fragment a literal header without indexing: name "x-f", 1000-byte value.
    fragment = b"\x00\x03x-f" + b"\x7f\xe9\x06" + b"a" * 1000
    sent = 0
    try:
        for _ in range(10000):
            sock.sendall(frame(0x9, 0, 1, fragment))
            sent += 1
    except OSError as e:
        print("sending stopped after %d frames: %s" % (sent, e))
    data, closed = read_all(sock, 5)
    print("goaway=%s closed=%s" % (goaway_code(data), closed))


def scenario_big_headers(host, port, mode):
    """A decoded header list past max_header_list, then an ordinary request on the same
    connection. `bomb`: one 3000-byte field repeated (HPACK sends the repeats as 1-byte
    indexes, so the block is small and its decoded size large); `literal`: 40 KB sent as is."""
    sock, conn = connect(host, port, validate=False)
    if mode == "bomb":
        big = [("x-bomb", "v" * 3000)] * 10
    else:
        big = [("x-big-%d" % i, "v" * 1000) for i in range(40)]
    conn.send_headers(1, request_headers(host, port, "/big-headers", extra=big), end_stream=True)
    sock.sendall(conn.data_to_send())
    events, closed = pump(sock, conn, ended(1))
    status, _, _, reset = response_of(events, 1)
    g = goaway(events)
    if status:
        first = "status:%s" % status
    elif g:
        first = "goaway:%s" % error_name(g.error_code)
    else:
        first = "reset:%s" % error_name(reset)
    then = None
    if not g and not closed:
        conn.send_headers(3, request_headers(host, port, "/after"), end_stream=True)
        sock.sendall(conn.data_to_send())
        events, _ = pump(sock, conn, ended(3))
        then, _, _, _ = response_of(events, 3)
    print("first=%s then=%s" % (first, then))


MALFORMED = [
    ("connection-header", [("connection", "keep-alive")]),
    ("transfer-encoding", [("transfer-encoding", "chunked")]),
    ("te-gzip", [("te", "gzip")]),
    ("upgrade", [("upgrade", "websocket")]),
    ("crlf-in-value", [("x-a", "a\r\nx-injected: 1")]),
    ("nul-in-value", [("x-a", "a\x00b")]),
    ("uppercase-name", [("X-Upper", "1")]),
    ("unknown-pseudo", [(":foo", "bar")]),
    ("pseudo-after-regular", "late"),
    ("missing-path", "nopath"),
    ("connect", "connect"),
]


def scenario_malformed(host, port):
    """Each malformed request on a connection of its own; then a good one."""
    results = []
    for name, extra in MALFORMED:
        sock, conn = connect(host, port, validate=False)
        if extra == "late":
            hdrs = [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/m/late"),
                    (":authority", "a")]
        elif extra == "connect":
            hdrs = [(":method", "CONNECT"), (":authority", "example.com:443")]
        elif extra == "nopath":
            hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", "a")]
        else:
            hdrs = request_headers(host, port, "/m/" + name, extra=extra)
        conn.send_headers(1, hdrs, end_stream=True)
        sock.sendall(conn.data_to_send())
        events, closed = pump(sock, conn, ended(1))
        status, _, _, reset = response_of(events, 1)
        g = goaway(events)
        if status:
            outcome = "status:%s" % status
        elif reset is not None:
            outcome = "reset:%s" % error_name(reset)
        elif g:
            outcome = "goaway:%s" % error_name(g.error_code)
        else:
            outcome = "none"
        results.append("%s=%s" % (name, outcome))
        sock.close()
    sock, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, "/after"), end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(1))
    status, _, _, _ = response_of(events, 1)
    results.append("then=%s" % status)
    print(" ".join(results))


def scenario_length_mismatch(host, port):
    """content-length that disagrees with the DATA sent, both ways."""
    sock, conn = connect(host, port, validate=False)
    results = []
    for sid, declared, sent in [(1, 10, 5), (3, 3, 5)]:
        conn.send_headers(sid, request_headers(host, port, "/echo-body", method="POST",
                                               extra=[("content-length", str(declared))]))
        conn.send_data(sid, b"x" * sent, end_stream=True)
        sock.sendall(conn.data_to_send())
        events, _ = pump(sock, conn, ended(sid))
        status, _, _, reset = response_of(events, sid)
        results.append("cl%d/data%d=%s" % (declared, sent, "status:%s" % status if status else "reset:%s" % error_name(reset)))
    print(" ".join(results))


def scenario_settings(host, port, slow_path, streams):
    """Reads the server's SETTINGS, then opens STREAMS slow streams at once."""
    sock, conn = connect(host, port)
    events, _ = pump(sock, conn, lambda ev: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in ev))
    settings = {}
    for e in events:
        if isinstance(e, h2.events.RemoteSettingsChanged):
            for k, v in e.changed_settings.items():
                settings[k] = v.new_value
    max_streams = settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
    header_list = settings.get(h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE)
    window = settings.get(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE)
    # Open more streams than allowed, bypassing the client's own limit.
    type(conn).open_outbound_streams = property(lambda self: 0)
    sids = [1 + 2 * i for i in range(int(streams))]
    for sid in sids:
        conn.send_headers(sid, request_headers(host, port, slow_path), end_stream=True)
    sock.sendall(conn.data_to_send())
    all_done = lambda ev: all(ended(s)(ev) for s in sids)
    events, _ = pump(sock, conn, all_done)
    ok = refused = 0
    for sid in sids:
        status, _, _, reset = response_of(events, sid)
        if status == "200":
            ok += 1
        elif reset == h2.errors.ErrorCodes.REFUSED_STREAM:
            refused += 1
    print("max_streams=%s header_list=%s window=%s ok=%d refused=%d" % (max_streams, header_list, window, ok, refused))


def scenario_zero_window(host, port, path):
    """A client that never opens its flow-control window."""
    sock, conn = connect(host, port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    conn.send_headers(1, request_headers(host, port, path), end_stream=True)
    sock.sendall(conn.data_to_send())
    start = time.time()
    # Never acknowledge data: pump() would, so read raw frames instead.
    result, buf = None, b""
    while time.time() - start < 20:
        sock.settimeout(1)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            result = "closed"
            break
        buf += chunk
        for ftype, _, sid, payload in raw_frames(buf):
            if ftype == 0x3 and sid == 1:
                result = "reset:%s" % error_name(int.from_bytes(payload, "big"))
        if result:
            break
    print("outcome=%s within=%s" % (result, "20s" if result else "never"))


def scenario_drain(host, port, path):
    """A request in flight while the server drains: it must finish, with a GOAWAY. Read as raw
    frames: python-h2 refuses every frame after a GOAWAY, and the point here is what follows."""
    import hpack
    sock, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, path), end_stream=True)
    sock.sendall(conn.data_to_send())
    decoder = hpack.Decoder()
    status, body, codes, buf, done = None, b"", [], b"", False
    end = time.time() + TIMEOUT
    while time.time() < end and not done:
        sock.settimeout(max(0.05, end - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        frames = raw_frames(buf)
        used = sum(9 + len(f[3]) for f in frames)
        buf = buf[used:]
        for ftype, flags, sid, payload in frames:
            if ftype == 0x1:
                for k, v in decoder.decode(payload):
                    if sid == 1 and k == ":status":
                        status = v
                if sid == 1 and flags & 0x1:
                    done = True
            elif ftype == 0x0 and sid == 1:
                body += payload
                if flags & 0x1:
                    done = True
            elif ftype == 0x7:
                codes.append(error_name(int.from_bytes(payload[4:8], "big")))
            elif ftype == 0x6 and not flags & 0x1:
                sock.sendall(frame(0x6, 0x1, 0, payload))
    print("status=%s body=%s goaway=%s" % (status, body.decode().strip(), ",".join(sorted(set(codes))) or "none"))


def scenario_flood(host, port, kind, count):
    """COUNT frames of KIND (ping, settings, window-update) sent without reading a byte, then an
    ordinary request on another connection."""
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b""))
    if kind == "ping":
        one = frame(0x6, 0, 0, b"12345678")
    elif kind == "settings":
        one = frame(0x4, 0, 0, (0x3).to_bytes(2, "big") + (100).to_bytes(4, "big"))
    else:
        one = frame(0x8, 0, 0, (1).to_bytes(4, "big"))
    sock.setblocking(False)
    sent, batch = 0, one * 1000
    stalled_at = None
    while sent < int(count):
        try:
            n = sock.send(batch)
            sent += n // len(one)
            if n < len(batch):
                batch = batch[n:] + one * (n // len(one))
        except BlockingIOError:
            if stalled_at is None:
                stalled_at = time.time()
            if time.time() - stalled_at > 2:
                break
            time.sleep(0.01)
        except OSError as e:
            print("flood stopped:", e)
            break
    print("flood sent %d frames" % sent)
    sock.setblocking(True)
    other, conn = connect(host, port)
    conn.send_headers(1, request_headers(host, port, "/after"), end_stream=True)
    other.sendall(conn.data_to_send())
    events, _ = pump(other, conn, ended(1))
    status, _, _, _ = response_of(events, 1)
    data, closed = read_all(sock, 3)
    code = goaway_code(data)
    state = "goaway:%s" % code if code else ("closed" if closed else "open")
    print("other=%s flooder=%s" % (status, state))


SCENARIOS = {
    "trailers": scenario_trailers,
    "trailers-length": scenario_trailers_length,
    "rapid-reset": scenario_rapid_reset,
    "few-resets": scenario_few_resets,
    "reset-after": scenario_reset_after,
    "upload-trailers": scenario_upload_trailers,
    "continuation-flood": scenario_continuation_flood,
    "bomb-headers": lambda h, p: scenario_big_headers(h, p, "bomb"),
    "literal-headers": lambda h, p: scenario_big_headers(h, p, "literal"),
    "malformed": scenario_malformed,
    "length-mismatch": scenario_length_mismatch,
    "settings": scenario_settings,
    "zero-window": scenario_zero_window,
    "drain": scenario_drain,
    "flood": scenario_flood,
}


def main():
    name, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
    SCENARIOS[name](host, port, *sys.argv[4:])


if __name__ == "__main__":
    main()
