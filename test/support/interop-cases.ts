/**
 * The gRPC interop cases (grpc/doc/interop-test-descriptions.md) as a
 * Connect client runs them against TestService, with vitest assertions:
 * one function per case (some per RPC kind), and {@link interopCases},
 * all of them by their interop name. The server side is
 * interop-service.ts, or any server of the interop spec.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import type {
  StreamingOutputCallRequestSchema,
  TestService,
} from "../gen/mqrpc/interop/v1/test_pb.js";
import { Pushable } from "./pushable.js";

type TestClient = Client<typeof TestService>;
type OutRequest = MessageInitShape<typeof StreamingOutputCallRequestSchema>;

const REQUEST_SIZES = [27182, 8, 1828, 45904];
const RESPONSE_SIZES = [31415, 9, 2653, 58979];
const STATUS_MESSAGE = "test status message";
const SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
/** The custom_metadata headers: the trailer's value is 0xababab as Connect spells binary values. */
const ECHO_HEADERS = {
  "x-grpc-test-echo-initial": "test_initial_metadata_value",
  "x-grpc-test-echo-trailing-bin": "q6ur",
};

const body = (size: number) => ({ body: new Uint8Array(size) });

/** The error `promise` rejects with; fails when it resolves. */
async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("the call succeeded; a failure was expected");
}

/** Every message of `stream`, in order. */
export async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

/** One request message, then the end of the stream. */
function only<T>(message: T): Pushable<T> {
  const requests = new Pushable<T>();
  requests.push(message);
  requests.end();
  return requests;
}

/** empty_unary: an Empty answers an Empty. */
export async function emptyUnary(client: TestClient): Promise<void> {
  const response = await client.emptyCall({});
  expect(response.$typeName).toBe("mqrpc.interop.v1.Empty");
}

/** large_unary: 271,828 bytes in, 314,159 bytes out. */
export async function largeUnary(client: TestClient): Promise<void> {
  const response = await client.unaryCall({ responseSize: 314159, payload: body(271828) });
  expect(response.payload?.body.byteLength).toBe(314159);
}

/** client_streaming: 27182 + 8 + 1828 + 45904 bytes aggregate to 74922. */
export async function clientStreaming(client: TestClient): Promise<void> {
  async function* requests() {
    for (const size of REQUEST_SIZES) yield { payload: body(size) };
  }
  const response = await client.streamingInputCall(requests());
  expect(response.aggregatedPayloadSize).toBe(74922);
}

/** server_streaming: 31415, 9, 2653, 58979 bytes, in order. */
export async function serverStreaming(client: TestClient): Promise<void> {
  const responses = await drain(
    client.streamingOutputCall({ responseParameters: RESPONSE_SIZES.map((size) => ({ size })) }),
  );
  expect(responses.map((r) => r.payload?.body.byteLength)).toEqual(RESPONSE_SIZES);
}

/** ping_pong: four lock-step request/response pairs, then the end of both streams. */
export async function pingPong(client: TestClient): Promise<void> {
  const requests = new Pushable<OutRequest>();
  const responses = client.fullDuplexCall(requests)[Symbol.asyncIterator]();
  for (let i = 0; i < REQUEST_SIZES.length; i++) {
    requests.push({
      responseParameters: [{ size: RESPONSE_SIZES[i] as number }],
      payload: body(REQUEST_SIZES[i] as number),
    });
    const next = await responses.next();
    expect(next.done).toBe(false);
    expect(next.value?.payload?.body.byteLength).toBe(RESPONSE_SIZES[i]);
  }
  requests.end();
  expect((await responses.next()).done).toBe(true);
}

/** empty_stream: a bidi call with no messages either way ends OK. */
export async function emptyStream(client: TestClient): Promise<void> {
  const none = new Pushable<OutRequest>();
  none.end();
  expect(await drain(client.fullDuplexCall(none))).toEqual([]);
}

/**
 * custom_metadata on one RPC kind: the initial header and the -bin
 * trailer come back, with the response asked for. Resolves with the
 * response's header and trailer, for what a test checks beyond the case.
 */
export async function customMetadata(
  client: TestClient,
  kind: "unary" | "bidi",
): Promise<{ header: Headers | undefined; trailer: Headers | undefined }> {
  const seen: { header?: Headers; trailer?: Headers } = {};
  const options = {
    headers: ECHO_HEADERS,
    onHeader: (h: Headers) => {
      seen.header = h;
    },
    onTrailer: (t: Headers) => {
      seen.trailer = t;
    },
  };
  const request = { responseSize: 314159, payload: body(271828) };
  if (kind === "unary") {
    const response = await client.unaryCall(request, options);
    expect(response.payload?.body.byteLength, kind).toBe(314159);
  } else {
    const requests = only<OutRequest>({
      responseParameters: [{ size: 314159 }],
      payload: body(271828),
    });
    const responses = await drain(client.fullDuplexCall(requests, options));
    expect(
      responses.map((r) => r.payload?.body.byteLength),
      kind,
    ).toEqual([314159]);
  }
  expect(seen.header?.get("x-grpc-test-echo-initial"), kind).toBe("test_initial_metadata_value");
  expect(seen.trailer?.get("x-grpc-test-echo-trailing-bin"), kind).toBe("q6ur");
  return { header: seen.header, trailer: seen.trailer };
}

/** status_code_and_message on one RPC kind: UNKNOWN with the message asked for. */
export async function statusCodeAndMessage(
  client: TestClient,
  kind: "unary" | "bidi",
): Promise<void> {
  const status = { code: Code.Unknown, message: STATUS_MESSAGE };
  const error = await failure(
    kind === "unary"
      ? client.unaryCall({ responseStatus: status })
      : drain(client.fullDuplexCall(only<OutRequest>({ responseStatus: status }))),
  );
  expect([error.code, error.rawMessage], kind).toEqual([Code.Unknown, STATUS_MESSAGE]);
}

/** special_status_message: whitespace and Unicode in a status message arrive intact. */
export async function specialStatusMessage(client: TestClient): Promise<void> {
  const error = await failure(
    client.unaryCall({ responseStatus: { code: Code.Unknown, message: SPECIAL_MESSAGE } }),
  );
  expect([error.code, error.rawMessage]).toEqual([Code.Unknown, SPECIAL_MESSAGE]);
}

/** cancel_after_begin: a client stream cancelled before any message ends CANCELED. */
export async function cancelAfterBegin(client: TestClient): Promise<void> {
  const controller = new AbortController();
  const requests = new Pushable<{ payload: { body: Uint8Array } }>();
  const call = client.streamingInputCall(requests, { signal: controller.signal });
  controller.abort();
  expect((await failure(call)).code).toBe(Code.Canceled);
}

/** cancel_after_first_response: a bidi call cancelled after one pair ends CANCELED for the caller. */
export async function cancelAfterFirstResponse(client: TestClient): Promise<void> {
  const controller = new AbortController();
  const requests = new Pushable<OutRequest>();
  const responses = client
    .fullDuplexCall(requests, { signal: controller.signal })
    [Symbol.asyncIterator]();
  requests.push({ responseParameters: [{ size: 31415 }], payload: body(27182) });
  const first = await responses.next();
  expect(first.value?.payload?.body.byteLength).toBe(31415);
  controller.abort();
  expect((await failure(responses.next())).code).toBe(Code.Canceled);
}

/** timeout_on_sleeping_server: a bidi call with a 1 ms deadline whose stream stays open ends DEADLINE_EXCEEDED. */
export async function timeoutOnSleepingServer(client: TestClient): Promise<void> {
  const requests = new Pushable<OutRequest>();
  requests.push({ payload: body(27182) });
  const error = await failure(drain(client.fullDuplexCall(requests, { timeoutMs: 1 })));
  expect(error.code).toBe(Code.DeadlineExceeded);
}

/** The cases by their interop name; custom_metadata and status_code_and_message on unary, then bidi. */
export const interopCases: Record<string, (client: TestClient) => Promise<void>> = {
  empty_unary: emptyUnary,
  large_unary: largeUnary,
  client_streaming: clientStreaming,
  server_streaming: serverStreaming,
  ping_pong: pingPong,
  empty_stream: emptyStream,
  async custom_metadata(client) {
    await customMetadata(client, "unary");
    await customMetadata(client, "bidi");
  },
  async status_code_and_message(client) {
    await statusCodeAndMessage(client, "unary");
    await statusCodeAndMessage(client, "bidi");
  },
  special_status_message: specialStatusMessage,
  cancel_after_begin: cancelAfterBegin,
  cancel_after_first_response: cancelAfterFirstResponse,
  timeout_on_sleeping_server: timeoutOnSleepingServer,
};
