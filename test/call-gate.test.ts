/**
 * A caller keeps at most the calls a server announces it may have there
 * (Presence `max_calls_per_caller`, docs/PROTOCOL.md 17.1) and holds the
 * rest itself, in order, bounded by their deadlines: many concurrent calls
 * of one caller complete, as over HTTP/2 with MAX_CONCURRENT_STREAMS,
 * rather than be refused with RESOURCE_EXHAUSTED once the server's slots
 * and queue are full. Before, 1,500 concurrent calls to a server with the
 * default limits got about 350 refusals.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { MqttServer, MqttServerOptions } from "@mqrpc/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

/** A server whose unary handler counts the calls it runs at once and waits for `release`. */
async function countingServer(
  closer: Closer,
  target: Parameters<typeof startServer>[1],
  options: Partial<MqttServerOptions> = {},
) {
  const serverId = uniqueServerId("gate");
  const counts = { running: 0, most: 0, started: 0 };
  let release: Promise<void> = Promise.resolve();
  const server: MqttServer = await startServer(closer, target, { serverId, ...options });
  server.service(TestService, {
    async unaryCall(_req, ctx) {
      counts.started++;
      counts.running++;
      counts.most = Math.max(counts.most, counts.running);
      try {
        await Promise.race([
          release,
          new Promise((_, reject) => ctx.signal.addEventListener("abort", reject)),
        ]);
        // A turn of the event loop, so that calls overlap.
        await new Promise((resolve) => setImmediate(resolve));
      } finally {
        counts.running--;
      }
      return {};
    },
  });
  await server.announced();
  return {
    server,
    serverId,
    counts,
    hold(): () => void {
      const gate = deferred();
      release = gate.promise;
      return gate.resolve;
    },
  };
}

forEachBroker((target) => {
  describe("calls beyond what a server takes from one caller", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("1,500 concurrent calls with the default limits all complete", async () => {
      const { serverId, counts } = await countingServer(closer, target);
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const outcomes = await Promise.all(
        Array.from({ length: 1500 }, () =>
          client.unaryCall({}, { timeoutMs: 60_000 }).then(
            () => "OK",
            (e: unknown) => Code[ConnectError.from(e).code],
          ),
        ),
      );
      expect(outcomes.filter((o) => o !== "OK")).toEqual([]);
      // 900 slots and 250 places to wait for one caller alone.
      expect(counts.most).toBeLessThanOrEqual(900);
    });

    it("wait in the caller, never more at the server than it announces, in two transports of one connection", async () => {
      const { serverId, counts, hold } = await countingServer(closer, target, {
        maxCallsPerClient: 4,
        maxQueuedCalls: 0,
      });
      const release = hold();
      const clients = [0, 1].map(() =>
        createClient(TestService, startTransport(closer, target, { serverId })),
      );
      const calls = clients.flatMap((client) =>
        Array.from({ length: 20 }, () => client.unaryCall({}, { timeoutMs: 60_000 })),
      );
      // The first four run and hold; the other 36 wait in the caller.
      await expect.poll(() => counts.started, { timeout: 10_000 }).toBe(4);
      release();
      await Promise.all(calls);
      expect(counts).toMatchObject({ started: 40, most: 4 });
    });

    it("a call waiting for its turn ends at its deadline, or when cancelled, without reaching the server", async () => {
      const { serverId, counts, hold } = await countingServer(closer, target, {
        maxCallsPerClient: 1,
        maxQueuedCalls: 0,
      });
      const release = hold();
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const first = client.unaryCall({}, { timeoutMs: 60_000 });
      await expect.poll(() => counts.started, { timeout: 10_000 }).toBe(1);
      const late = expect(client.unaryCall({}, { timeoutMs: 300 })).rejects.toMatchObject({
        code: Code.DeadlineExceeded,
      });
      const aborter = new AbortController();
      const cancelled = expect(
        client.unaryCall({}, { signal: aborter.signal }),
      ).rejects.toMatchObject({ code: Code.Canceled });
      const next = client.unaryCall({}, { timeoutMs: 60_000 });
      aborter.abort();
      await late;
      await cancelled;
      expect(counts.started).toBe(1);
      release();
      await first;
      await next;
      expect(counts).toMatchObject({ started: 2, most: 1 });
    });
    it("a raw call whose request stream fails or is empty gives its place back", async () => {
      const { serverId } = await countingServer(closer, target, {
        maxCallsPerClient: 1,
        maxQueuedCalls: 0,
      });
      const transport = startTransport(closer, target, { serverId });
      const client = createClient(TestService, transport);
      const requests = [
        (async function* () {})(),
        {
          [Symbol.asyncIterator]: () => ({
            next: () => Promise.reject(new Error("the request stream broke")),
          }),
        },
      ];
      for (const message of requests) {
        const failed = await transport
          .rawStream({
            service: TestService.typeName,
            method: "UnaryCall",
            kind: "unary",
            message,
            timeoutMs: 10_000,
          })
          .then(async (response) => {
            for await (const _ of response.message) {
              // a unary call without a request has no response
            }
            return undefined;
          })
          .catch((e: unknown) => ConnectError.from(e));
        expect(failed).toBeInstanceOf(ConnectError);
        // Its one place is free again: the next call gets in.
        await client.unaryCall({}, { timeoutMs: 10_000 });
      }
    });

    it("a raw call whose request message never comes ends at its deadline or cancellation and gives its place back", async () => {
      const { serverId } = await countingServer(closer, target, {
        maxCallsPerClient: 1,
        maxQueuedCalls: 0,
      });
      const transport = startTransport(closer, target, { serverId });
      const client = createClient(TestService, transport);
      const never: AsyncIterable<Uint8Array> = {
        [Symbol.asyncIterator]: () => ({ next: () => new Promise(() => {}) }),
      };
      const raw = (options: { timeoutMs?: number; signal?: AbortSignal }) =>
        transport
          .rawStream({
            service: TestService.typeName,
            method: "UnaryCall",
            kind: "unary",
            message: never,
            ...options,
          })
          .catch((e: unknown) => Code[ConnectError.from(e).code]);
      expect(await raw({ timeoutMs: 200 })).toBe("DeadlineExceeded");
      await client.unaryCall({}, { timeoutMs: 10_000 });
      const aborter = new AbortController();
      const cancelled = raw({ signal: aborter.signal });
      aborter.abort();
      expect(await cancelled).toBe("Canceled");
      await client.unaryCall({}, { timeoutMs: 10_000 });
    });

    it("calls waiting for their turn when the server goes offline all leave the queue at once", async () => {
      // The server's link drops for good (its will says DISCONNECTED): the
      // call it runs fails once offlineGraceMs is over, and hands its turn on.
      const proxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
      const { serverId, counts, hold } = await countingServer(closer, target, {
        maxCallsPerClient: 1,
        maxQueuedCalls: 0,
        mqtt: { ...mqttOptions(target), url: proxy.url },
      });
      hold();
      const transport = startTransport(closer, target, { serverId, offlineGraceMs: 300 });
      const client = createClient(TestService, transport);
      const outcome = (call: Promise<unknown>) =>
        call.then(
          () => "OK",
          (e: unknown) => Code[ConnectError.from(e).code],
        );
      const first = outcome(client.unaryCall({}, { timeoutMs: 60_000 }));
      await expect.poll(() => counts.started, { timeout: 10_000 }).toBe(1);
      const waiting = Array.from({ length: 40 }, () =>
        outcome(client.unaryCall({}, { timeoutMs: 60_000 })),
      );
      const gate = (
        transport as unknown as { presence: { gate: { waiting: number; open: number } } }
      ).presence.gate;
      await expect.poll(() => gate.waiting).toBe(40);
      proxy.refuse(true);
      proxy.resetAll();
      expect(await first).toBe("Unavailable");
      // Each waiter in turn finds the server offline and gives the turn on
      // at once (all within a turn of the event loop), instead of holding
      // it through its own wait for the server.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      expect(gate.waiting).toBe(0);
      expect(new Set(await Promise.all(waiting))).toEqual(new Set(["Unavailable"]));
      expect(gate.open).toBe(0);
    });
  });
});
