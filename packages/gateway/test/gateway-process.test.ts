/**
 * The gateway in its own process: restarted (callers see UNAVAILABLE, then
 * recover), and a 50,000-message stream through it into a slow consumer
 * with its memory bounded (flow control end to end: the MQTT credit
 * window, the grpc-js stream's buffer and the upstream's HTTP/2 window
 * hold the stream back, not the gateway's heap).
 */
import { Code, ConnectError, createClient, createContextValues } from "@connectrpc/connect";
import { waitForServerKey } from "@mqrpc/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerTargets, forBrokersWhere } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Closer, startTransport, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { GatewayProcess } from "./support/gateway-process.js";
import { UpstreamProcess } from "./support/upstream-process.js";

const MESSAGES = 50_000;
const MESSAGE_BYTES = 1024;
/** What the whole stream would hold in the gateway if nothing pushed back: 51 MB. */
const STREAM_BYTES = MESSAGES * MESSAGE_BYTES;
const MiB = 1024 * 1024;

let upstream: UpstreamProcess;

/**
 * Resolves once `count()` stayed the same for 500 ms (checked every 100
 * ms): a producer that stopped, whether held back or finished.
 */
async function quiescent(count: () => number): Promise<void> {
  let last = count();
  let since = performance.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const now = count();
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= 500) return;
  }
}

beforeAll(async () => {
  upstream = await UpstreamProcess.grpcJs({ listen: "127.0.0.1:0", services: ["TestService"] });
});
afterAll(async () => {
  await upstream?.kill();
});

/** The stream test's one target (it is long): Mosquitto when the run has it, else Aedes. */
const memoryTarget = (() => {
  const targets = brokerTargets();
  return (targets.find((t) => t.name === "mosquitto-5") ?? targets.find((t) => t.name === "aedes"))
    ?.name;
})();

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("a gateway process", () => {
      const closer = new Closer();
      afterAll(() => closer.closeAll());

      function gatewayConfig(serverId: string) {
        return {
          url: target.url,
          protocolVersion: target.protocolVersion,
          serverId,
          // Batched responses: the stream test measures memory, not publishes.
          upstreams: [{ url: upstream.url, settings: { batchedStream: true } }],
        };
      }

      it("restarted: callers see UNAVAILABLE while it is gone, then calls work again", async () => {
        const serverId = uniqueServerId("gw-restart");
        const [first, second] = await Promise.all([
          GatewayProcess.start(gatewayConfig(serverId)),
          GatewayProcess.preload(gatewayConfig(serverId)),
        ]);
        closer.add(first, (g) => g.kill());
        closer.add(second, (g) => g.kill());
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        expect((await client.unaryCall({ responseSize: 3 })).payload?.body.byteLength).toBe(3);

        await first.kill();
        const gone = await client
          .unaryCall({ responseSize: 3 }, { timeoutMs: 20_000 })
          .catch((e: unknown) => ConnectError.from(e));
        expect(gone).toBeInstanceOf(ConnectError);
        expect((gone as ConnectError).code).toBe(Code.Unavailable);

        await second.begin();
        const back = await client.unaryCall(
          { responseSize: 4 },
          { timeoutMs: 20_000, contextValues: createContextValues().set(waitForServerKey, true) },
        );
        expect(back.payload?.body.byteLength).toBe(4);
      });

      // Declared for one target only: it is the file's long test.
      if (target.name === memoryTarget) {
        it(`a ${MESSAGES}-message stream into a slow consumer keeps the gateway's memory bounded`, async () => {
          const serverId = uniqueServerId("gw-memory");
          const gateway = closer.add(await GatewayProcess.start(gatewayConfig(serverId)), (g) =>
            g.kill(),
          );
          const client = createClient(TestService, startTransport(closer, target, { serverId }));
          const stream = (count: number) =>
            client.streamingOutputCall(
              {
                responseParameters: Array.from({ length: count }, () => ({ size: MESSAGE_BYTES })),
              },
              { timeoutMs: 120_000 },
            );
          // Warm up (code compiled, buffers allocated), then start the peaks.
          for await (const _ of stream(2_000)) {
            // read as fast as possible
          }
          const before = await gateway.resetMemory();

          let received = 0;
          let bytes = 0;
          let stalled = 0;
          let ahead = 0;
          const mark = upstream.mark();
          for await (const res of stream(MESSAGES)) {
            received++;
            bytes += res.payload?.body.byteLength ?? 0;
            if (received === 1_000 || received === 25_000) {
              // The slow consumer stalls until the upstream stops sending:
              // at once when something holds it back, after the whole stream
              // when nothing does. Then the gateway collects its garbage and
              // says what it holds.
              await quiescent(() => upstream.written(mark));
              ahead = Math.max(ahead, upstream.written(mark) - received);
              stalled = Math.max(stalled, (await gateway.memory()).retained);
            }
          }
          const after = await gateway.memory();
          expect(received).toBe(MESSAGES);
          expect(bytes).toBe(STREAM_BYTES);

          // What stays reachable after a full collection (sampled every second
          // and in each stall): messages held in the gateway count, garbage
          // does not. The runtime's credit window alone may hold 64 batches.
          const retained = Math.max(stalled, after.peakRetained) - before.retained;
          const rss = after.peak.rss - before.now.rss;
          const heapAndBuffers =
            after.peakHeapAndBuffers - before.now.heapUsed - before.now.arrayBuffers;
          console.log(
            `gateway on ${target.name}, ${(STREAM_BYTES / MiB).toFixed(1)} MiB stream: upstream at most ${ahead} messages ahead; retained peak +${(retained / MiB).toFixed(1)} MiB, rss peak +${(rss / MiB).toFixed(1)} MiB, heap+buffers peak (garbage included) +${(heapAndBuffers / MiB).toFixed(1)} MiB`,
          );
          // Holding the stream would let the upstream send all of it ahead, and
          // retain up to all of its 48.8 MiB. Legitimately held: the runtime's
          // credit window (64 batches), the grpc-js stream's buffer (16 messages)
          // and the HTTP/2 windows.
          expect(ahead).toBeLessThan(MESSAGES / 4);
          expect(retained).toBeLessThan(24 * MiB);
        }, 90_000);
      }
    });
  },
);
