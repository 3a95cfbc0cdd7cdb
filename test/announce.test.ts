/**
 * A server is callable as soon as `createMqttServer({ routes })` resolves:
 * it resolves only once the broker acknowledged the ONLINE presence, so a
 * caller that saw the previous instance go away and calls right then finds
 * the new one online (issue 10, item 6).
 */
import { createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { createMqttServer, type MqttServer } from "../packages/runtime/src/index.js";
import { forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { interopService } from "./support/interop-service.js";
import { Closer, mqttOptions, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

forEachBroker((target) => {
  describe("a server that resolves is announced", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("a caller that saw the last instance go away reaches the next one at once, 10 times", async () => {
      const serverId = uniqueServerId("announce");
      const caller = createClient(
        TestService,
        startTransport(closer, target, { serverId, offlineGraceMs: 0 }),
      );
      const start = (mqtt: ReturnType<typeof mqttOptions>): Promise<MqttServer> =>
        createMqttServer({
          serverId,
          mqtt,
          routes: (s) => s.service(TestService, interopService),
        });
      for (let round = 0; round < 10; round++) {
        // Every other round the instance dies (its will: DISCONNECTED), else it closes (OFFLINE).
        const dies = round % 2 === 1;
        const proxy = dies ? await FaultProxy.start(target.url) : undefined;
        const server = await start({
          ...mqttOptions(target),
          ...(proxy === undefined ? {} : { url: proxy.url }),
        });
        const answer = await caller.unaryCall({ responseSize: round + 1 });
        expect(answer.payload?.body.byteLength).toBe(round + 1);
        if (proxy === undefined) {
          await server.close();
        } else {
          proxy.refuse(true);
          proxy.resetAll();
          await expect(caller.emptyCall({}, { timeoutMs: 5000 })).rejects.toThrow(
            /offline|disconnected|not confirm|went away/i,
          );
          await server.close();
          await proxy.close();
        }
      }
      const last = closer.add(await start(mqttOptions(target)), (s) => s.close());
      expect(last.instanceId).not.toBe("");
      await caller.emptyCall({});
    });

    it("rejects routes that register nothing, and closes the server", async () => {
      await expect(
        createMqttServer({
          serverId: uniqueServerId("announce-empty"),
          mqtt: mqttOptions(target),
          routes: () => {},
        }),
      ).rejects.toThrow(/routes: registered no service/);
    });
  });
});
