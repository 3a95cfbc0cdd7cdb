/**
 * Transports and servers given the same broker URL and options in one
 * process share one connection, reference-counted and closed with its last
 * user (issue 10, item 7). Counted at a TCP proxy in front of the broker:
 * every connection the process opens passes through it.
 */
import { createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  createMqttServer,
  createMqttTransport,
  type MqttTransport,
} from "../packages/runtime/src/index.js";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { interopService } from "./support/interop-service.js";
import { Closer, uniqueServerId } from "./support/rpc-fixture.js";

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5" || t.name === "mosquitto-3.1.1",
  (target) => {
    describe("connection sharing", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      async function proxied() {
        const proxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const options = { url: proxy.url, ...target.mqttOptions, reconnectPeriod: 200 };
        return { proxy, options };
      }

      async function serve(serverIds: string[]) {
        // The servers' own connections go straight to the broker, not through the proxy.
        for (const serverId of serverIds) {
          const server = await createMqttServer({
            serverId,
            mqtt: { url: target.url, ...target.mqttOptions },
            routes: (s) => s.service(TestService, interopService),
          });
          closer.add(server, (s) => s.close());
        }
      }

      it("transports to 30 servers with the same options share one connection, closed with the last", async () => {
        const serverIds = Array.from({ length: 30 }, (_, i) => uniqueServerId(`share-${i}`));
        await serve(serverIds);
        const { proxy, options } = await proxied();
        const transports: MqttTransport[] = serverIds.map((serverId) =>
          createMqttTransport({ serverId, mqtt: { ...options } }),
        );
        for (const t of transports) closer.add(t, (x) => x.close());
        await Promise.all(
          transports.map((t) => createClient(TestService, t).unaryCall({ responseSize: 4 })),
        );
        expect(proxy.connections).toBe(1);
        expect(proxy.open).toBe(1);
        // Closing all but one keeps the connection; closing the last closes it.
        for (const t of transports.slice(1)) await t.close();
        await createClient(TestService, transports[0]!).emptyCall({});
        expect(proxy.open).toBe(1);
        await transports[0]!.close();
        await proxy.untilOpen(0);
        // The next transport opens a connection again.
        const again = closer.add(
          createMqttTransport({ serverId: serverIds[0]!, mqtt: options }),
          (t) => t.close(),
        );
        await createClient(TestService, again).emptyCall({});
        expect(proxy.connections).toBe(2);
      });

      it("a server and the transports of its process share its connection", async () => {
        const { proxy, options } = await proxied();
        const serverId = uniqueServerId("share-server");
        const other = uniqueServerId("share-other");
        await serve([other]);
        const server = closer.add(
          await createMqttServer({
            serverId,
            mqtt: options,
            routes: (s) => s.service(TestService, interopService),
          }),
          (s) => s.close(),
        );
        const toSelf = closer.add(createMqttTransport({ serverId, mqtt: options }), (t) =>
          t.close(),
        );
        const toOther = closer.add(createMqttTransport({ serverId: other, mqtt: options }), (t) =>
          t.close(),
        );
        await createClient(TestService, toSelf).unaryCall({ responseSize: 8 });
        await createClient(TestService, toOther).unaryCall({ responseSize: 8 });
        expect(server.instanceId).toMatch(/^mqrpc-s-/);
        expect(proxy.connections).toBe(1);
      });

      it("a server joining a transport's connection with a chosen client id installs its will there", async () => {
        const { proxy, options } = await proxied();
        const serverId = uniqueServerId("share-late-server");
        const clientId = `late-${target.name.replace(/\W/g, "")}-${process.pid}`;
        const mine = { ...options, clientId };
        const transport = closer.add(createMqttTransport({ serverId, mqtt: mine }), (t) =>
          t.close(),
        );
        const server = closer.add(
          await createMqttServer({
            serverId,
            mqtt: mine,
            routes: (s) => s.service(TestService, interopService),
          }),
          (s) => s.close(),
        );
        expect(server.instanceId).toBe(clientId);
        await createClient(TestService, transport).unaryCall({ responseSize: 8 });
        // The connection was made again with the will; one is open.
        expect(proxy.open).toBe(1);
        // Its will works: a watcher sees the server go DISCONNECTED when the link dies.
        const watcher = closer.add(
          createMqttTransport({
            serverId,
            mqtt: { url: target.url, ...target.mqttOptions },
            offlineGraceMs: 0,
          }),
          (t) => t.close(),
        );
        const client = createClient(TestService, watcher);
        await client.emptyCall({});
        proxy.refuse(true);
        proxy.resetAll();
        await expect(client.emptyCall({}, { timeoutMs: 5000 })).rejects.toThrow(
          /offline|disconnected/i,
        );
      });

      it("refuses a second server with the same client id in one process, naming the option", async () => {
        const { options } = await proxied();
        const mine = {
          ...options,
          clientId: `dup-${target.name.replace(/\W/g, "")}-${process.pid}`,
        };
        closer.add(
          await createMqttServer({
            serverId: uniqueServerId("dup-a"),
            mqtt: mine,
            routes: (s) => s.service(TestService, interopService),
          }),
          (s) => s.close(),
        );
        await expect(
          createMqttServer({ serverId: uniqueServerId("dup-b"), mqtt: mine }),
        ).rejects.toThrow(/mqtt option: client id "dup-.*" is already connected from this process/);
      });

      it("options that cannot be compared get a connection of their own", async () => {
        const { proxy, options } = await proxied();
        const serverId = uniqueServerId("share-fn");
        await serve([serverId]);
        const withFunction = () => ({ ...options, transformWsUrl: (url: string) => url });
        const a = closer.add(createMqttTransport({ serverId, mqtt: withFunction() }), (t) =>
          t.close(),
        );
        const b = closer.add(createMqttTransport({ serverId, mqtt: withFunction() }), (t) =>
          t.close(),
        );
        await createClient(TestService, a).emptyCall({});
        await createClient(TestService, b).emptyCall({});
        expect(proxy.connections).toBe(2);
      });
    });
  },
);
