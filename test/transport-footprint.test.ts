/**
 * What a transport costs the process that holds it (issue 10: a fleet
 * caller holds one per device it calls, at most 10 KiB each). Transports
 * on one connection share its listeners, routes and reply subscription:
 * adding one adds no listener to the MQTT client, and what a transport
 * keeps once its call is over (its presence watch, its request topic) is a
 * few KiB, not the per-call state of the call it made.
 */
import { createClient } from "@connectrpc/connect";
import { createMqttTransport, type MqttServer, type MqttTransport } from "@mqrpc/runtime";
import { connect, type MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { heapAfterGc } from "./support/gc.js";
import { interopService } from "./support/interop-service.js";
import { Closer, mqttOptions, startServer, uniqueServerId } from "./support/rpc-fixture.js";

const EVENTS = ["message", "connect", "close", "error", "packetsend", "packetreceive"] as const;

/** Resolves once `client` has no publish waiting for the broker's acknowledgement. */
function acknowledged(client: MqttClient): Promise<void> {
  const waiting = () => Object.keys(client.outgoing).length > 0;
  if (!waiting()) return Promise.resolve();
  return new Promise((resolve) => {
    // MQTT.js forgets the publish right after it emits the PUBACK.
    const check = () =>
      queueMicrotask(() => {
        if (waiting()) return;
        client.off("packetreceive", check);
        resolve();
      });
    client.on("packetreceive", check);
  });
}

function listeners(client: MqttClient): Record<string, number> {
  return Object.fromEntries(EVENTS.map((e) => [e, client.listenerCount(e)]));
}

forBrokersWhere(
  (t) => t.name === "aedes",
  (target) => {
    describe("transport footprint", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      /** The servers `serve` started in the current test. */
      let servers: MqttServer[] = [];

      async function serve(count: number, label: string): Promise<string[]> {
        const serverIds = Array.from({ length: count }, (_, i) => uniqueServerId(`${label}-${i}`));
        servers = await Promise.all(
          serverIds.map((serverId) =>
            startServer(closer, target, {
              serverId,
              routes: (s) => s.service(TestService, interopService),
            }),
          ),
        );
        return serverIds;
      }

      it("adds no listener to a shared MQTT client per transport or server called", async () => {
        const serverIds = await serve(20, "listeners");
        const { url, ...options } = mqttOptions(target, `footprint-${process.pid}`);
        const client = closer.add(connect(url, options), (c) => c.endAsync());
        await new Promise((resolve) => client.once("connect", resolve));
        const before = listeners(client);
        const call = (t: MqttTransport) => createClient(TestService, t).unaryCall({});
        // Closed in the test; the closer only if it fails first (close is idempotent).
        const transport = (serverId: string) =>
          closer.add(createMqttTransport({ mqtt: client, serverId }), (t) => t.close());
        const first = transport(serverIds[0] as string);
        await call(first);
        const withOne = listeners(client);
        const rest = serverIds.slice(1).map(transport);
        await Promise.all(rest.map(call));
        expect(listeners(client)).toEqual(withOne);
        for (const t of [first, ...rest]) await t.close();
        expect(listeners(client)).toEqual(before);
      });

      it("keeps a few KiB per transport once its call is over", async () => {
        const devices = 100;
        const [warmUp, ...serverIds] = await serve(devices + 1, "heap");
        const mqtt = mqttOptions(target);
        const request = { payload: { body: new Uint8Array(16) } };
        // Holds the shared connection open while the others come and go.
        const opener = closer.add(createMqttTransport({ mqtt, serverId: warmUp as string }), (t) =>
          t.close(),
        );
        await createClient(TestService, opener).unaryCall(request);
        let transports = serverIds.map((serverId) => createMqttTransport({ mqtt, serverId }));
        const closeAll = () => Promise.all(transports.map((t) => t.close()));
        closer.add(undefined, closeAll);
        await Promise.all(transports.map((t) => createClient(TestService, t).unaryCall(request)));
        // What a server holds for a reply until the broker acknowledged it
        // (in this process too) is not the transports': wait for those.
        await Promise.all(servers.map((server) => acknowledged(server.mqttClient)));
        // What closing the transports and letting go of them frees is what
        // they kept: the servers' records of the calls and the code
        // compiled for them stay.
        const held = heapAfterGc();
        await closeAll();
        transports = [];
        const perTransport = (held - heapAfterGc()) / devices;
        // About 1.5 KiB (its server's presence watch and subscription, its
        // topics); 9 KiB before transports shared their listeners, routes
        // and caches and let go of per-call state once their calls ended.
        expect(perTransport).toBeLessThan(4 * 1024);
      });
    });
  },
);
