"""A Python grpcio server and client for wirespan's large-message test (no generated code:
generic handlers over raw bytes).

  grpc_big.py server              prints its port, serves demo.Big/Small and demo.Big/Large
  grpc_big.py client PORT PLAN    PLAN: comma-separated waves, each '+'-joined calls run
                                  concurrently on the one channel; a call is s (small) or
                                  the size in bytes of a large request and response.
The client prints one line per call, '<method> <status>', and exits non-zero on a wrong answer.
"""

import sys
from concurrent import futures

import grpc

OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def small(request, context):
    return b"pong:" + request[:16]


def large(request, context):
    # The response is as large as the request, and derived from it.
    return bytes(reversed(request))


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=OPTIONS)
    handlers = {
        "Small": grpc.unary_unary_rpc_method_handler(small),
        "Large": grpc.unary_unary_rpc_method_handler(large),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("demo.Big", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def payload(size, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(256)) * (size // 256) + b"x" * (size % 256)


def client(port, plan):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=10)
    calls = {
        name: channel.unary_unary(f"/demo.Big/{name}") for name in ("Small", "Large")
    }
    ok = True
    for n, wave in enumerate(plan.split(",")):
        pending = []
        for k, call in enumerate(wave.split("+")):
            if call == "s":
                request = b"ping %d %d" % (n, k)
                want = b"pong:" + request[:16]
                pending.append(("Small", calls["Small"].future(request, timeout=60), want))
            else:
                request = payload(int(call), n + k)
                want = bytes(reversed(request))
                pending.append(("Large", calls["Large"].future(request, timeout=60), want))
        for name, future, want in pending:
            got = future.result()
            good = got == want
            ok &= good
            print(f"demo.Big/{name} {0 if good else 'WRONG'}", flush=True)
    channel.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(sys.argv[2], sys.argv[3])
