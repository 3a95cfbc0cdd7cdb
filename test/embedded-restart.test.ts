/**
 * The embedded broker (no persistence) restarted on its port under a
 * server stream: both peers reconnect to a broker that forgot every
 * subscription, in either order, and the stream completes whole and in
 * order well within its deadline, before any heartbeat (10 s) would
 * notice: calls resynchronise after a reconnect, and again while nothing
 * new arrives (PROTOCOL.md section 11.2).
 */
import { createClient } from "@connectrpc/connect";
import { startEmbeddedBroker } from "@mqrpc/runtime";
import { afterEach, describe, expect, it } from "vitest";
import type { BrokerTarget } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, startServer, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

describe("embedded broker restarted under a stream", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  for (const round of [1, 2, 3]) {
    it(`a 30-message server stream completes whole, in order, before its deadline (round ${round})`, async () => {
      let broker = await startEmbeddedBroker();
      const port = broker.port;
      closer.add(null, () => broker.close());
      const target: BrokerTarget = {
        name: "aedes-restart",
        kind: "aedes",
        url: broker.url,
        mqttOptions: { protocolVersion: 4 },
        sharedSubscriptions: false,
      };
      const serverId = uniqueServerId("restart-embedded");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const sizes: number[] = [];
      const stream = (async () => {
        for await (const r of client.streamingOutputCall(
          {
            responseParameters: Array.from({ length: 30 }, (_, i) => ({
              size: i + 1,
              intervalUs: 100_000,
            })),
          },
          { timeoutMs: 8_000 },
        )) {
          sizes.push(r.payload?.body.byteLength ?? -1);
        }
      })();
      await expect.poll(() => sizes.length, { timeout: 10_000 }).toBeGreaterThanOrEqual(7);
      await broker.close();
      await new Promise((r) => setTimeout(r, 300 * round));
      broker = await startEmbeddedBroker({ port });
      await stream;
      expect(sizes).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    }, 30_000);
  }
});
