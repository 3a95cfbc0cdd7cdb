/**
 * `createMqttClient`: Connect's `createClient`, except that leaving a
 * response stream early (`break` out of `for await`, or an exception in its
 * body) cancels the call. Connect's promise client gives the caller an
 * iterator without `return()` (its streams end only through a signal), so
 * a caller that stops reading would leave the server's handler running and
 * holding a slot until the transport closes. PROTOCOL.md section 13: the
 * client sends Cancel when it stops reading early.
 */
import type { DescService } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";

type StreamFn = (input: unknown, options?: CallOptions) => AsyncIterable<unknown>;

/** Why a stream the caller left ends on the server. */
const STOPPED_READING = "the caller stopped reading the response stream";

/**
 * Creates a client for `service` on `transport`, as `createClient` from
 * `@connectrpc/connect` does, with one difference: for server-streaming and
 * bidi methods, leaving the response stream early (`break`, `return` or an
 * exception inside `for await`) cancels the call with CANCELED, so the
 * server stops the handler at once. The generated `create<Service>Client`
 * functions use it. With plain `createClient`, pass an `AbortSignal` and
 * abort it when you stop reading.
 */
export function createMqttClient<T extends DescService>(
  service: T,
  transport: Transport,
): Client<T> {
  const client = createClient(service, transport) as Record<string, unknown>;
  for (const method of service.methods) {
    if (method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming") {
      client[method.localName] = cancelOnLeave(client[method.localName] as StreamFn);
    }
  }
  return client as Client<T>;
}

function cancelOnLeave(call: StreamFn): StreamFn {
  return (input, options) => {
    const leave = new AbortController();
    const signal =
      options?.signal !== undefined
        ? AbortSignal.any([options.signal, leave.signal])
        : leave.signal;
    const responses = call(input, { ...options, signal });
    return {
      [Symbol.asyncIterator](): AsyncIterator<unknown> {
        const it = responses[Symbol.asyncIterator]();
        let over = false;
        return {
          next: async () => {
            const result = await it.next();
            if (result.done === true) over = true;
            return result;
          },
          return: (value?: unknown) => {
            if (!over) {
              over = true;
              leave.abort(new ConnectError(STOPPED_READING, Code.Canceled));
            }
            return Promise.resolve({ done: true, value });
          },
        };
      },
    };
  };
}
