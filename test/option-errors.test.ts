/**
 * Options that cannot work fail at once, naming the option and showing
 * the value (not as a strange error on the first call, nor a plain-text
 * connection where TLS was meant); a logger that throws cannot take a
 * server down; a server whose broker is not there yet says so while it
 * waits.
 */
import { createClient } from "@connectrpc/connect";
import {
  checkMqttServerOptions,
  checkMqttTransportOptions,
  createMqttServer,
  createMqttTransport,
  type MqttServerOptions,
  type MqttTransportOptions,
  startEmbeddedBroker,
} from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import {
  createGrpcGateway,
  createGrpcIngress,
  type DeviceTransportOptions,
  type GrpcGatewayOptions,
} from "../packages/gateway/src/index.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { freePort } from "./brokers/free-port.js";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

const SCHEMES = "use mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://host/mqtt";

forBrokersWhere(
  (t) => t.name === "mosquitto-5",
  (target) => {
    describe("option errors", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("a broker URL that is not an MQTT one is refused, naming the mqtt option", async () => {
        const refused: Array<[string, string]> = [
          ["https://127.0.0.1:8883", "has scheme https:, not an MQTT one"],
          ["ftp://127.0.0.1:21", "has scheme ftp:, not an MQTT one"],
          ["localhost:1883", "has scheme localhost:, not an MQTT one"],
          ["garbage", "is not a broker URL"],
        ];
        for (const [url, problem] of refused) {
          const message = `mqtt option: "${url}" ${problem}; ${SCHEMES}`;
          await expect(createMqttServer({ mqtt: url, serverId: "s" })).rejects.toThrow(message);
          expect(() => createMqttTransport({ mqtt: url, serverId: "s" })).toThrow(message);
          expect(() => createMqttTransport({ mqtt: { url }, serverId: "s" })).toThrow(message);
        }
        expect(() =>
          createMqttTransport({
            mqtt: { host: "127.0.0.1", protocol: "https" as "mqtt" },
            serverId: "s",
          }),
        ).toThrow(
          'mqtt option: protocol "https" is not one MQTT.js connects with (mqtt, mqtts, ws, wss, …)',
        );
        // A password in a refused URL never reaches a message.
        const secret = "https://ops:S3cr3t@127.0.0.1:8883";
        const error = (() => {
          try {
            createMqttTransport({ mqtt: secret, serverId: "s" });
          } catch (e) {
            return e as Error;
          }
        })();
        expect(error?.message).toBe(
          `mqtt option: "https://ops:***@127.0.0.1:8883/" has scheme https:, not an MQTT one; ${SCHEMES}`,
        );
        await expect(
          createGrpcIngress({ mqtt: secret, listen: { host: "127.0.0.1", port: 0 } }),
        ).rejects.toThrow(/^mqtt option: "https:\/\/ops:\*\*\*@127\.0\.0\.1:8883\/" has scheme/);
      });

      it("every form MQTT.js connects with passes the check", () => {
        for (const mqtt of [
          "mqtt://h:1883",
          "MQTTS://h:8883",
          "tcp://h",
          "ssl://h",
          "ws://h:80/mqtt?x=1",
          "wss://h/mqtt",
          "wxs://h/mqtt",
          "alis://h/mqtt",
          "mqtt+unix:///run/mosquitto.sock",
          "ws+unix:///run/mqtt-ws.sock",
          "/mqtt",
          { url: "mqtts://h:8883", protocol: "mqtts:" as "mqtts" },
          { host: "h", port: 8883, protocol: "mqtts" as const },
          {
            host: "h",
            servers: [
              { host: "a", port: 1 },
              { host: "b", port: 2, protocol: "mqtt" as const },
            ],
          },
        ]) {
          expect(() => checkMqttTransportOptions({ mqtt, serverId: "s" })).not.toThrow();
          expect(() => checkMqttServerOptions({ mqtt, serverId: "s" })).not.toThrow();
        }
        expect(() =>
          checkMqttTransportOptions({
            mqtt: { host: "h", servers: [{ host: "a", port: 1, protocol: "https" as "mqtt" }] },
            serverId: "s",
          }),
        ).toThrow('mqtt option: servers[0]: protocol "https" is not one MQTT.js connects with');
      });

      it("unknown options and values of the wrong type are refused, naming the option", async () => {
        const mqtt = mqttOptions(target);
        const server = (extra: Record<string, unknown>) =>
          createMqttServer({
            mqtt,
            serverId: uniqueServerId("opt"),
            ...extra,
          } as MqttServerOptions);
        await expect(server({ maxCalls: 5 })).rejects.toThrow(
          /^maxCalls is not an option of createMqttServer \(it takes mqtt, serverId, routes, /,
        );
        await expect(server({ interceptors: 5 })).rejects.toThrow(
          "interceptors must be an array of functions, not 5",
        );
        await expect(server({ logger: {} })).rejects.toThrow(
          "logger must be an object with a warn(message) method (and optionally info), such as console; got an object",
        );
        await expect(server({ shared: 1 })).rejects.toThrow(
          "shared must be true, false or a share group name, not 1",
        );
        await expect(server({ reflection: "no" })).rejects.toThrow(
          'reflection must be true or false, not "no"',
        );
        await expect(server({ maxConcurrentCalls: "10" })).rejects.toThrow(
          'maxConcurrentCalls must be an integer of at least 1, got "10" (a string)',
        );
        const transport = (extra: Record<string, unknown>) =>
          createMqttTransport({ mqtt, serverId: "s", ...extra } as MqttTransportOptions);
        expect(() => transport({ timeoutMs: 5 })).toThrow(
          /^timeoutMs is not an option of createMqttTransport \(it takes mqtt, serverId, /,
        );
        expect(() => transport({ waitForServer: "yes" })).toThrow(
          'waitForServer must be true or false, not "yes"',
        );
        await expect(
          createGrpcGateway({
            mqtt,
            serverId: "g",
            // An upstream that is not there: the typo is reported first, not after its start timeout.
            upstreams: [{ url: "http://127.0.0.1:1" }],
            upstreamKeepaliveMs: 5,
          } as GrpcGatewayOptions),
        ).rejects.toThrow(
          /^upstreamKeepaliveMs is not an option of createGrpcGateway \(it takes mqtt, serverId, upstreams, /,
        );
        await expect(
          createGrpcGateway({
            mqtt,
            serverId: "g",
            upstreams: [{ url: "http://127.0.0.1:1" }],
            maxConcurrentCalls: 0,
          }),
        ).rejects.toThrow("maxConcurrentCalls must be an integer of at least 1, got 0");
        await expect(
          createGrpcIngress({
            mqtt,
            transport: { heartbeatMS: 5 } as DeviceTransportOptions,
          }),
        ).rejects.toThrow(/^transport option: heartbeatMS is not an option of transport/);
        await expect(
          createGrpcIngress({ mqtt, transport: { waitForServer: "yes" as unknown as boolean } }),
        ).rejects.toThrow('transport option: waitForServer must be true or false, not "yes"');
        expect(() => transport({ interceptors: [1] })).toThrow(
          "interceptors must be an array of functions; interceptors[0] is 1",
        );
      });

      it("a logger that throws does not take the server down when a stranger sends garbage", async () => {
        const serverId = uniqueServerId("opt");
        const warned = deferred<void>();
        const server = await createMqttServer({
          mqtt: mqttOptions(target),
          serverId,
          logger: {
            warn: () => {
              warned.resolve();
              throw new Error("the logger is broken");
            },
          },
          routes: (s) => s.service(TestService, interopService),
        });
        closer.add(server, (s) => s.close());
        const strangerId = uniqueServerId("stranger");
        const stranger = await connectAsync(target.url, { clientId: strangerId });
        closer.add(stranger, (c) => c.endAsync());
        const topic = new TopicScheme().requestTopic(
          serverId,
          TestService.typeName,
          "EmptyCall",
          strangerId,
        );
        await stranger.publishAsync(topic, Buffer.from([0xff, 0xff, 0xff]), { qos: 1 });
        // Also through the server's own connection, as a shared client would.
        server.mqttClient.publish(
          new TopicScheme().requestTopic(serverId, TestService.typeName, "EmptyCall", "zz"),
          Buffer.from([0xff, 0xff, 0xff]),
        );
        await warned.promise;
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        expect((await client.emptyCall({})).$typeName).toBe("mqrpc.interop.v1.Empty");
      });

      it("a server whose broker is not there yet says so, waits, and says when it is reached", async () => {
        const port = await freePort();
        const lines: string[] = [];
        const waiting = deferred<void>();
        const starting = createMqttServer({
          mqtt: `mqtt://127.0.0.1:${port}`,
          serverId: uniqueServerId("opt"),
          logger: {
            warn: (m) => {
              lines.push(`warn ${m}`);
              waiting.resolve();
            },
            info: (m) => lines.push(`info ${m}`),
          },
        });
        await waiting.promise;
        const broker = await startEmbeddedBroker({ port });
        closer.add(broker, (b) => b.close());
        const server = await starting;
        closer.add(server, (s) => s.close());
        expect(lines).toEqual([
          `warn mqrpc server "${server.serverId}": cannot reach the MQTT broker at mqtt://127.0.0.1:${port} (ECONNREFUSED); waiting for it, retrying every 500 ms`,
          `info mqrpc server "${server.serverId}": reached the MQTT broker at mqtt://127.0.0.1:${port}`,
        ]);
      });

      it("a server start that cannot reach its broker and will not retry (reconnectPeriod 0) fails, naming it", async () => {
        const port = await freePort();
        await expect(
          createMqttServer({
            mqtt: { url: `mqtt://127.0.0.1:${port}`, reconnectPeriod: 0 },
            serverId: uniqueServerId("opt"),
          }),
        ).rejects.toThrow(
          `mqtt option: cannot reach the MQTT broker at mqtt://127.0.0.1:${port} (ECONNREFUSED), and reconnectPeriod is 0: MQTT.js does not retry`,
        );
      });
    });
  },
);
