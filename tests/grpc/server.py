"""A gRPC test server with generic handlers (bytes in, bytes out: no protoc) for tests/grpc.rs.

Usage: server.py EVENTS_FILE. Prints "PORT <n>" once listening on 127.0.0.1, then serves
until killed. Each call appends "<method> <peer>" to EVENTS_FILE (the peer's port tells which
upstream connection ringway used), and a cancelled call appends "cancelled <method>".
"""

import sys
import threading
import time
from concurrent import futures

import grpc

EVENTS = sys.argv[1]
LOCK = threading.Lock()
MAX = 16 * 1024 * 1024


def event(line):
    with LOCK:
        with open(EVENTS, "a") as f:
            f.write(line + "\n")


def seen(method, context):
    event(f"{method} {context.peer()}")
    context.add_callback(lambda: None)


def echo(request, context):
    seen("Echo", context)
    if request.startswith(b"status:"):
        # status:<code>:<message>
        _, code, message = request.decode().split(":", 2)
        context.set_trailing_metadata((("x-detail", "custom-trailer"),))
        context.abort(grpc.StatusCode(
            next(s for s in grpc.StatusCode if s.value[0] == int(code)).value), message)
    if request.startswith(b"sleep:"):
        # The deadline the client set reached this server (grpc-timeout passed through).
        event(f"deadline {context.time_remaining()}")
        time.sleep(float(request[6:].decode()))
        if not context.is_active():
            event("cancelled Echo")
        return b"slept"
    if request.startswith(b"size:"):
        return b"r" * int(request[5:].decode())
    context.set_trailing_metadata((("x-trailer", "yes"), ("x-bin-bin", b"\x00\x01")))
    return request


def stream(request, context):
    seen("Stream", context)
    count, size = (int(x) for x in request.decode().split(":"))
    for i in range(count):
        yield bytes([65 + i % 26]) * size


def sum_sizes(request_iterator, context):
    seen("Sum", context)
    total = 0
    n = 0
    for m in request_iterator:
        total += len(m)
        n += 1
    return f"{n}:{total}".encode()


def chat(request_iterator, context):
    seen("Chat", context)
    for m in request_iterator:
        yield b"re:" + m


def wait(request, context):
    seen("Wait", context)
    finished = []
    # Runs when the call ends: cancelled by the client unless the handler finished it.
    context.add_callback(lambda: event("finished Wait" if finished else "cancelled Wait"))
    yield b"first"
    time.sleep(30)
    finished.append(True)


ident = lambda b: b
handlers = {
    "Echo": grpc.unary_unary_rpc_method_handler(echo, ident, ident),
    "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident),
    "Sum": grpc.stream_unary_rpc_method_handler(sum_sizes, ident, ident),
    "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
    "Wait": grpc.unary_stream_rpc_method_handler(wait, ident, ident),
}
server = grpc.server(
    futures.ThreadPoolExecutor(max_workers=64),
    options=[
        ("grpc.max_receive_message_length", MAX),
        ("grpc.max_send_message_length", MAX),
    ],
)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", handlers),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"PORT {port}", flush=True)
server.wait_for_termination()
