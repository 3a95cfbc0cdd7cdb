/**
 * A plain @grpc/grpc-js server with @grpc/reflection, in its own process: an
 * upstream that is not ours. Started by upstream-process.ts as
 * `node --import tsx grpc-js-upstream.ts <config JSON>`.
 *
 * It serves mqrpc.interop.v1.TestService as test/support/interop-service.ts
 * does, with identity serializers and protobuf-es, plus:
 * - a failing status carries `grpc-status-details-bin`: a google.rpc.Status
 *   whose one detail is the requested EchoStatus, and a trailer
 *   `x-upstream-failed: yes`;
 * - UnaryCall answers with the request's unknown fields copied into the
 *   response (unknown fields survive only if nobody re-encodes);
 * - StreamingOutputCall honours backpressure (awaits `drain`) and reports
 *   every 500 messages its stream took ({"event":"progress","written":N}).
 * UnimplementedService.UnimplementedCall answers Empty when that service is
 * configured (the gateway learns a new service when it is), and
 * mqrpc.test.v1.FileLevelService.Ticks streams Tick 1..count (backpressure
 * honoured; the proto's mqrpc options ask for batched streams).
 *
 * Stdout: JSON lines, {"event":"listening","port":N} once serving, then
 * {"event":"started","method":M} and {"event":"done","method":M,"cancelled":bool}
 * as calls start and end. Exits when
 * stdin reaches its end (the parent is gone).
 */
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { ReflectionV1AlphaImplementation } from "@grpc/reflection/build/src/implementations/reflection-v1alpha.js";
import {
  type EchoStatus,
  EchoStatusSchema,
  EmptySchema,
  SimpleRequestSchema,
  SimpleResponseSchema,
  StreamingInputCallRequestSchema,
  StreamingInputCallResponseSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
} from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { TickRequestSchema, TickSchema } from "../../../../test/gen/mqrpc/test/v1/settings_pb.js";

/** The one argument, JSON-encoded. */
export interface GrpcJsUpstreamConfig {
  /** `127.0.0.1:0` for a free port, `127.0.0.1:PORT`, or `unix:/path`. */
  readonly listen: string;
  /** Short names of the services to serve (mqrpc.interop.v1's two, mqrpc.test.v1.FileLevelService). */
  readonly services: readonly ("TestService" | "UnimplementedService" | "FileLevelService")[];
  /** Which reflection versions to serve (default both). */
  readonly reflection?: "both" | "v1alpha" | "none";
}

const PACKAGE = "mqrpc.interop.v1";
const FULL_NAMES = {
  TestService: `${PACKAGE}.TestService`,
  UnimplementedService: `${PACKAGE}.UnimplementedService`,
  FileLevelService: "mqrpc.test.v1.FileLevelService",
} as const;
const PROTO_ROOT = fileURLToPath(new URL("../../../../proto", import.meta.url));
const ECHO_INITIAL = "x-grpc-test-echo-initial";
const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const identity = (b: Buffer) => b;
const toBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

function method(path: string, requestStream: boolean, responseStream: boolean) {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

/** A google.rpc.Status with the EchoStatus as its one detail. */
function statusDetails(status: EchoStatus): Buffer {
  const any = new BinaryWriter()
    .tag(1, 2)
    .string(`type.googleapis.com/${EchoStatusSchema.typeName}`)
    .tag(2, 2)
    .bytes(toBinary(EchoStatusSchema, status))
    .finish();
  const bytes = new BinaryWriter()
    .tag(1, 0)
    .int32(status.code)
    .tag(2, 2)
    .string(status.message)
    .tag(3, 2)
    .bytes(any)
    .finish();
  return toBuffer(bytes);
}

function failure(status: EchoStatus): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", statusDetails(status));
  metadata.set("x-upstream-failed", "yes");
  return { code: status.code, details: status.message, metadata };
}

/** What every kind of grpc-js server call has. */
interface ServerCall {
  readonly metadata: grpc.Metadata;
  sendMetadata(metadata: grpc.Metadata): void;
  on(event: string, listener: () => void): unknown;
}

/** Echoes the interop metadata and reports the call's start and end. */
function begin(call: ServerCall, name: string) {
  emit({ event: "started", method: name });
  const request = call.metadata;
  const initial = request.get(ECHO_INITIAL);
  if (initial.length > 0) {
    const header = new grpc.Metadata();
    header.set(ECHO_INITIAL, initial[0] as string);
    call.sendMetadata(header);
  }
  const trailer = new grpc.Metadata();
  const trailing = request.get(ECHO_TRAILING)[0];
  if (trailing !== undefined) trailer.set(ECHO_TRAILING, trailing);
  let cancelled = false;
  let reported = false;
  const report = () => {
    if (reported) return;
    reported = true;
    emit({ event: "done", method: name, cancelled });
  };
  call.on("cancelled", () => {
    cancelled = true;
    report();
  });
  call.on("close", () => setImmediate(report));
  call.on("finish", () => setImmediate(report));
  return { trailer, cancelled: () => cancelled };
}

/** Writes a response, waiting for `drain` when the stream's buffer is full. */
async function write(call: grpc.ServerWritableStream<Buffer, Buffer>, bytes: Uint8Array) {
  if (call.write(toBuffer(bytes))) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("cancelled", done);
      resolve();
    };
    call.on("drain", done);
    call.on("cancelled", done);
  });
}

function fileLevelService(): grpc.UntypedServiceImplementation {
  return {
    async Ticks(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      const { trailer, cancelled } = begin(call, "Ticks");
      const { count } = fromBinary(TickRequestSchema, call.request);
      for (let n = 1; n <= count && !cancelled(); n++) {
        await write(call, toBinary(TickSchema, create(TickSchema, { n })));
      }
      if (!cancelled()) call.end(trailer);
    },
  };
}

function testService(): grpc.UntypedServiceImplementation {
  return {
    EmptyCall(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      const { trailer } = begin(call, "EmptyCall");
      callback(null, toBuffer(toBinary(EmptySchema, create(EmptySchema))), trailer);
    },
    UnaryCall(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      const { trailer } = begin(call, "UnaryCall");
      const request = fromBinary(SimpleRequestSchema, call.request);
      const status = request.responseStatus;
      if (status !== undefined && status.code !== 0) {
        callback(failure(status));
        return;
      }
      const response = create(SimpleResponseSchema, {
        payload: { body: new Uint8Array(request.responseSize) },
      });
      if (request.$unknown !== undefined) response.$unknown = request.$unknown;
      callback(null, toBuffer(toBinary(SimpleResponseSchema, response)), trailer);
    },
    async StreamingOutputCall(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      const { trailer, cancelled } = begin(call, "StreamingOutputCall");
      const request = fromBinary(StreamingOutputCallRequestSchema, call.request);
      // Encoded once per size: the upstream must outpace any consumer.
      const encoded = new Map<number, Uint8Array>();
      let written = 0;
      for (const p of request.responseParameters) {
        if (cancelled()) return;
        if (p.intervalUs > 0) await new Promise((r) => setTimeout(r, p.intervalUs / 1000));
        let bytes = encoded.get(p.size);
        if (bytes === undefined) {
          const response = create(StreamingOutputCallResponseSchema, {
            payload: { body: new Uint8Array(p.size) },
          });
          bytes = toBinary(StreamingOutputCallResponseSchema, response);
          encoded.set(p.size, bytes);
        }
        await write(call, bytes);
        written++;
        if (written % 500 === 0)
          emit({ event: "progress", method: "StreamingOutputCall", written });
      }
      const status = request.responseStatus;
      if (status !== undefined && status.code !== 0) {
        call.emit("error", failure(status));
        return;
      }
      call.end(trailer);
    },
    StreamingInputCall(
      call: grpc.ServerReadableStream<Buffer, Buffer>,
      callback: grpc.sendUnaryData<Buffer>,
    ) {
      const { trailer } = begin(call, "StreamingInputCall");
      let size = 0;
      call.on("data", (bytes: Buffer) => {
        size += fromBinary(StreamingInputCallRequestSchema, bytes).payload?.body.byteLength ?? 0;
      });
      call.on("end", () => {
        const response = create(StreamingInputCallResponseSchema, { aggregatedPayloadSize: size });
        callback(null, toBuffer(toBinary(StreamingInputCallResponseSchema, response)), trailer);
      });
    },
    FullDuplexCall(call: grpc.ServerDuplexStream<Buffer, Buffer>) {
      const { trailer } = begin(call, "FullDuplexCall");
      call.on("data", (bytes: Buffer) => {
        const request = fromBinary(StreamingOutputCallRequestSchema, bytes);
        const status = request.responseStatus;
        if (status !== undefined && status.code !== 0) {
          call.emit("error", failure(status));
          return;
        }
        for (const p of request.responseParameters) {
          const response = create(StreamingOutputCallResponseSchema, {
            payload: { body: new Uint8Array(p.size) },
          });
          call.write(toBuffer(toBinary(StreamingOutputCallResponseSchema, response)));
        }
      });
      call.on("end", () => call.end(trailer));
    },
  };
}

const definitions = {
  TestService: {
    EmptyCall: method(`/${PACKAGE}.TestService/EmptyCall`, false, false),
    UnaryCall: method(`/${PACKAGE}.TestService/UnaryCall`, false, false),
    StreamingOutputCall: method(`/${PACKAGE}.TestService/StreamingOutputCall`, false, true),
    StreamingInputCall: method(`/${PACKAGE}.TestService/StreamingInputCall`, true, false),
    FullDuplexCall: method(`/${PACKAGE}.TestService/FullDuplexCall`, true, true),
  },
  UnimplementedService: {
    UnimplementedCall: method(`/${PACKAGE}.UnimplementedService/UnimplementedCall`, false, false),
  },
  FileLevelService: {
    Ticks: method(`/${FULL_NAMES.FileLevelService}/Ticks`, false, true),
  },
};

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as GrpcJsUpstreamConfig;
  const server = new grpc.Server();
  for (const name of config.services) {
    if (name === "TestService") server.addService(definitions.TestService, testService());
    else if (name === "FileLevelService") {
      server.addService(definitions.FileLevelService, fileLevelService());
    } else {
      server.addService(definitions.UnimplementedService, {
        UnimplementedCall(
          call: grpc.ServerUnaryCall<Buffer, Buffer>,
          callback: grpc.sendUnaryData<Buffer>,
        ) {
          begin(call, "UnimplementedCall");
          callback(null, Buffer.alloc(0));
        },
      });
    }
  }
  const reflection = config.reflection ?? "both";
  if (reflection !== "none") {
    const pkg = protoLoader.loadSync(
      ["mqrpc/interop/v1/test.proto", "mqrpc/test/v1/settings.proto"],
      {
        includeDirs: [PROTO_ROOT],
        keepCase: true,
      },
    );
    const options = { services: config.services.map((s) => FULL_NAMES[s]) };
    if (reflection === "both") new ReflectionService(pkg, options).addToServer(server);
    else new ReflectionV1AlphaImplementation(pkg, options).addToServer(server);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(config.listen, grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  emit({ event: "listening", port });
}

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
