"""A gRPC server with no mqrpc code: mqrpc.interop.v1.TestService served by
Debian's python3-grpcio, as test/support/interop-service.ts serves it (echoes
the x-grpc-test-echo-initial header and x-grpc-test-echo-trailing-bin
trailer, answers with the requested payload sizes and the requested status).

No generated code: a generic handler, and message classes built at start from
a FileDescriptorSet (`buf build -o <file>.binpb --path proto/mqrpc/interop`).

    /usr/bin/python3 interop_upstream.py <descriptor-set> <listen address> [gzip]

<listen address> is `127.0.0.1:0` (a free port) or `unix:/path/to.sock`;
`gzip` compresses every response message.
Prints JSON lines on stdout: {"event": "listening", "port": N} once serving,
then {"event": "started", "method": M} as each call's handler starts and
{"event": "done", "method": M, "cancelled": bool} when each call ends
(cancelled: it ended before the server's status went out, see on_done). Exits
when stdin reaches its end (the parent is gone).
"""

import json
import os
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "mqrpc.interop.v1.TestService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}

out_lock = threading.Lock()


def emit(event):
    with out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def load_messages(path):
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)

    def message_class(name):
        descriptor = pool.FindMessageTypeByName("mqrpc.interop.v1." + name)
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(pool).GetPrototype(descriptor)

    return {
        name: message_class(name)
        for name in [
            "Empty",
            "Payload",
            "SimpleRequest",
            "SimpleResponse",
            "StreamingInputCallRequest",
            "StreamingInputCallResponse",
            "StreamingOutputCallRequest",
            "StreamingOutputCallResponse",
        ]
    }


class Call:
    """Tracks one call: echoes metadata, waits that end early on cancellation."""

    def __init__(self, context, method):
        self.context = context
        self.ended = threading.Event()
        self.method = method
        context.add_callback(self.on_done)
        emit({"event": "started", "method": method})

    def on_done(self):
        self.ended.set()
        # grpcio tells a termination callback nothing of how the call ended;
        # its private state says whether the call ended cancelled (before
        # the server's status went out). A handler blocked reading requests
        # may see a cancellation as the end of the requests, return, and
        # get its status out first: then this says False.
        state = getattr(self.context, "_state", None)
        cancelled = getattr(state, "client", None) == "cancelled"
        emit({"event": "done", "method": self.method, "cancelled": cancelled})

    def echo_metadata(self):
        metadata = dict(self.context.invocation_metadata())
        if ECHO_INITIAL in metadata:
            self.context.send_initial_metadata([(ECHO_INITIAL, metadata[ECHO_INITIAL])])
        if ECHO_TRAILING in metadata:
            self.context.set_trailing_metadata([(ECHO_TRAILING, metadata[ECHO_TRAILING])])

    def sleep_us(self, micros):
        if micros > 0 and self.ended.wait(micros / 1_000_000):
            raise RuntimeError("call ended while sleeping")

    def maybe_fail(self, status):
        if status.code != 0:
            self.context.abort(CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)


def make_handler(m):
    def payload(size):
        return m["Payload"](body=bytes(size))

    def empty_call(request, context):
        call = Call(context, "EmptyCall")
        call.echo_metadata()
        return m["Empty"]()

    def unary_call(request, context):
        call = Call(context, "UnaryCall")
        call.echo_metadata()
        call.maybe_fail(request.response_status)
        return m["SimpleResponse"](payload=payload(request.response_size))

    def streaming_output_call(request, context):
        call = Call(context, "StreamingOutputCall")
        call.echo_metadata()
        for p in request.response_parameters:
            call.sleep_us(p.interval_us)
            yield m["StreamingOutputCallResponse"](payload=payload(p.size))
        call.maybe_fail(request.response_status)

    def streaming_input_call(requests, context):
        call = Call(context, "StreamingInputCall")
        call.echo_metadata()
        size = 0
        for r in requests:
            size += len(r.payload.body)
        return m["StreamingInputCallResponse"](aggregated_payload_size=size)

    def full_duplex_call(requests, context):
        call = Call(context, "FullDuplexCall")
        call.echo_metadata()
        for r in requests:
            call.maybe_fail(r.response_status)
            for p in r.response_parameters:
                call.sleep_us(p.interval_us)
                yield m["StreamingOutputCallResponse"](payload=payload(p.size))

    def ser(cls):
        return cls.SerializeToString

    def de(cls):
        return cls.FromString

    handlers = {
        "EmptyCall": grpc.unary_unary_rpc_method_handler(
            empty_call, de(m["Empty"]), ser(m["Empty"])
        ),
        "UnaryCall": grpc.unary_unary_rpc_method_handler(
            unary_call, de(m["SimpleRequest"]), ser(m["SimpleResponse"])
        ),
        "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
            streaming_output_call,
            de(m["StreamingOutputCallRequest"]),
            ser(m["StreamingOutputCallResponse"]),
        ),
        "StreamingInputCall": grpc.stream_unary_rpc_method_handler(
            streaming_input_call,
            de(m["StreamingInputCallRequest"]),
            ser(m["StreamingInputCallResponse"]),
        ),
        "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
            full_duplex_call,
            de(m["StreamingOutputCallRequest"]),
            ser(m["StreamingOutputCallResponse"]),
        ),
        # UnimplementedCall is left out on purpose: the server answers UNIMPLEMENTED.
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def exit_at_end_of_stdin():
    for _ in sys.stdin:
        pass
    os._exit(0)


def main():
    descriptor_set, address = sys.argv[1], sys.argv[2]
    gzip = len(sys.argv) > 3 and sys.argv[3] == "gzip"
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
    )
    server.add_generic_rpc_handlers((make_handler(load_messages(descriptor_set)),))
    port = server.add_insecure_port(address)
    server.start()
    emit({"event": "listening", "port": port})
    threading.Thread(target=exit_at_end_of_stdin, daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
