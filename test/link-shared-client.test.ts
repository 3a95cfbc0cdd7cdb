/**
 * An application's own `MqttClient`, shared with mqrpc: transports and
 * servers made on it and closed again leave it as they found it (no
 * subscriptions they alone needed, no listeners, no routes), so it can
 * carry any number of them one after another.
 */
import { createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, startEmbeddedBroker } from "@mqrpc/runtime";
import { connect, type MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MqttLink } from "../packages/runtime/src/link/mqtt-link.js";
import { type BrokerTarget, forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import {
  Closer,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

const EVENTS = ["message", "connect", "close", "packetsend", "packetreceive", "error"] as const;

/** What mqrpc may change on a shared client: its listeners and listener limit. */
function footprint(client: MqttClient) {
  return {
    listeners: Object.fromEntries(EVENTS.map((e) => [e, client.listenerCount(e)])),
    maxListeners: client.getMaxListeners(),
  };
}

async function connected(client: MqttClient): Promise<MqttClient> {
  if (!client.connected) await new Promise((resolve) => client.once("connect", resolve));
  return client;
}

const id = () => Math.random().toString(36).slice(2, 10);

/** The application's own client on `target`. */
function appClient(target: BrokerTarget): MqttClient {
  const { url, ...options } = mqttOptions(target, `app-${id()}`);
  return connect(url, options);
}

forEachBroker((target) => {
  describe("a shared MqttClient", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("carries 20 transports one after another: each calls, closes and leaves the client as it was", async () => {
      const serverId = uniqueServerId("shared-cycles");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      // A server's own client, made from options: connected, with the server's client id.
      expect(server.mqttClient.connected).toBe(true);
      expect(server.mqttClient.options.clientId).toBe(server.instanceId);
      const app = closer.add(await connected(appClient(target)), (c) => c.endAsync());
      const before = footprint(app);
      const failures: string[] = [];
      const footprints: ReturnType<typeof footprint>[] = [];
      for (let cycle = 0; cycle < 20; cycle++) {
        const transport = createMqttTransportOn(app, serverId);
        try {
          const res = await createClient(TestService, transport).unaryCall(
            { responseSize: cycle },
            { timeoutMs: 10_000 },
          );
          expect(res.payload?.body.byteLength).toBe(cycle);
        } catch (e) {
          failures.push(`cycle ${cycle}: ${String(e)}`);
        }
        await transport.close();
        footprints.push(footprint(app));
      }
      expect(failures).toEqual([]);
      expect(footprints).toEqual(Array.from({ length: 20 }, () => before));
      expect(app.connected).toBe(true);
    });

    it("carries servers one after another, and transports to them, and is left as it was", async () => {
      const serverId = uniqueServerId("shared-servers");
      const app = closer.add(await connected(appClient(target)), (c) => c.endAsync());
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, waitForServer: true }),
      );
      const before = footprint(app);
      for (let cycle = 0; cycle < 5; cycle++) {
        const server = await createMqttServerOn(app, serverId);
        expect(server.mqttClient).toBe(app);
        server.service(TestService, interopService);
        const res = await client.unaryCall({ responseSize: cycle }, { timeoutMs: 10_000 });
        expect(res.payload?.body.byteLength).toBe(cycle);
        // A transport on the same client as the server, too.
        const local = createMqttTransportOn(app, serverId);
        const again = await createClient(TestService, local).unaryCall(
          { responseSize: 2 },
          { timeoutMs: 10_000 },
        );
        expect(again.payload?.body.byteLength).toBe(2);
        await local.close();
        await server.close();
        expect(footprint(app)).toEqual(before);
      }
    });
  });
});

/** A transport on an application's client; the test closes it itself. */
function createMqttTransportOn(client: MqttClient, serverId: string) {
  return createMqttTransport({ mqtt: client, serverId });
}

/** A server on an application's client (which has no last will of mqrpc's). */
function createMqttServerOn(client: MqttClient, serverId: string) {
  return createMqttServer({ mqtt: client, serverId, logger: { warn: () => {} } });
}

describe("MqttLink on a shared MqttClient (embedded broker)", () => {
  let broker: Awaited<ReturnType<typeof startEmbeddedBroker>>;
  const closer = new Closer();
  beforeAll(async () => {
    broker = await startEmbeddedBroker();
  });
  afterEach(() => closer.closeAll());
  afterAll(() => broker?.close());

  const open = async (label: string) =>
    closer.add(
      await connected(connect(broker.url, { clientId: `${label}-${id()}`, reconnectPeriod: 100 })),
      (c) => c.endAsync(),
    );

  /**
   * Whether `client` still receives `topic`: a publisher sends on it, then on
   * a control topic the application itself subscribed; the broker delivers
   * one publisher's messages in order, so the control message arriving first
   * means the other one is not coming.
   */
  async function receives(client: MqttClient, publisher: MqttClient, topic: string) {
    const control = `${topic}/control/${id()}`;
    await client.subscribeAsync(control, { qos: 1 });
    let got = false;
    const seen = new Promise<void>((resolve) => {
      const onMessage = (t: string) => {
        if (t === topic) got = true;
        if (t !== control) return;
        client.off("message", onMessage);
        resolve();
      };
      client.on("message", onMessage);
    });
    await publisher.publishAsync(topic, "probe", { qos: 1 });
    await publisher.publishAsync(control, "control", { qos: 1 });
    await seen;
    await client.unsubscribeAsync(control);
    return got;
  }

  it("counts subscriptions per filter and removes its listeners with the last reference", async () => {
    const app = await open("app");
    const publisher = await open("pub");
    const topic = `link/${id()}/x`;
    const before = footprint(app);

    const a = MqttLink.acquire(app);
    const b = MqttLink.acquire(app);
    expect(b).toBe(a);
    await a.subscribe(topic);
    await b.subscribe(topic);
    const routed: string[] = [];
    const unroute = a.routeExact(topic, (t) => routed.push(t));

    await a.unsubscribe(topic);
    await a.release();
    expect(await receives(app, publisher, topic)).toBe(true);
    expect(routed).toEqual([topic]);

    // The last reference unsubscribes what is left and detaches the link.
    unroute();
    await b.release();
    expect(await receives(app, publisher, topic)).toBe(false);
    expect(footprint(app)).toEqual(before);
  });

  it("leaves subscribed a filter the application had subscribed itself", async () => {
    const app = await open("app");
    const publisher = await open("pub");
    const topic = `link/${id()}/app`;
    await app.subscribeAsync(topic, { qos: 1 });
    const link = MqttLink.acquire(app);
    await link.subscribe(topic);
    await link.unsubscribe(topic);
    expect(await receives(app, publisher, topic)).toBe(true);
    await link.subscribe(topic);
    await link.release();
    expect(await receives(app, publisher, topic)).toBe(true);
  });

  it("a link made again on the client subscribes afresh and gets retained messages again", async () => {
    const app = await open("app");
    const publisher = await open("pub");
    const topic = `link/${id()}/retained`;
    await publisher.publishAsync(topic, "kept", { qos: 1, retain: true });
    try {
      for (let cycle = 0; cycle < 3; cycle++) {
        const link = MqttLink.acquire(app);
        const retained = new Promise<string>((resolve) => {
          link.routeExact(topic, (_t, payload) => resolve(Buffer.from(payload).toString()));
        });
        await link.subscribe(topic);
        expect(await retained).toBe("kept");
        await link.release();
      }
    } finally {
      await publisher.publishAsync(topic, "", { qos: 1, retain: true });
    }
  });

  it("shares resources by key and disposes of each with its last share", async () => {
    const app = await open("app");
    const link = MqttLink.acquire(app);
    const other = MqttLink.acquire(app);
    const created: string[] = [];
    const disposed: string[] = [];
    const make = (key: string) => () => {
      created.push(key);
      return { key, dispose: () => disposed.push(key) };
    };

    const first = link.acquireResource("r", make("r"));
    const second = other.acquireResource("r", make("r"));
    expect(second.value).toBe(first.value);
    expect(created).toEqual(["r"]);
    await first.release();
    await first.release(); // idempotent: does not give back the other share
    expect(disposed).toEqual([]);
    await second.release();
    expect(disposed).toEqual(["r"]);

    // An explicit dispose wins over the object's own; a new share creates anew.
    const explicit = link.acquireResource("r", make("r"), (v) =>
      disposed.push(`explicit ${v.key}`),
    );
    expect(created).toEqual(["r", "r"]);
    await explicit.release();
    expect(disposed).toEqual(["r", "explicit r"]);

    // Shares still held when the link's last reference goes are disposed of then,
    // as are objects from resource() (held for the link's lifetime).
    link.acquireResource("held", make("held"));
    link.resource("legacy", make("legacy"));
    await link.release();
    expect(disposed).toEqual(["r", "explicit r"]);
    await other.release();
    expect(disposed.sort()).toEqual(["explicit r", "held", "legacy", "r"]);
  });
});
