"""gRPC calls for tests/grpc.rs through ringway. Usage:
client.py ADDR SCENARIO [CA_FILE]   (with CA_FILE: TLS to a.test at ADDR's port)
The last stdout line is the verdict the test checks; a failed call prints the failure.
"""

import sys
import threading
import time

import grpc

addr, scenario = sys.argv[1], sys.argv[2]
MAX = 16 * 1024 * 1024
opts = [("grpc.max_receive_message_length", MAX), ("grpc.max_send_message_length", MAX)]
if len(sys.argv) > 3:
    with open(sys.argv[3], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    opts.append(("grpc.ssl_target_name_override", "a.test"))
    channel = grpc.secure_channel(addr, creds, options=opts)
else:
    channel = grpc.insecure_channel(addr, options=opts)
ident = lambda b: b
unary = channel.unary_unary("/test.Svc/Echo", ident, ident)
server_stream = channel.unary_stream("/test.Svc/Stream", ident, ident)
client_stream = channel.stream_unary("/test.Svc/Sum", ident, ident)
bidi = channel.stream_stream("/test.Svc/Chat", ident, ident)
wait = channel.unary_stream("/test.Svc/Wait", ident, ident)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


if scenario == "unary":
    resp, call = unary.with_call(b"hello", timeout=20)
    trailers = dict(call.trailing_metadata())
    check(resp == b"hello", resp)
    check(trailers.get("x-trailer") == "yes", trailers)
    check(trailers.get("x-bin-bin") == b"\x00\x01", trailers)
    print(f"ok unary {call.code().name}")
elif scenario == "big":
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    resp = unary(big, timeout=60)
    check(resp == big, f"echo of {len(big)} bytes came back as {len(resp)}")
    resp = unary(b"size:%d" % (3 * 1024 * 1024 + 7), timeout=60)
    check(len(resp) == 3 * 1024 * 1024 + 7, len(resp))
    print("ok big")
elif scenario == "server_stream":
    got = list(server_stream(b"50:1000", timeout=20))
    check(len(got) == 50 and all(len(m) == 1000 for m in got), [len(m) for m in got])
    check(got[1] == b"B" * 1000, got[1][:10])
    print("ok server_stream 50")
elif scenario == "client_stream":
    resp = client_stream(iter([b"x" * 100000] * 30), timeout=20)
    print(f"ok client_stream {resp.decode()}")
elif scenario == "bidi":
    # Ping-pong: each message is sent only after the previous answer arrived, so the
    # proxy must stream both ways at once.
    replies = []
    ready = threading.Semaphore(1)
    def requests():
        for i in range(10):
            ready.acquire()
            yield b"m%d" % i
    for r in bidi(requests(), timeout=20):
        replies.append(r)
        ready.release()
    check(replies == [b"re:m%d" % i for i in range(10)], replies)
    print("ok bidi 10")
elif scenario == "error":
    try:
        unary(b"status:5:no such thing", timeout=20)
        check(False, "the call succeeded")
    except grpc.RpcError as e:
        trailers = dict(e.trailing_metadata() or ())
        check(e.details() == "no such thing", e.details())
        check(trailers.get("x-detail") == "custom-trailer", trailers)
        print(f"ok error {e.code().name}")
elif scenario == "deadline":
    start = time.time()
    try:
        unary(b"sleep:3", timeout=0.5)
        check(False, "the call succeeded")
    except grpc.RpcError as e:
        took = time.time() - start
        check(took < 2.5, f"the deadline took {took:.1f}s")
        print(f"ok deadline {e.code().name}")
elif scenario == "cancel":
    call = wait(b"", timeout=20)
    first = next(call)
    check(first == b"first", first)
    call.cancel()
    print(f"ok cancel {call.code().name}")
elif scenario == "hold":
    # Holds one streaming call open until stdin ends (least_conn counts it).
    call = wait(b"", timeout=20)
    check(next(call) == b"first", "first message")
    print("holding", flush=True)
    sys.stdin.readline()
    call.cancel()
    print("ok hold")
elif scenario == "many":
    # Many calls at once over one client connection.
    futs = [unary.future(b"n%d" % i, timeout=30) for i in range(200)]
    got = [f.result() for f in futs]
    check(got == [b"n%d" % i for i in range(200)], "answers out of place")
    print("ok many 200")
else:
    sys.exit(f"unknown scenario {scenario}")
