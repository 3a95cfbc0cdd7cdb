/**
 * Two processes run as one (non-replicated) server id, so with one client
 * id: brokers that close the old connection without MQTT 5 reason 0x8E
 * (Mosquitto 2.0, and every MQTT 3.1.1 broker) let them take the id from
 * each other without a word. Each server watches its own presence and says
 * so when it finds its instance held by another incarnation after it held
 * it (the other's ONLINE, or on Aedes the other's last will, which Aedes
 * publishes at each takeover), and the one that started later stays down,
 * so that the other serves undisturbed, on every broker target within a
 * reconnect or two. One server alone, through reconnects, says nothing.
 */

import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, type MqttServer } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { Presence_State, PresenceSchema } from "../packages/runtime/src/gen/mqrpc/v1/wire_pb.js";
import { encodePresence } from "../packages/runtime/src/link/presence.js";
import { encodeTopicSegment } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { ChildServer } from "./support/child-server-process.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { interopService } from "./support/interop-service.js";
import { within } from "./support/outcome.js";
import { Closer, mqttOptions, uniqueServerId } from "./support/rpc-fixture.js";

/** How long two twins may take to settle: a reconnect or two (NATS holds each takeover 1 s). */
const SETTLE_MS = 15_000;

forEachBroker((target) => {
  describe("two processes with one server id", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    /** Another process serving as `serverId`: the same client id. */
    async function startTwin(serverId: string): Promise<ChildServer> {
      return closer.add(
        await ChildServer.start({
          url: target.url,
          protocolVersion: target.mqttOptions.protocolVersion === 5 ? 5 : 4,
          serverId,
          handlerMs: 0,
        }),
        (c) => c.stop(),
      );
    }

    /** A server whose warnings land in `warnings`, waking `onWarn`. */
    async function serve(serverId: string, url: string, warnings: string[], onWarn: () => void) {
      const server: MqttServer = await createMqttServer({
        serverId,
        mqtt: { ...mqttOptions(target), url },
        logger: {
          warn: (message: string) => {
            warnings.push(message);
            onWarn();
          },
        },
        routes: (s) => s.service(TestService, interopService),
      });
      return closer.add(server, (s) => s.close());
    }

    it("a server says when another process serves as it", async () => {
      const serverId = uniqueServerId("twin");
      const warnings: string[] = [];
      let warned: () => void = () => {};
      const warning = new Promise<void>((resolve) => {
        warned = resolve;
      });
      await serve(serverId, target.url, warnings, () => {
        if (warnings.some((w) => w.includes("another process"))) warned();
      });
      // The twin: another process, same server id, so the same client id.
      const twin = await startTwin(serverId);
      await Promise.race([
        warning,
        twin.until(
          (e) => e.event === "warn" && e.message.includes("another process serves as this server"),
        ),
      ]);
      const said = [
        ...warnings,
        ...twin.events.flatMap((e) => (e.event === "warn" ? [e.message] : [])),
      ].find((w) => w.includes("another process"));
      expect(said).toMatch(
        /another process serves as this server \(client id .*, incarnation \d+; this one \d+\)/,
      );
    });

    it("the process that started later stays down, tells why by takenOver(), and the first serves every call", async () => {
      const serverId = uniqueServerId("twin-settle");
      const warnings: string[] = [];
      const staysDown = (w: string) => w.includes("this one stays down");
      const local = await serve(serverId, target.url, warnings, () => {});
      let localTakenOver = false;
      void local.takenOver().then(() => {
        localTakenOver = true;
      });
      const twin = await startTwin(serverId);
      await within(
        twin.until((e) => e.event === "taken-over"),
        SETTLE_MS,
        "the later process to stay down",
      );
      const transport = closer.add(
        createMqttTransport({
          mqtt: { ...mqttOptions(target), url: target.url },
          serverId,
          waitForServer: true,
        }),
        (t) => t.close(),
      );
      const client = createClient(TestService, transport);
      // While the two still fought, calls failed as the id moved; now the first keeps it.
      for (let i = 0; i < 30; i++) {
        await expect(client.emptyCall({}, { timeoutMs: 10_000 })).resolves.toBeDefined();
      }
      const twinSaid = twin.events.flatMap((e) => (e.event === "warn" ? [e.message] : []));
      expect(twinSaid.filter(staysDown)).toHaveLength(1);
      expect(twin.events.find((e) => e.event === "taken-over")?.message ?? "").toMatch(
        /another process serves as this server .*this one stays down/,
      );
      expect(warnings.filter(staysDown)).toEqual([]);
      expect(localTakenOver).toBe(false);
    });

    /** Fake twins announcing the server's own instance (ONLINE), their times relative to now. */
    const fakeTwins = [
      {
        name: "an earlier run's ONLINE, delivered late, does not make a server stay down",
        incarnation: 0xffffffff,
        sinceMs: -60_000,
        startedMs: -120_000,
        staysDown: false,
      },
      {
        name: "a live twin that started first, seen after two connections, makes a server stay down",
        incarnation: 1,
        sinceMs: 0,
        startedMs: -120_000,
        staysDown: true,
      },
      {
        name: "a live twin that started later never makes a server stay down",
        incarnation: 0xffffffff,
        sinceMs: 0,
        startedMs: 1,
        staysDown: false,
      },
      {
        name: "a live twin of an older server (no start time) with a higher incarnation makes a server stay down",
        incarnation: 0xffffffff,
        sinceMs: 0,
        startedMs: undefined,
        staysDown: true,
      },
    ] as const;

    for (const fake of fakeTwins) {
      it(fake.name, async () => {
        const serverId = uniqueServerId("twin-fake");
        const proxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const warnings: string[] = [];
        let onWarn: () => void = () => {};
        const server = await serve(serverId, proxy.url, warnings, () => onWarn());
        let takenOver: Error | undefined;
        void server.takenOver().then((reason) => {
          takenOver = reason;
        });
        const warned = (what: string) =>
          new Promise<void>((resolve) => {
            onWarn = () => {
              if (warnings.some((w) => w.includes(what))) resolve();
            };
            onWarn();
          });
        const own = `mqrpc/p/${encodeTopicSegment(serverId)}/${encodeTopicSegment(server.instanceId)}`;
        const app = closer.add(
          await connectAsync(target.url, { ...target.mqttOptions, reconnectPeriod: 0 }),
          (c) => c.endAsync(),
        );
        await app.subscribeAsync(own, { qos: 1 });
        const caller = createClient(
          TestService,
          closer.add(
            createMqttTransport({ mqtt: { ...mqttOptions(target), url: target.url }, serverId }),
            (t) => t.close(),
          ),
        );
        // Another incarnation announcing this very instance.
        const twin = () => {
          const now = Date.now();
          return app.publishAsync(
            own,
            Buffer.from(
              encodePresence(server.instanceId, Presence_State.ONLINE, false, fake.incarnation, {
                sinceMs: now + fake.sinceMs,
                ...(fake.startedMs !== undefined ? { startedMs: now + fake.startedMs } : {}),
              }),
            ),
            { qos: 1 },
          );
        };
        await twin();
        await warned("another process serves as this server");
        // The server's next connection, its presence subscribed again and announced.
        const announcedAgain = new Promise<void>((resolve) => {
          app.on("message", (_topic, payload) => {
            const presence = fromBinary(PresenceSchema, payload);
            if (presence.incarnation !== fake.incarnation && proxy.connections > 1) resolve();
          });
        });
        proxy.resetAll();
        await announcedAgain;
        await twin();
        // The broker delivers in order on the server's one connection: once
        // this call is answered, the second sighting was handled.
        await caller.emptyCall({}, { timeoutMs: 10_000 });
        expect(warnings.some((w) => w.includes("this one stays down"))).toBe(fake.staysDown);
        if (fake.staysDown) {
          expect((await server.takenOver()).message).toMatch(/this one stays down/);
        }
        expect(takenOver === undefined).toBe(!fake.staysDown);
      });
    }

    it("the later one stays down when it is this process: takenOver() resolves with why, and the first serves on", async () => {
      const serverId = uniqueServerId("twin-later");
      const first = await startTwin(serverId);
      const warnings: string[] = [];
      const later = await serve(serverId, target.url, warnings, () => {});
      const reason = await within(later.takenOver(), SETTLE_MS, "the later server to stay down");
      expect(reason.message).toMatch(
        /another process serves as this server \(client id .*\): this one stays down/,
      );
      expect(warnings.filter((w) => w.includes("this one stays down"))).toHaveLength(1);
      const caller = createClient(
        TestService,
        closer.add(
          createMqttTransport({
            // A connection of its own: one with the later server's options
            // would share that server's, which is down for good.
            mqtt: mqttOptions(
              target,
              uniqueServerId("twin-caller").replace(/[^A-Za-z0-9_-]/g, "_"),
            ),
            serverId,
            waitForServer: true,
          }),
          (t) => t.close(),
        ),
      );
      for (let i = 0; i < 30; i++) {
        await expect(caller.emptyCall({}, { timeoutMs: 10_000 })).resolves.toBeDefined();
      }
      expect(first.events.some((e) => e.event === "taken-over")).toBe(false);
    });

    it("one server through link drops says nothing", async () => {
      const serverId = uniqueServerId("single");
      const proxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
      const warnings: string[] = [];
      const server = await serve(serverId, proxy.url, warnings, () => {});
      for (let i = 0; i < 3; i++) {
        proxy.resetAll();
        await server.announced();
        await new Promise<void>((resolve) => {
          const check = () => (proxy.open > 0 ? resolve() : setTimeout(check, 20));
          check();
        });
      }
      // A live ONLINE of its own incarnation after each reconnect, and a retained one at start.
      expect(warnings.filter((w) => w.includes("another process"))).toEqual([]);
    });
  });
});
