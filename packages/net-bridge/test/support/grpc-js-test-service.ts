/**
 * TestService (test/gen/mqrpc/interop/v1) as an ordinary @grpc/grpc-js
 * service, with the behaviour the gRPC interop cases expect (the same as
 * test/support/interop-service.ts for Connect): echo of the
 * `x-grpc-test-echo-initial` header and `x-grpc-test-echo-trailing-bin`
 * trailer, the requested payload sizes and the requested status. The
 * service definition is made from the protobuf-es descriptors, so grpc-js
 * serializes with protobuf-es and needs no proto loader.
 */
import {
  create,
  type DescService,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type EchoStatus,
  type SimpleRequest,
  type StreamingInputCallRequest,
  type StreamingOutputCallRequest,
  TestService,
} from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";

const ECHO_INITIAL = "x-grpc-test-echo-initial";
const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";

/** A grpc-js service definition for a protobuf-es service descriptor. */
export function grpcDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream:
        method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream:
        method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: (v) =>
        Buffer.from(toBinary(method.input, create(method.input, v as MessageInitShape<never>))),
      requestDeserialize: (b) => fromBinary(method.input, b),
      responseSerialize: (v) =>
        Buffer.from(toBinary(method.output, create(method.output, v as MessageInitShape<never>))),
      responseDeserialize: (b) => fromBinary(method.output, b),
      originalName: method.localName,
    };
  }
  return definition as grpc.ServiceDefinition;
}

function initialEcho(metadata: grpc.Metadata): grpc.Metadata | undefined {
  const value = metadata.get(ECHO_INITIAL)[0];
  if (value === undefined) return undefined;
  const out = new grpc.Metadata();
  out.set(ECHO_INITIAL, value);
  return out;
}

function trailingEcho(metadata: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  const value = metadata.get(ECHO_TRAILING)[0];
  if (value !== undefined) out.set(ECHO_TRAILING, value);
  return out;
}

function statusError(status: EchoStatus | undefined, trailer: grpc.Metadata) {
  if (status === undefined || status.code === 0) return undefined;
  return { code: status.code, details: status.message, metadata: trailer };
}

function payload(size: number) {
  return { body: new Uint8Array(size) };
}

type Call = {
  metadata: grpc.Metadata;
  sendMetadata(m: grpc.Metadata): void;
};

function echoInitial(call: Call): void {
  const initial = initialEcho(call.metadata);
  if (initial !== undefined) call.sendMetadata(initial);
}

/** The interop implementation; UnimplementedCall is left out on purpose. */
export const grpcJsTestService: grpc.UntypedServiceImplementation = {
  emptyCall(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
    echoInitial(call);
    callback(null, {}, trailingEcho(call.metadata));
  },
  unaryCall(
    call: grpc.ServerUnaryCall<SimpleRequest, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ) {
    echoInitial(call);
    const trailer = trailingEcho(call.metadata);
    const error = statusError(call.request.responseStatus, trailer);
    if (error !== undefined) callback(error);
    else callback(null, { payload: payload(call.request.responseSize) }, trailer);
  },
  async streamingOutputCall(call: grpc.ServerWritableStream<StreamingOutputCallRequest, unknown>) {
    echoInitial(call);
    for (const p of call.request.responseParameters) {
      if (p.intervalUs > 0) await new Promise((r) => setTimeout(r, p.intervalUs / 1000));
      if (call.cancelled) return;
      call.write({ payload: payload(p.size) });
    }
    const trailer = trailingEcho(call.metadata);
    const error = statusError(call.request.responseStatus, trailer);
    if (error !== undefined) call.emit("error", error);
    else call.end(trailer);
  },
  streamingInputCall(
    call: grpc.ServerReadableStream<StreamingInputCallRequest, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ) {
    echoInitial(call);
    let size = 0;
    call.on("data", (r: StreamingInputCallRequest) => {
      size += r.payload?.body.byteLength ?? 0;
    });
    call.on("end", () =>
      callback(null, { aggregatedPayloadSize: size }, trailingEcho(call.metadata)),
    );
  },
  fullDuplexCall(call: grpc.ServerDuplexStream<StreamingOutputCallRequest, unknown>) {
    echoInitial(call);
    const trailer = trailingEcho(call.metadata);
    let failed = false;
    call.on("data", (r: StreamingOutputCallRequest) => {
      if (failed) return;
      const error = statusError(r.responseStatus, trailer);
      if (error !== undefined) {
        failed = true;
        call.emit("error", error);
        return;
      }
      for (const p of r.responseParameters) call.write({ payload: payload(p.size) });
    });
    call.on("end", () => {
      if (!failed) call.end(trailer);
    });
  },
};

/** A grpc-js server with TestService, taking connections from an injector (no TCP port). */
export function grpcJsTestServer(): {
  server: grpc.Server;
  injector: grpc.ConnectionInjector;
  close(): void;
} {
  const server = new grpc.Server();
  server.addService(grpcDefinition(TestService), grpcJsTestService);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  return {
    server,
    injector,
    close() {
      injector.destroy();
      server.forceShutdown();
    },
  };
}
