/**
 * A transport or server made on a connection while the last one there is
 * still closing: its SUBSCRIBE must not be swallowed by the closing one's
 * UNSUBSCRIBE (MQTT.js skips a SUBSCRIBE for a filter whose UNSUBSCRIBE is
 * still queued; Aedes may remove the new subscription with the old one).
 * Found by the network bridge, which opens a transport per connection.
 */
import { createClient } from "@connectrpc/connect";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { createMqttServer, createMqttTransport } from "../packages/runtime/src/index.js";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, mqttOptions, startServer, uniqueServerId } from "./support/rpc-fixture.js";

const ROUNDS = 30;

forBrokersWhere(
  (t) => t.name !== "nats",
  (target) => {
    describe("a peer made while the last one of its connection closes", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("a new transport gets the replies to its calls", async () => {
        const serverId = uniqueServerId("reopen");
        await startServer(closer, target, {
          serverId,
          routes: (s) => s.service(TestService, interopService),
        });
        const options = mqttOptions(target);
        let answered = 0;
        for (let i = 0; i < ROUNDS; i++) {
          const first = createMqttTransport({ serverId, mqtt: options });
          await createClient(TestService, first).emptyCall({});
          const closing = first.close();
          const second = createMqttTransport({ serverId, mqtt: options });
          await createClient(TestService, second).emptyCall({}, { timeoutMs: 5000 });
          answered++;
          await Promise.all([closing, second.close()]);
        }
        expect(answered).toBe(ROUNDS);
      });

      it("a new server on the application's client gets the calls sent to it", async () => {
        const serverId = uniqueServerId("reopen-server");
        const client = await connectAsync(target.url, {
          ...target.mqttOptions,
          reconnectPeriod: 200,
        });
        closer.add(client, (c) => c.endAsync(true));
        const caller = createMqttTransport({ serverId, mqtt: mqttOptions(target) });
        closer.add(caller, (t) => t.close());
        const routes = (
          s: Parameters<NonNullable<Parameters<typeof createMqttServer>[0]["routes"]>>[0],
        ) => s.service(TestService, interopService);
        let answered = 0;
        for (let i = 0; i < ROUNDS; i++) {
          const first = await createMqttServer({ serverId, mqtt: client, routes });
          await createClient(TestService, caller).emptyCall({}, { timeoutMs: 5000 });
          const closing = first.close();
          const second = await createMqttServer({ serverId, mqtt: client, routes });
          await createClient(TestService, caller).emptyCall({}, { timeoutMs: 5000 });
          answered++;
          await Promise.all([closing, second.close()]);
        }
        expect(answered).toBe(ROUNDS);
      });
    });
  },
);
