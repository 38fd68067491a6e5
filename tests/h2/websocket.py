#!/usr/bin/env python3
"""WebSocket over HTTP/2 (RFC 8441 extended CONNECT) scenarios for tests/http2.rs, on the
Python `h2` package, with WebSocket frames (RFC 6455) written by hand.

Usage: websocket.py SCENARIO HOST PORT [ARGS...]
Each scenario prints diagnostic lines and, last, one verdict line the Rust test compares.
"""

import os
import struct
import sys

import h2.events
import h2.settings

from probe import connect, pump, ended, response_of

WS_TEXT, WS_CLOSE = 0x1, 0x8


def ws_frame(opcode, payload):
    """A final client frame: always masked (RFC 6455 §5.3)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_frames(data):
    """Splits server frames (unmasked) off `data`: ([(opcode, payload)], rest)."""
    out = []
    while len(data) >= 2:
        opcode, n, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                break
            n, at = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                break
            n, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + n:
            break
        out.append((opcode, data[at:at + n]))
        data = data[at + n:]
    return out, data


def send(conn, sid, data):
    """DATA frames no larger than the peer allows (its window is ample here)."""
    step = conn.max_outbound_frame_size
    for i in range(0, len(data), step):
        conn.send_data(sid, data[i:i + step])


def server_settings(sock, conn):
    events, _ = pump(sock, conn, lambda ev: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in ev))
    for e in events:
        if isinstance(e, h2.events.RemoteSettingsChanged):
            v = e.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            return v.new_value if v else 0
    return None


def connect_headers(host, port, path, extra=()):
    return [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "%s:%s" % (host, port)),
        ("sec-websocket-version", "13"),
    ] + list(extra)


def responded(sid):
    def check(events):
        return any(
            isinstance(e, (h2.events.ResponseReceived, h2.events.StreamReset, h2.events.StreamEnded))
            and e.stream_id == sid
            for e in events
        ) or any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    return check


def scenario_echo(host, port, path, count):
    """Opens a WebSocket, sends COUNT text messages, reads their echoes, then closes it."""
    sock, conn = connect(host, port)
    enabled = server_settings(sock, conn)
    conn.send_headers(1, connect_headers(host, port, path))
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, responded(1))
    status, _, _, reset = response_of(events, 1)
    if status != "200":
        print("settings=%s status=%s reset=%s" % (enabled, status, reset))
        return
    sent = ["hello %d" % i for i in range(int(count))]
    sent.append("x" * 70000)  # one message past the 64 KiB length form and a DATA frame
    for msg in sent:
        send(conn, 1, ws_frame(WS_TEXT, msg.encode()))
    sock.sendall(conn.data_to_send())
    buf, got = b"", []

    def echoed(ev):
        nonlocal buf, got
        for e in ev[len(echoed.seen):]:
            if isinstance(e, h2.events.DataReceived) and e.stream_id == 1:
                buf += e.data
        echoed.seen = list(ev)
        frames, buf = ws_frames(buf)
        got += [p.decode() for op, p in frames if op == WS_TEXT]
        return len(got) >= len(sent) or ended(1)(ev)
    echoed.seen = []
    pump(sock, conn, echoed)
    # The client closes: a close frame, then END_STREAM once the server's close frame is in.
    send(conn, 1, ws_frame(WS_CLOSE, struct.pack("!H", 1000)))
    sock.sendall(conn.data_to_send())
    closes = []

    def closed(ev):
        nonlocal buf
        for e in ev[len(closed.seen):]:
            if isinstance(e, h2.events.DataReceived) and e.stream_id == 1:
                buf += e.data
        closed.seen = list(ev)
        frames, buf = ws_frames(buf)
        closes.extend(struct.unpack("!H", p[:2])[0] for op, p in frames if op == WS_CLOSE)
        return ended(1)(ev)
    closed.seen = []
    events, _ = pump(sock, conn, closed)
    end = "end_stream" if any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events) else "no_end"
    conn.end_stream(1)
    sock.sendall(conn.data_to_send())
    ok = got == sent
    print("settings=%s status=%s echoes=%s close=%s %s" % (
        enabled, status, "all" if ok else "%d/%d" % (len(got), len(sent)),
        closes[0] if closes else None, end))


def scenario_answer(host, port, path):
    """An extended CONNECT whose upgrade is not made: the status (and body) it gets."""
    sock, conn = connect(host, port)
    enabled = server_settings(sock, conn)
    conn.send_headers(1, connect_headers(host, port, path))
    sock.sendall(conn.data_to_send())
    events, _ = pump(sock, conn, ended(1))
    status, body, _, reset = response_of(events, 1)
    print("settings=%s status=%s reset=%s" % (enabled, status, reset))


def scenario_settings(host, port):
    sock, conn = connect(host, port)
    print("settings=%s" % server_settings(sock, conn))


SCENARIOS = {
    "echo": scenario_echo,
    "answer": scenario_answer,
    "settings": scenario_settings,
}


def main():
    name, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
    SCENARIOS[name](host, port, *sys.argv[4:])


if __name__ == "__main__":
    main()
