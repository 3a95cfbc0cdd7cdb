"""An unmodified Python gRPC client (Debian's python3-grpcio, no generated
code: messages are written as protobuf bytes by hand) calling TestService
at the address given as the first argument, as net-bridge's forwardPort
serves it. Prints one JSON line with what it got; exits 1 on any failure.
Run with /usr/bin/python3.
"""
import json
import sys

import grpc

SERVICE = "/mqrpc.interop.v1.TestService/"


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, data):
    return bytes([number << 3 | 2]) + varint(len(data)) + data


def payload_response(size):
    # SimpleResponse / StreamingOutputCallResponse: payload (1) { body (1) }
    return field(1, field(1, bytes(size)))


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    grpc.channel_ready_future(channel).result(timeout=20)
    result = {}

    empty = channel.unary_unary(SERVICE + "EmptyCall")
    result["empty"] = empty(b"", timeout=20) == b""

    unary = channel.unary_unary(SERVICE + "UnaryCall")
    request = bytes([0x08]) + varint(314159) + field(2, field(1, bytes(271828)))
    response, call = unary.with_call(
        request, timeout=20, metadata=(("x-grpc-test-echo-initial", "from-python"),)
    )
    result["unary"] = response == payload_response(314159)
    result["echoed"] = dict(call.initial_metadata()).get("x-grpc-test-echo-initial")

    stream = channel.unary_stream(SERVICE + "StreamingOutputCall")
    sizes = [31415, 9, 2653, 58979]
    request = b"".join(field(1, bytes([0x08]) + varint(size)) for size in sizes)
    responses = list(stream(request, timeout=20))
    result["stream"] = responses == [payload_response(size) for size in sizes]

    try:
        unary(bytes([0x1A]) + varint(9) + bytes([0x08, 0x05, 0x12, 0x05]) + b"gone!", timeout=20)
        result["status"] = None
    except grpc.RpcError as error:
        result["status"] = [error.code().value[0], error.details()]

    channel.close()
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - report anything to the test
        print(json.dumps({"error": repr(error)}))
        sys.exit(1)
