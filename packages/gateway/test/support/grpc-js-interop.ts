/**
 * A standard gRPC client for the ingress tests: @grpc/grpc-js's generic
 * `Client`, no generated gRPC code, with protobuf-es serializers for the
 * interop messages; and the gRPC interop cases run through it, declared
 * once for every path a test puts behind the ingress (a native mqrpc
 * server, the gateway in front of a Python server).
 */
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { expect, it } from "vitest";
import {
  EmptySchema,
  SimpleRequestSchema,
  SimpleResponseSchema,
  StreamingInputCallRequestSchema,
  StreamingInputCallResponseSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
} from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";

export const TEST_SERVICE = "mqrpc.interop.v1.TestService";
export const UNIMPLEMENTED_SERVICE = "mqrpc.interop.v1.UnimplementedService";
export const SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

/** `host:port` of an ingress URL, as grpc-js dials it. */
export function grpcAddress(url: string): string {
  return new URL(url).host;
}

type Serialize<S extends DescMessage> = (message: MessageInitShape<S>) => Buffer;
type Deserialize<S extends DescMessage> = (bytes: Buffer) => MessageShape<S>;

function serialize<S extends DescMessage>(schema: S): Serialize<S> {
  return (message) => Buffer.from(toBinary(schema, create(schema, message)));
}

function deserialize<S extends DescMessage>(schema: S): Deserialize<S> {
  return (bytes) => fromBinary(schema, bytes);
}

/** What a unary or client-streaming call brought back. */
export interface UnaryOutcome<T> {
  readonly message?: T;
  readonly error?: grpc.ServiceError;
  readonly header: grpc.Metadata | undefined;
  readonly status: grpc.StatusObject | undefined;
}

/**
 * A call with one response (unary or client-streaming) that `start` makes,
 * given the callback grpc-js takes: `outcome` resolves once both its
 * response (or error) and its status have come.
 */
function withOutcome<C extends grpc.ClientUnaryCall, T>(
  start: (callback: grpc.requestCallback<T>) => C,
): { call: C; outcome: Promise<UnaryOutcome<T>> } {
  let call!: C;
  const outcome = new Promise<UnaryOutcome<T>>((resolve) => {
    let header: grpc.Metadata | undefined;
    let status: grpc.StatusObject | undefined;
    let result: { message?: T; error?: grpc.ServiceError } | undefined;
    const settle = () => {
      if (result !== undefined && status !== undefined) resolve({ ...result, header, status });
    };
    call = start((error, message) => {
      result = error !== null ? { error } : message !== undefined ? { message } : {};
      settle();
    });
    call.on("metadata", (md) => {
      header = md;
    });
    call.on("status", (s) => {
      status = s;
      settle();
    });
  });
  return { call, outcome };
}

/** Options of one call. */
export interface InteropCallOptions {
  /** Metadata besides `mqrpc-server-id`. */
  readonly metadata?: Record<string, string | Buffer>;
  /** Deadline in ms from now. */
  readonly timeoutMs?: number;
  /** Service name (default TestService). */
  readonly service?: string;
  /** Leave `mqrpc-server-id` out. */
  readonly noServerId?: boolean;
}

/** TestService's methods through a grpc-js generic client, every call to one device. */
export class InteropGrpcClient {
  readonly client: grpc.Client;

  /**
   * @param address `host:port` of the ingress
   * @param serverId the device, sent as `mqrpc-server-id`
   */
  constructor(
    address: string,
    readonly serverId: string,
    options: grpc.ChannelOptions = {},
    credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  ) {
    this.client = new grpc.Client(address, credentials, options);
  }

  close(): void {
    this.client.close();
  }

  metadata(options: InteropCallOptions = {}): grpc.Metadata {
    const md = new grpc.Metadata();
    if (options.noServerId !== true) md.set("mqrpc-server-id", this.serverId);
    for (const [k, v] of Object.entries(options.metadata ?? {})) md.set(k, v);
    return md;
  }

  callOptions(options: InteropCallOptions = {}): grpc.CallOptions {
    return options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
  }

  path(method: string, options: InteropCallOptions = {}): string {
    return `/${options.service ?? TEST_SERVICE}/${method}`;
  }

  emptyCall(
    options: InteropCallOptions = {},
  ): Promise<UnaryOutcome<MessageShape<typeof EmptySchema>>> {
    return this.unary("EmptyCall", EmptySchema, EmptySchema, {}, options);
  }

  unaryCall(
    request: MessageInitShape<typeof SimpleRequestSchema>,
    options: InteropCallOptions = {},
  ): Promise<UnaryOutcome<MessageShape<typeof SimpleResponseSchema>>> {
    return this.unary("UnaryCall", SimpleRequestSchema, SimpleResponseSchema, request, options);
  }

  unimplementedCall(options: InteropCallOptions = {}): Promise<UnaryOutcome<unknown>> {
    return this.unary("UnimplementedCall", EmptySchema, EmptySchema, {}, options);
  }

  unary<I extends DescMessage, O extends DescMessage>(
    method: string,
    input: I,
    output: O,
    request: MessageInitShape<I>,
    options: InteropCallOptions = {},
  ): Promise<UnaryOutcome<MessageShape<O>>> {
    return withOutcome<grpc.ClientUnaryCall, MessageShape<O>>((callback) =>
      this.client.makeUnaryRequest(
        this.path(method, options),
        serialize(input),
        deserialize(output),
        request,
        this.metadata(options),
        this.callOptions(options),
        callback,
      ),
    ).outcome;
  }

  streamingOutputCall(
    request: MessageInitShape<typeof StreamingOutputCallRequestSchema>,
    options: InteropCallOptions = {},
  ): grpc.ClientReadableStream<MessageShape<typeof StreamingOutputCallResponseSchema>> {
    return this.client.makeServerStreamRequest(
      this.path("StreamingOutputCall", options),
      serialize(StreamingOutputCallRequestSchema),
      deserialize(StreamingOutputCallResponseSchema),
      request,
      this.metadata(options),
      this.callOptions(options),
    );
  }

  streamingInputCall(options: InteropCallOptions = {}): {
    call: grpc.ClientWritableStream<MessageInitShape<typeof StreamingInputCallRequestSchema>>;
    outcome: Promise<UnaryOutcome<MessageShape<typeof StreamingInputCallResponseSchema>>>;
  } {
    return withOutcome(
      (callback: grpc.requestCallback<MessageShape<typeof StreamingInputCallResponseSchema>>) =>
        this.client.makeClientStreamRequest(
          this.path("StreamingInputCall", options),
          serialize(StreamingInputCallRequestSchema),
          deserialize(StreamingInputCallResponseSchema),
          this.metadata(options),
          this.callOptions(options),
          callback,
        ),
    );
  }

  fullDuplexCall(
    options: InteropCallOptions = {},
  ): grpc.ClientDuplexStream<
    MessageInitShape<typeof StreamingOutputCallRequestSchema>,
    MessageShape<typeof StreamingOutputCallResponseSchema>
  > {
    return this.client.makeBidiStreamRequest(
      this.path("FullDuplexCall", options),
      serialize(StreamingOutputCallRequestSchema),
      deserialize(StreamingOutputCallResponseSchema),
      this.metadata(options),
      this.callOptions(options),
    );
  }
}

/** How a response stream ended: its messages, headers and status. */
export interface StreamOutcome<T> {
  readonly messages: T[];
  readonly header: grpc.Metadata | undefined;
  readonly status: grpc.StatusObject;
}

/** Reads a grpc-js response stream to its status. */
export function readStream<T>(
  stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>,
): Promise<StreamOutcome<T>> {
  return new Promise((resolve) => {
    const messages: T[] = [];
    let header: grpc.Metadata | undefined;
    stream.on("metadata", (md: grpc.Metadata) => {
      header = md;
    });
    stream.on("data", (m: T) => messages.push(m));
    stream.on("error", () => {
      // The status event carries the outcome.
    });
    stream.on("status", (status: grpc.StatusObject) => resolve({ messages, header, status }));
  });
}

/** The next message of a stream (lock-step reads). */
export function nextMessage<T>(
  stream: grpc.ClientDuplexStream<unknown, T> | grpc.ClientReadableStream<T>,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const onData = (m: T) => {
      stream.off("error", onError);
      resolve(m);
    };
    const onError = (e: Error) => {
      stream.off("data", onData);
      reject(e);
    };
    stream.once("data", onData);
    stream.once("error", onError);
  });
}

const body = (n: number) => ({ body: new Uint8Array(n) });

/** How a device's handler ended. */
export type HandlerEnd = "cancelled" | "finished";

/** One handler call on the device, as a test watches it. */
export interface HandlerWatch {
  /** Resolves when the handler runs. */
  readonly started: Promise<void>;
  /**
   * Resolves when the handler ended: "cancelled" when its call was cancelled
   * or passed its deadline before it returned, "finished" when it returned.
   */
  readonly ended: Promise<HandlerEnd>;
}

/** What the interop cases need of the device side. */
export interface InteropDevice {
  readonly client: InteropGrpcClient;
  /** Watches the device's handler of the next call of `method`; call before starting that call. */
  watchHandler(
    method: "StreamingInputCall" | "StreamingOutputCall" | "FullDuplexCall",
  ): HandlerWatch;
}

/**
 * Declares the gRPC interop cases (the ones the project runs natively) as
 * tests, through a grpc-js client.
 */
export function interopCases(device: () => InteropDevice): void {
  it("empty_unary", async () => {
    const { message, error } = await device().client.emptyCall();
    expect(error).toBeUndefined();
    expect(message?.$typeName).toBe("mqrpc.interop.v1.Empty");
  });

  it("large_unary: 271828 bytes in, 314159 out", async () => {
    const { message, error } = await device().client.unaryCall({
      responseSize: 314159,
      payload: body(271828),
    });
    expect(error).toBeUndefined();
    expect(message?.payload?.body.byteLength).toBe(314159);
  });

  it("client_streaming: 27182 + 8 + 1828 + 45904 bytes aggregate to 74922", async () => {
    const { call, outcome } = device().client.streamingInputCall();
    for (const n of [27182, 8, 1828, 45904]) call.write({ payload: body(n) });
    call.end();
    const { message, error } = await outcome;
    expect(error).toBeUndefined();
    expect(message?.aggregatedPayloadSize).toBe(74922);
  });

  it("server_streaming: 31415, 9, 2653, 58979 bytes, in order", async () => {
    const { messages, status } = await readStream(
      device().client.streamingOutputCall({
        responseParameters: [31415, 9, 2653, 58979].map((size) => ({ size })),
      }),
    );
    expect(status.code).toBe(grpc.status.OK);
    expect(messages.map((m) => m.payload?.body.byteLength)).toEqual([31415, 9, 2653, 58979]);
  });

  it("ping_pong: four lock-step request/response pairs", async () => {
    const call = device().client.fullDuplexCall();
    const done = readStatus(call);
    const sent = [27182, 8, 1828, 45904];
    const expected = [31415, 9, 2653, 58979];
    for (let i = 0; i < 4; i++) {
      const next = nextMessage(call);
      call.write({
        responseParameters: [{ size: expected[i] as number }],
        payload: body(sent[i] as number),
      });
      expect((await next).payload?.body.byteLength).toBe(expected[i]);
    }
    call.end();
    expect((await done).code).toBe(grpc.status.OK);
  });

  it("empty_stream: a bidi call with no messages either way ends OK", async () => {
    const call = device().client.fullDuplexCall();
    call.end();
    const { messages, status } = await readStream(call);
    expect(status.code).toBe(grpc.status.OK);
    expect(messages).toEqual([]);
  });

  it("custom_metadata: text and -bin metadata echoed as header and trailer (unary and bidi)", async () => {
    const metadata = {
      "x-grpc-test-echo-initial": "test_initial_metadata_value",
      "x-grpc-test-echo-trailing-bin": Buffer.from([0xab, 0xab, 0xab]),
    };
    const unary = await device().client.unaryCall(
      { responseSize: 314159, payload: body(271828) },
      { metadata },
    );
    expect(unary.error).toBeUndefined();
    expect(unary.header?.get("x-grpc-test-echo-initial")).toEqual(["test_initial_metadata_value"]);
    expect(unary.status?.metadata.get("x-grpc-test-echo-trailing-bin")).toEqual([
      Buffer.from([0xab, 0xab, 0xab]),
    ]);

    const call = device().client.fullDuplexCall({ metadata });
    call.write({ responseParameters: [{ size: 314159 }], payload: body(271828) });
    call.end();
    const { messages, header, status } = await readStream(call);
    expect(status.code).toBe(grpc.status.OK);
    expect(messages.map((m) => m.payload?.body.byteLength)).toEqual([314159]);
    expect(header?.get("x-grpc-test-echo-initial")).toEqual(["test_initial_metadata_value"]);
    expect(status.metadata.get("x-grpc-test-echo-trailing-bin")).toEqual([
      Buffer.from([0xab, 0xab, 0xab]),
    ]);
  });

  it("status_code_and_message: UNKNOWN with its message, unary and bidi", async () => {
    const responseStatus = { code: 2, message: "test status message" };
    const unary = await device().client.unaryCall({ responseStatus });
    expect(unary.error?.code).toBe(grpc.status.UNKNOWN);
    expect(unary.error?.details).toBe("test status message");

    const call = device().client.fullDuplexCall();
    call.write({ responseStatus });
    call.end();
    const { status } = await readStream(call);
    expect(status.code).toBe(grpc.status.UNKNOWN);
    expect(status.details).toBe("test status message");
  });

  it("special_status_message: whitespace and Unicode arrive intact", async () => {
    const { error } = await device().client.unaryCall({
      responseStatus: { code: 2, message: SPECIAL_MESSAGE },
    });
    expect(error?.code).toBe(grpc.status.UNKNOWN);
    expect(error?.details).toBe(SPECIAL_MESSAGE);
  });

  it("unimplemented_method: UNIMPLEMENTED", async () => {
    const { error } = await device().client.unimplementedCall();
    expect(error?.code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it("unimplemented_service: UNIMPLEMENTED", async () => {
    const { error } = await device().client.unimplementedCall({ service: UNIMPLEMENTED_SERVICE });
    expect(error?.code).toBe(grpc.status.UNIMPLEMENTED);
  });

  // grpc-js cancels a call by ending its request stream and then resetting
  // the HTTP/2 stream (RST_STREAM CANCEL), so a device handler that reads
  // requests may see their end and return before the reset reaches it, as
  // it would behind any gRPC server: these cases check the client's status
  // and that the device's call ended; the server-streaming ones below, where
  // no request end can come first, check that the reset cancels it.
  it("cancel_after_begin: CANCELLED for the client; the device's call ends", async () => {
    const handler = device().watchHandler("StreamingInputCall");
    const { call, outcome } = device().client.streamingInputCall();
    await handler.started;
    call.cancel();
    expect((await outcome).error?.code).toBe(grpc.status.CANCELLED);
    expect(["cancelled", "finished"]).toContain(await handler.ended);
  });

  it("cancel_after_first_response: CANCELLED after one pair; the device's call ends", async () => {
    const handler = device().watchHandler("FullDuplexCall");
    const call = device().client.fullDuplexCall();
    const done = readStatus(call);
    const first = nextMessage(call);
    call.write({ responseParameters: [{ size: 31415 }], payload: body(27182) });
    expect((await first).payload?.body.byteLength).toBe(31415);
    call.cancel();
    expect((await done).code).toBe(grpc.status.CANCELLED);
    expect(["cancelled", "finished"]).toContain(await handler.ended);
  });

  it("timeout_on_sleeping_server: DEADLINE_EXCEEDED; the device's call ends", async () => {
    const handler = device().watchHandler("FullDuplexCall");
    const call = device().client.fullDuplexCall({ timeoutMs: 300 });
    const done = readStatus(call);
    // One request that asks for nothing: the handler then waits for the next.
    call.write({ payload: body(27182) });
    expect((await done).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(["cancelled", "finished"]).toContain(await handler.ended);
  });

  it("a client's RST_STREAM cancels the device's handler mid-stream", async () => {
    const handler = device().watchHandler("StreamingOutputCall");
    const call = device().client.streamingOutputCall({
      responseParameters: [{ size: 10 }, { size: 10, intervalUs: 60_000_000 }],
    });
    const done = readStatus(call);
    await nextMessage(call);
    call.cancel();
    expect((await done).code).toBe(grpc.status.CANCELLED);
    expect(await handler.ended).toBe("cancelled");
  });

  it("the client's deadline ends the device's sleeping handler", async () => {
    const handler = device().watchHandler("StreamingOutputCall");
    const call = device().client.streamingOutputCall(
      { responseParameters: [{ size: 10, intervalUs: 60_000_000 }] },
      { timeoutMs: 300 },
    );
    const { status } = await readStream(call);
    expect(status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(await handler.ended).toBe("cancelled");
  });
}

/** The status of a call whose messages the test reads by itself. */
export function readStatus(
  call: Pick<grpc.ClientReadableStream<unknown>, "on">,
): Promise<grpc.StatusObject> {
  return new Promise((resolve) => {
    call.on("error", () => {
      // Reported by the status event.
    });
    call.on("status", resolve);
  });
}
