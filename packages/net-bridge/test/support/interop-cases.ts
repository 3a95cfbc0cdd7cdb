/**
 * The gRPC interop cases (grpc/doc/interop-test-descriptions.md) as a
 * Connect client runs them against TestService, with vitest assertions.
 */
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import type { TestService } from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";

type TestClient = Client<typeof TestService>;

/**
 * Request messages the case pushes one by one (lock-step ping-pong, or a
 * stream that stays open); a full AsyncIterator, `throw` included, as
 * Connect's streaming calls want.
 */
class Requests<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | undefined;
  private ended = false;

  push(item: T): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting !== undefined) waiting({ done: false, value: item });
    else this.items.push(item);
  }

  end(): void {
    this.ended = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.({ done: true, value: undefined });
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ done: false, value: item });
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.end();
    return Promise.resolve({ done: true, value: undefined });
  }

  throw(e?: unknown): Promise<IteratorResult<T>> {
    this.end();
    return Promise.reject(e);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

const REQUEST_SIZES = [27182, 8, 1828, 45904];
const RESPONSE_SIZES = [31415, 9, 2653, 58979];
const SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("the call succeeded; a failure was expected");
}

async function drain(stream: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

/** The cases by their interop name. */
export const interopCases: Record<string, (client: TestClient) => Promise<void>> = {
  async empty_unary(client) {
    const response = await client.emptyCall({});
    expect(response.$typeName).toBe("mqrpc.interop.v1.Empty");
  },

  async large_unary(client) {
    const response = await client.unaryCall({
      responseSize: 314159,
      payload: { body: new Uint8Array(271828) },
    });
    expect(response.payload?.body.byteLength).toBe(314159);
  },

  async client_streaming(client) {
    async function* requests() {
      for (const size of REQUEST_SIZES) yield { payload: { body: new Uint8Array(size) } };
    }
    const response = await client.streamingInputCall(requests());
    expect(response.aggregatedPayloadSize).toBe(74922);
  },

  async server_streaming(client) {
    const sizes: number[] = [];
    for await (const r of client.streamingOutputCall({
      responseParameters: RESPONSE_SIZES.map((size) => ({ size })),
    })) {
      sizes.push(r.payload?.body.byteLength ?? -1);
    }
    expect(sizes).toEqual(RESPONSE_SIZES);
  },

  async ping_pong(client) {
    const requests = new Requests<{
      responseParameters: { size: number }[];
      payload: { body: Uint8Array };
    }>();
    const responses = client.fullDuplexCall(requests)[Symbol.asyncIterator]();
    for (let i = 0; i < REQUEST_SIZES.length; i++) {
      requests.push({
        responseParameters: [{ size: RESPONSE_SIZES[i] as number }],
        payload: { body: new Uint8Array(REQUEST_SIZES[i] as number) },
      });
      const next = await responses.next();
      expect(next.done).toBe(false);
      expect(next.value?.payload?.body.byteLength).toBe(RESPONSE_SIZES[i]);
    }
    requests.end();
    expect((await responses.next()).done).toBe(true);
  },

  async empty_stream(client) {
    const none = new Requests<{ responseParameters: { size: number }[] }>();
    none.end();
    expect(await drain(client.fullDuplexCall(none))).toEqual([]);
  },

  async custom_metadata(client) {
    const headers = {
      "x-grpc-test-echo-initial": "test_initial_metadata_value",
      "x-grpc-test-echo-trailing-bin": "q6ur", // 0xababab, base64 as Connect spells binary values
    };
    for (const kind of ["unary", "bidi"] as const) {
      const seen: { header?: Headers; trailer?: Headers } = {};
      const options = {
        headers,
        onHeader: (h: Headers) => {
          seen.header = h;
        },
        onTrailer: (t: Headers) => {
          seen.trailer = t;
        },
      };
      if (kind === "unary") {
        await client.unaryCall(
          { responseSize: 314159, payload: { body: new Uint8Array(271828) } },
          options,
        );
      } else {
        async function* one() {
          yield {
            responseParameters: [{ size: 314159 }],
            payload: { body: new Uint8Array(271828) },
          };
        }
        expect(await drain(client.fullDuplexCall(one(), options))).toHaveLength(1);
      }
      expect(seen.header?.get("x-grpc-test-echo-initial"), kind).toBe(
        "test_initial_metadata_value",
      );
      expect(seen.trailer?.get("x-grpc-test-echo-trailing-bin"), kind).toBe("q6ur");
    }
  },

  async status_code_and_message(client) {
    const status = { code: 2, message: "test status message" };
    const unary = await failure(client.unaryCall({ responseStatus: status }));
    expect([unary.code, unary.rawMessage]).toEqual([Code.Unknown, "test status message"]);
    async function* one() {
      yield { responseStatus: status };
    }
    const stream = await failure(drain(client.fullDuplexCall(one())));
    expect([stream.code, stream.rawMessage]).toEqual([Code.Unknown, "test status message"]);
  },

  async special_status_message(client) {
    const error = await failure(
      client.unaryCall({ responseStatus: { code: 2, message: SPECIAL_MESSAGE } }),
    );
    expect([error.code, error.rawMessage]).toEqual([Code.Unknown, SPECIAL_MESSAGE]);
  },

  async cancel_after_begin(client) {
    const controller = new AbortController();
    const requests = new Requests<{ payload: { body: Uint8Array } }>();
    const call = client.streamingInputCall(requests, { signal: controller.signal });
    controller.abort();
    expect((await failure(call)).code).toBe(Code.Canceled);
  },

  async cancel_after_first_response(client) {
    const controller = new AbortController();
    const requests = new Requests<{
      responseParameters: { size: number }[];
      payload: { body: Uint8Array };
    }>();
    const responses = client
      .fullDuplexCall(requests, { signal: controller.signal })
      [Symbol.asyncIterator]();
    requests.push({
      responseParameters: [{ size: 31415 }],
      payload: { body: new Uint8Array(27182) },
    });
    const first = await responses.next();
    expect(first.value?.payload?.body.byteLength).toBe(31415);
    controller.abort();
    expect((await failure(responses.next())).code).toBe(Code.Canceled);
  },

  async timeout_on_sleeping_server(client) {
    const requests = new Requests<{ payload: { body: Uint8Array } }>();
    requests.push({ payload: { body: new Uint8Array(27182) } });
    const error = await failure(drain(client.fullDuplexCall(requests, { timeoutMs: 1 })));
    expect(error.code).toBe(Code.DeadlineExceeded);
  },
};
