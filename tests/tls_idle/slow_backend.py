"""An HTTPS backend for tests/idle_upstream_tls_memory.rs, in its own process so that its TLS
state is not counted in the proxy's heap.

    slow_backend.py CERT KEY DELAY_MS

Prints "PORT <n>", then "OPEN <count>" each time it accepts a connection. Serves keep-alive
HTTP/1.1 on every connection (a thread each): each request (its body read whole, by
Content-Length) is answered 200 "ok" after DELAY_MS, so that requests sent at once overlap and
take one connection each. A line "close" on stdin closes every connection it holds (a FIN,
no close_notify), and it prints "closed <count>"."""
import socket
import ssl
import sys
import threading
import time

cert, key, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]) / 1000
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1024)
print("PORT", listener.getsockname()[1], flush=True)
lock = threading.Lock()
conns = []
opened = 0


def serve(s):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            time.sleep(delay)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except (OSError, ValueError):
        pass


def accept():
    global opened
    while True:
        raw, _ = listener.accept()
        try:
            s = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        with lock:
            conns.append(s)
            opened += 1
            print("OPEN", opened, flush=True)
        threading.Thread(target=serve, args=(s,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()
for line in sys.stdin:
    if line.strip() == "close":
        with lock:
            n = len(conns)
            for s in conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            conns.clear()
        print("closed", n, flush=True)
