/**
 * The session model (PROTOCOL.md 16): processes that die leave no session
 * behind on the broker. A server's client id is derived from its server id,
 * so the next process takes over the session the dead one left (and starts
 * it clean, so it inherits none of its queue); a caller with a random
 * client id gets a clean session, which the broker drops with the
 * connection. Counted with Mosquitto's own statistics ($SYS, published
 * every second here): persistent sessions without a connection, and
 * retained presence messages (issue 10, item 2).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectAsync, type MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createMqttTransport } from "../packages/runtime/src/index.js";
import { type MosquittoBroker, mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { ChildServer } from "./support/child-server-process.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { within } from "./support/outcome.js";
import { Closer } from "./support/rpc-fixture.js";

/** The latest value of each `$SYS/broker/...` statistic, and a way to await one. */
class BrokerStatistics {
  private readonly values = new Map<string, number>();
  private readonly waiters = new Set<() => void>();

  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      this.values.set(topic.slice("$SYS/broker/".length), Number(payload.toString()));
      for (const wake of [...this.waiters]) wake();
    });
  }

  static async watch(url: string): Promise<BrokerStatistics> {
    const client = await connectAsync(url, { clientId: `stats-${process.pid}` });
    const statistics = new BrokerStatistics(client);
    await client.subscribeAsync("$SYS/broker/clients/disconnected");
    return statistics;
  }

  get(name: string): number | undefined {
    return this.values.get(name);
  }

  /** Resolves once `name` satisfies `predicate` (Mosquitto publishes it each sys_interval). */
  until(name: string, predicate: (value: number) => boolean, label: string): Promise<void> {
    const reached = new Promise<void>((resolve) => {
      const check = () => {
        const value = this.values.get(name);
        if (value !== undefined && predicate(value)) {
          this.waiters.delete(check);
          resolve();
        }
      };
      this.waiters.add(check);
      check();
    });
    return within(reached, 10_000, `${label} (${name} is ${this.values.get(name)})`);
  }
}

/** Retained presence messages under `serverId`, as a new subscriber receives them. */
async function retainedPresence(url: string, serverId: string): Promise<number> {
  const client = await connectAsync(url, { clientId: `presence-count-${process.pid}` });
  try {
    let count = 0;
    client.on("message", (_topic, payload) => {
      if (payload.byteLength > 0) count++;
    });
    await client.subscribeAsync(`mqrpc/p/${serverId}/+`, { qos: 1 });
    // Retained messages come before the SUBACK is processed; a ping round
    // trip after it makes sure they have all been handled.
    await client.publishAsync(`sessions-test/${process.pid}`, "", { qos: 1 });
    return count;
  } finally {
    await client.endAsync();
  }
}

describe.runIf(mosquittoAvailable())("sessions left on the broker", () => {
  let broker: MosquittoBroker;
  let statistics: BrokerStatistics;
  const closer = new Closer();
  beforeAll(async () => {
    broker = await startMosquitto({ extraConfig: "sys_interval 1" });
    statistics = await BrokerStatistics.watch(broker.url);
  });
  afterEach(() => closer.closeAll());
  afterAll(async () => {
    await statistics?.client.endAsync();
    await broker?.stop();
  });

  for (const protocolVersion of [4, 5] as const) {
    describe(`MQTT ${protocolVersion === 4 ? "3.1.1" : "5"}`, () => {
      it("a server killed and restarted three times leaves no session and one presence behind", async () => {
        const serverId = `sessions-${protocolVersion}`;
        const caller = createClient(
          TestService,
          closer.add(
            createMqttTransport({
              serverId,
              mqtt: { url: broker.url, protocolVersion, reconnectPeriod: 200 },
              offlineGraceMs: 0,
            }),
            (t) => t.close(),
          ),
        );
        const config = { url: broker.url, protocolVersion, serverId, handlerMs: 60_000 };
        let child = closer.add(await ChildServer.start(config), (c) => c.stop());
        const instanceIds = new Set<string>();
        for (let restart = 0; restart < 3; restart++) {
          instanceIds.add(child.instanceId);
          await caller.unaryCall({ responseSize: 0 });
          // Calls in flight when it dies, and calls made while it is dead:
          // queued in its session, they must not outlive it.
          const inFlight = Array.from({ length: 5 }, (_, i) =>
            caller.unaryCall({ responseSize: i + 1 }).catch((e: unknown) => ConnectError.from(e)),
          );
          await child.until((e) => e.event === "started" && e.id === 5);
          await child.kill();
          for (const outcome of await Promise.all(inFlight)) {
            expect((outcome as ConnectError).code).toBe(Code.Unavailable);
          }
          const whileDead = await caller
            .unaryCall({ responseSize: 1 })
            .catch((e: unknown) => ConnectError.from(e));
          expect((whileDead as ConnectError).code).toBe(Code.Unavailable);
          child = closer.add(await ChildServer.start(config), (c) => c.stop());
        }
        instanceIds.add(child.instanceId);
        // One client id across the four processes, so each took over the
        // last one's session instead of leaving it behind.
        expect([...instanceIds]).toEqual([`mqrpc-s-${serverId}`]);
        await caller.unaryCall({ responseSize: 0 });
        await statistics.until("clients/disconnected", (n) => n === 0, "no session left behind");
        expect(await retainedPresence(broker.url, serverId)).toBe(1);
        // The restarted server inherited none of the calls queued for the dead ones.
        expect(child.count("started")).toBe(0);
      });

      it("callers that vanish leave no session behind; one with a client id of its own takes its over", async () => {
        const serverId = `sessions-callers-${protocolVersion}`;
        const server = closer.add(
          await ChildServer.start({ url: broker.url, protocolVersion, serverId, handlerMs: 0 }),
          (c) => c.stop(),
        );
        expect(server.alive).toBe(true);
        const vanish = async (clientId?: string) => {
          const proxy = closer.add(await FaultProxy.start(broker.url), (p) => p.close());
          const transport = closer.add(
            createMqttTransport({
              serverId,
              mqtt: {
                url: proxy.url,
                protocolVersion,
                reconnectPeriod: 200,
                ...(clientId === undefined ? {} : { clientId }),
              },
            }),
            (t) => t.close(),
          );
          await createClient(TestService, transport).unaryCall({ responseSize: 0 });
          // Gone for good, without DISCONNECT: what the broker sees of a crash.
          proxy.refuse(true);
          proxy.resetAll();
          await transport.close();
        };
        for (let i = 0; i < 3; i++) await vanish();
        await statistics.until("clients/disconnected", (n) => n === 0, "random ids left nothing");

        const clientId = `caller-${protocolVersion}`;
        await vanish(clientId);
        // MQTT 5 keeps the session of an id that comes back (60 s at most);
        // on MQTT 3.1.1 a process's first connection is clean, so a caller
        // that dies before its first reconnect leaves nothing.
        const kept = protocolVersion === 5 ? 1 : 0;
        await statistics.until("clients/disconnected", (n) => n === kept, "the caller's session");
        const again = closer.add(
          createMqttTransport({
            serverId,
            mqtt: { url: broker.url, protocolVersion, reconnectPeriod: 200, clientId },
          }),
          (t) => t.close(),
        );
        await createClient(TestService, again).unaryCall({ responseSize: 0 });
        await statistics.until("clients/disconnected", (n) => n === 0, "taken over");
      });
    });
  }
});
