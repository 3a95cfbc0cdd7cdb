/**
 * A call the server ends while the caller still streams requests: the
 * caller's request iterable is closed (its `finally` runs, as after a
 * `break`) instead of being drained into a call that discards what it
 * yields, and the caller sees the server's status. Both client and bidi
 * streams, both with the server ending in error and with it ending OK.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, startServer, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

/** Requests without end, counting what was taken and whether the generator was closed. */
function endless() {
  const state = { yielded: 0, closed: false };
  async function* requests() {
    try {
      for (;;) {
        state.yielded++;
        yield { payload: { body: new Uint8Array(64) } };
      }
    } finally {
      state.closed = true;
    }
  }
  return { state, requests: requests() };
}

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("requests after the server ended the call", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      async function transportTo(stopAfter: number, code: Code | undefined) {
        const serverId = uniqueServerId("req-end");
        await startServer(closer, target, {
          serverId,
          routes: (s) =>
            s.service(TestService, {
              ...interopService,
              async streamingInputCall(requests) {
                let n = 0;
                for await (const _ of requests) {
                  if (++n < stopAfter) continue;
                  if (code !== undefined) throw new ConnectError("enough", code);
                  return { aggregatedPayloadSize: n };
                }
                return { aggregatedPayloadSize: n };
              },
              async *fullDuplexCall(requests) {
                let n = 0;
                for await (const _ of requests) {
                  yield {};
                  if (++n < stopAfter) continue;
                  if (code !== undefined) throw new ConnectError("enough", code);
                  return;
                }
              },
            }),
        });
        return createClient(TestService, startTransport(closer, target, { serverId }));
      }

      it("client stream ended with an error: the caller's generator is closed", async () => {
        const client = await transportTo(10, Code.FailedPrecondition);
        const { state, requests } = endless();
        const error = await client.streamingInputCall(requests).then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(error?.code).toBe(Code.FailedPrecondition);
        await expect.poll(() => state.closed).toBe(true);
        const taken = state.yielded;
        await new Promise((resolve) => setImmediate(resolve));
        expect(state.yielded).toBe(taken);
      });

      it("client stream answered OK early: the caller's generator is closed", async () => {
        const client = await transportTo(10, undefined);
        const { state, requests } = endless();
        const response = await client.streamingInputCall(requests);
        expect(response.aggregatedPayloadSize).toBe(10);
        await expect.poll(() => state.closed).toBe(true);
      });

      it("raw stream ended by the server: the caller's generator is closed", async () => {
        const serverId = uniqueServerId("req-end-raw");
        const server = await startServer(closer, target, { serverId });
        server.unknownService(() => ({
          async *handler(requests) {
            let n = 0;
            for await (const _ of requests) {
              if (++n === 3) throw new ConnectError("enough", Code.Aborted);
            }
            yield new Uint8Array(0);
          },
        }));
        const transport = startTransport(closer, target, { serverId });
        const state = { yielded: 0, closed: false };
        async function* requests() {
          try {
            for (;;) {
              state.yielded++;
              yield new Uint8Array(64);
            }
          } finally {
            state.closed = true;
          }
        }
        const error = await (async () => {
          const response = await transport.rawStream({
            service: "acme.Raw",
            method: "Flood",
            message: requests(),
          });
          for await (const _ of response.message);
        })().then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(error?.code).toBe(Code.Aborted);
        await expect.poll(() => state.closed).toBe(true);
        const taken = state.yielded;
        await new Promise((resolve) => setImmediate(resolve));
        expect(state.yielded).toBe(taken);
      });

      it("bidi stream ended by the server: the caller's generator is closed", async () => {
        const client = await transportTo(5, Code.ResourceExhausted);
        const { state, requests } = endless();
        let responses = 0;
        const error = await (async () => {
          for await (const _ of client.fullDuplexCall(requests)) responses++;
        })().then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(error?.code).toBe(Code.ResourceExhausted);
        expect(responses).toBe(5);
        await expect.poll(() => state.closed).toBe(true);
      });
    });
  },
);
