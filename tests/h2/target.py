"""A raw HTTP/2 (h2c) target for tests/upstream_h2.rs, on the Python `h2` package, for what
nginx cannot be made to do: trailers on a response with a content-length, 103 Early Hints,
REFUSED_STREAM and a graceful GOAWAY the stream is past.

Usage: target.py. Prints "PORT <n>", then one line per connection event, flushed:
  OPEN <n>             connection n was accepted (numbered from 1)
  CLOSED <n> <how>     it ended: "goaway" (the client sent GOAWAY, then closed), "eof"
  REQ <path>           a request ended (its body read whole)
  TRAILERS <path> <fields>  the request's trailers, as `name: value` joined by "; "
Each connection is served on its own thread. Paths:
  /trailers            200, content-length 5, `trailer: x-sum`, "hello", trailers x-sum: 42
  /trailers-quiet      the same without the `trailer` field announcing them
  /hints               103 (link: </s.css>; rel=preload), then 200 "hinted"
  /refuse-once         REFUSED_STREAM the first time (over all connections), then 200 "second"
  /goaway-once         the first time: GOAWAY NO_ERROR whose last stream id is below this
                       stream (so it was never processed), then the connection closes;
                       after that 200 "after goaway"
  /goaway-processed    GOAWAY NO_ERROR whose last stream id is this stream (processed), then
                       the connection closes without an answer
  /slow                like anything else, 300 ms later (the connection's thread sleeps)
  anything else        200 "ok <connection number> <request body length>"
Responses go out once the request ended (its body read whole). SETTINGS_ENABLE_CONNECT_PROTOCOL
is announced (unless started with `--no-connect`), and MAX_CONCURRENT_STREAMS 1 with
`--one-stream`; an extended CONNECT (RFC 8441) with
`:protocol websocket` gets, on /ws, a 200 and every DATA byte echoed back (END_STREAM answered
with END_STREAM); on /ws-frames, a 200 and a WebSocket echo (client frames unmasked and sent
back, a close frame answered with one, then END_STREAM); elsewhere a 403 with the body "no".
"""

import socket
import struct
import sys
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

lock = threading.Lock()
state = {"conns": 0, "refused": False, "goaway": False}


def say(line):
    with lock:
        print(line, flush=True)


def first(key):
    """True the first time `key` is asked for."""
    with lock:
        if state[key]:
            return False
        state[key] = True
        return True


def ws_echo(buf):
    """Server frames echoing the complete client frames in `buf`: (bytes, rest, closed)."""
    out, closed = b"", False
    while len(buf) >= 2:
        first, n, at = buf[0], buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + 4 + n:
            break
        mask = buf[at:at + 4]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[at + 4:at + 4 + n]))
        buf = buf[at + 4 + n:]
        if n < 126:
            head = bytes([first, n])
        elif n < 65536:
            head = bytes([first, 126]) + struct.pack("!H", n)
        else:
            head = bytes([first, 127]) + struct.pack("!Q", n)
        out += head + payload
        closed |= first & 0x0F == 0x8
    return out, buf, closed


def respond(h2c, sid, path, n, body_len):
    """Returns False when the connection is to close after sending what is queued."""
    if path == "/trailers" or path == "/trailers-quiet":
        headers = [(":status", "200"), ("content-length", "5"), ("content-type", "text/plain")]
        if path == "/trailers":
            headers.append(("trailer", "x-sum"))
        h2c.send_headers(sid, headers)
        h2c.send_data(sid, b"hello")
        h2c.send_headers(sid, [("x-sum", "42")], end_stream=True)
    elif path == "/hints":
        h2c.send_headers(sid, [(":status", "103"), ("link", "</s.css>; rel=preload")])
        body = b"hinted"
        h2c.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        h2c.send_data(sid, body, end_stream=True)
    elif path == "/refuse-once" and first("refused"):
        h2c.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
    elif path == "/goaway-processed":
        h2c.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=sid)
        return False
    elif path == "/goaway-once" and first("goaway"):
        h2c.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=max(0, sid - 2))
        return False
    else:
        if path == "/slow":
            time.sleep(0.3)
        if path == "/refuse-once":
            body = b"second"
        elif path == "/goaway-once":
            body = b"after goaway"
        else:
            body = f"ok {n} {body_len}".encode()
        h2c.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        h2c.send_data(sid, body, end_stream=True)
    return True


def serve(conn, n):
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2c.initiate_connection()
    if "--no-connect" not in sys.argv:
        h2c.update_settings({h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
    if "--one-stream" in sys.argv:
        h2c.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    conn.sendall(h2c.data_to_send())
    paths, bodies, tunnels, frames = {}, {}, set(), {}
    how = "eof"
    while True:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            break
        keep = True
        for ev in h2c.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                fields = dict(ev.headers)
                path = fields.get(b":path", b"/").decode()
                if fields.get(b":method") == b"CONNECT":
                    ok = fields.get(b":protocol") == b"websocket" and path in ("/ws", "/ws-frames")
                    if ok:
                        tunnels.add(ev.stream_id)
                        if path == "/ws-frames":
                            frames[ev.stream_id] = b""
                        h2c.send_headers(ev.stream_id, [(":status", "200"), ("sec-websocket-protocol", "echo")])
                    else:
                        h2c.send_headers(ev.stream_id, [(":status", "403"), ("content-length", "2")])
                        h2c.send_data(ev.stream_id, b"no", end_stream=True)
                    continue
                paths[ev.stream_id] = path
                bodies[ev.stream_id] = 0
            elif isinstance(ev, h2.events.DataReceived):
                h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.stream_id in frames:
                    out, frames[ev.stream_id], closed = ws_echo(frames[ev.stream_id] + ev.data)
                    step = h2c.max_outbound_frame_size
                    for i in range(0, len(out), step):
                        h2c.send_data(ev.stream_id, out[i:i + step])
                    if closed:
                        h2c.end_stream(ev.stream_id)
                    if closed:
                        tunnels.discard(ev.stream_id)
                        del frames[ev.stream_id]
                elif ev.stream_id in tunnels:
                    h2c.send_data(ev.stream_id, ev.data)
                else:
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, 0) + len(ev.data)
            elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id in paths:
                fields = "; ".join(f"{k.decode()}: {v.decode()}" for k, v in ev.headers)
                say(f"TRAILERS {paths[ev.stream_id]} {fields}")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                how = "goaway"
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id in tunnels:
                tunnels.discard(ev.stream_id)
                h2c.end_stream(ev.stream_id)
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id in paths:
                sid = ev.stream_id
                say(f"REQ {paths[sid]}")
                keep = respond(h2c, sid, paths.pop(sid), n, bodies.pop(sid, 0)) and keep
        out = h2c.data_to_send()
        if out:
            conn.sendall(out)
        if not keep:
            how = "goaway-sent"
            break
    say(f"CLOSED {n} {how}")
    conn.close()


def main():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    say(f"PORT {sock.getsockname()[1]}")
    while True:
        c, _ = sock.accept()
        with lock:
            state["conns"] += 1
            n = state["conns"]
        say(f"OPEN {n}")
        threading.Thread(target=serve, args=(c, n), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
