/**
 * A publish larger than the broker's maximum packet size on MQTT 3.1.1: the
 * broker can only close the connection on it, and MQTT.js would send it
 * again first thing on every reconnect, poisoning the connection for good.
 * The link recognises it, fails the call that made it with
 * RESOURCE_EXHAUSTED, drops it from MQTT.js's outgoing store and chunks
 * later messages below the limit it learned. Mosquitto with
 * `max_packet_size 20000` closes the connection on a larger packet.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MqttLink } from "../packages/runtime/src/link/mqtt-link.js";
import { type MosquittoBroker, mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import type { BrokerTarget } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { interopService } from "./support/interop-service.js";
import {
  Closer,
  deferred,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

const LIMIT = 20_000;
const BIG = 30_000;

describe.runIf(mosquittoAvailable())("a publish over Mosquitto's max_packet_size", () => {
  let broker: MosquittoBroker;
  const closer = new Closer();
  beforeAll(async () => {
    broker = await startMosquitto({ extraConfig: `max_packet_size ${LIMIT}` });
  });
  afterEach(() => closer.closeAll());
  afterAll(() => broker?.stop());

  const target = (protocolVersion: 4 | 5): BrokerTarget => ({
    name: `mosquitto-${protocolVersion}-max-packet-${LIMIT}`,
    kind: "mosquitto",
    url: broker.url,
    mqttOptions: { protocolVersion },
    sharedSubscriptions: true,
    protocolVersion,
  });

  async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
    try {
      await promise;
    } catch (e) {
      return ConnectError.from(e);
    }
    throw new Error("the call succeeded");
  }

  it("MQTT 3.1.1, request: fails its own call with RESOURCE_EXHAUSTED, then later large calls are chunked", async () => {
    const serverId = uniqueServerId("oversize-request");
    const server = await startServer(closer, target(4), { serverId });
    server.service(TestService, interopService);
    const client = createClient(TestService, startTransport(closer, target(4), { serverId }));
    await client.unaryCall({ responseSize: 1 });

    // A deadline far away: the failure must come from the refusal, not from it.
    const error = await rejection(
      client.unaryCall({ payload: { body: new Uint8Array(BIG) } }, { timeoutMs: 20_000 }),
    );
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.rawMessage).toMatch(/closed the connection on a publish of 30\d{3} bytes/);
    expect(error.rawMessage).toMatch(/set maxPublishBytes to the broker's maximum packet size/);

    // The refused publish is gone from MQTT.js's store: the connection works,
    // and a message as large goes in chunks below the limit learned.
    const chunked = await client.unaryCall(
      { responseSize: 3, payload: { body: new Uint8Array(BIG) } },
      { timeoutMs: 10_000 },
    );
    expect(chunked.payload?.body.byteLength).toBe(3);
    for (let i = 0; i < 5; i++) {
      const small = await client.unaryCall({ responseSize: i }, { timeoutMs: 10_000 });
      expect(small.payload?.body.byteLength).toBe(i);
    }
  });

  it("MQTT 3.1.1, response: the server logs the refusal, stays online, and chunks later responses", async () => {
    const serverId = uniqueServerId("oversize-response");
    const refused = deferred<string>();
    const server = await startServer(closer, target(4), {
      serverId,
      logger: {
        warn: (line) => {
          if (/PacketTooLargeError/.test(line)) refused.resolve(line);
        },
      },
    });
    server.service(TestService, interopService);
    const client = createClient(TestService, startTransport(closer, target(4), { serverId }));
    const other = createClient(TestService, startTransport(closer, target(4), { serverId }));
    await client.unaryCall({ responseSize: 1 });

    // The response never reaches the caller (docs/PROTOCOL.md 17.2: a server
    // whose reply publish fails logs it), but only this call is lost.
    const lost = rejection(client.unaryCall({ responseSize: BIG }, { timeoutMs: 3000 }));
    const warning = await refused.promise;
    expect(warning).toMatch(/closed the connection on a publish of 30\d{3} bytes/);
    expect(warning).toMatch(/maxPublishBytes/);
    expect([Code.DeadlineExceeded, Code.ResourceExhausted]).toContain((await lost).code);

    const fromOther = await other.unaryCall({ responseSize: 7 }, { timeoutMs: 10_000 });
    expect(fromOther.payload?.body.byteLength).toBe(7);
    const large = await client.unaryCall({ responseSize: BIG }, { timeoutMs: 10_000 });
    expect(large.payload?.body.byteLength).toBe(BIG);
    const largeToOther = await other.unaryCall({ responseSize: BIG }, { timeoutMs: 10_000 });
    expect(largeToOther.payload?.body.byteLength).toBe(BIG);
  });

  it("MQTT 5: the CONNACK limit chunks both directions, with nothing refused", async () => {
    const serverId = uniqueServerId("oversize-v5");
    const warnings: string[] = [];
    const server = await startServer(closer, target(5), {
      serverId,
      logger: { warn: (line) => warnings.push(line) },
    });
    server.service(TestService, interopService);
    const client = createClient(TestService, startTransport(closer, target(5), { serverId }));
    const res = await client.unaryCall(
      { responseSize: BIG, payload: { body: new Uint8Array(BIG) } },
      { timeoutMs: 10_000 },
    );
    expect(res.payload?.body.byteLength).toBe(BIG);
    expect(warnings.filter((w) => /failed/.test(w))).toEqual([]);
  });

  it("MqttLink, MQTT 3.1.1: the refused publish leaves MQTT.js's store after two closes and is never sent again", async () => {
    const link = MqttLink.acquire({
      url: broker.url,
      protocolVersion: 4,
      clientId: `oversize-link-${process.pid}`,
      reconnectPeriod: 50,
    });
    closer.add(link, (l) => l.release());
    await link.connected();
    let closes = 0;
    link.client.on("close", () => closes++);
    const sent = new Map<number, number>();
    link.client.on("packetsend", (p) => {
      if (p.cmd === "publish") sent.set(p.payload.length, (sent.get(p.payload.length) ?? 0) + 1);
    });
    await link.publish("oversize/link", new Uint8Array(1000));
    expect(link.brokerMaxPacketSize).toBeUndefined();

    const refused = await link.publish("oversize/link", new Uint8Array(BIG)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toMatchObject({ name: "PacketTooLargeError", closedByBroker: true });
    const { packetBytes, limitBytes } = refused as { packetBytes: number; limitBytes: number };
    // Topic "oversize/link" (13 bytes): fixed header 1 + 3, topic 2 + 13, packet id 2.
    expect(packetBytes).toBe(BIG + 21);
    expect(limitBytes).toBe(Math.floor(packetBytes / 2));
    expect(link.brokerMaxPacketSize).toBe(limitBytes);
    expect(closes).toBe(2);
    expect(Object.keys(link.client.outgoing)).toEqual([]);

    // The next connection replays nothing before this publish, and it fits.
    await link.publish("oversize/link", new Uint8Array(1000));
    expect(closes).toBe(2);
    expect(sent.get(BIG)).toBe(2);
    // Over the learned limit: refused before sending, the connection untouched.
    await expect(link.publish("oversize/link", new Uint8Array(BIG))).rejects.toMatchObject({
      closedByBroker: false,
    });
    expect(sent.get(BIG)).toBe(2);
    expect(closes).toBe(2);
  });

  it("MqttLink, MQTT 5: a publish the broker disconnects over (reason 0x95) is dropped at the first close", async () => {
    const link = MqttLink.acquire({
      url: broker.url,
      protocolVersion: 5,
      clientId: `oversize-v5-told-${process.pid}`,
      reconnectPeriod: 50,
    });
    closer.add(link, (l) => l.release());
    await link.connected();
    let closes = 0;
    link.client.on("close", () => closes++);
    // Made directly on the client (as an application sharing it might),
    // so nothing checked it against the CONNACK limit.
    const removed = await new Promise<Error | undefined>((resolve) =>
      link.client.publish("oversize/v5", Buffer.alloc(BIG), { qos: 1 }, (e) => resolve(e)),
    );
    expect(removed?.message).toBe("Message removed");
    expect(closes).toBe(1);
    // The limit it announced explains the refusal: nothing new to learn.
    await link.connected();
    expect(link.brokerMaxPacketSize).toBe(LIMIT);
    await link.publish("oversize/v5", new Uint8Array(10));
    expect(closes).toBe(1);
  });

  it("MQTT 5: a publish over the CONNACK limit is refused before it is sent", async () => {
    const link = MqttLink.acquire({
      url: broker.url,
      protocolVersion: 5,
      clientId: `oversize-v5-link-${process.pid}`,
    });
    closer.add(link, (l) => l.release());
    await link.connected();
    expect(link.brokerMaxPacketSize).toBe(LIMIT);
    const sent: number[] = [];
    link.client.on("packetsend", (p) => {
      if (p.cmd === "publish") sent.push(p.messageId ?? 0);
    });
    await expect(link.publish("oversize/v5", new Uint8Array(BIG))).rejects.toMatchObject({
      name: "PacketTooLargeError",
      closedByBroker: false,
      limitBytes: LIMIT,
    });
    await link.publish("oversize/v5", new Uint8Array(10));
    expect(sent).toHaveLength(1);
    expect(link.client.connected).toBe(true);
  });
});

describe.runIf(mosquittoAvailable())("a link reset with a large publish in flight", () => {
  let broker: MosquittoBroker;
  const closer = new Closer();
  beforeAll(async () => {
    broker = await startMosquitto();
  });
  afterEach(() => closer.closeAll());
  afterAll(() => broker?.stop());

  it("is not taken for a refusal: the publish is sent again and acknowledged", async () => {
    const proxy = closer.add(await FaultProxy.start(broker.url), (p) => p.close());
    const link = MqttLink.acquire({
      url: proxy.url,
      protocolVersion: 4,
      clientId: `oversize-reset-${process.pid}`,
      reconnectPeriod: 20,
    });
    closer.add(link, (l) => l.release());
    expect(link.client).toBeInstanceOf(MqttClient);
    await link.connected();
    await link.publish("oversize/reset", new Uint8Array(100));
    // The broker never sees the publish before the connection is reset.
    proxy.stall();
    const written = new Promise<void>((resolve) => {
      const onSend = (p: { cmd: string }) => {
        if (p.cmd !== "publish") return;
        link.client.off("packetsend", onSend);
        resolve();
      };
      link.client.on("packetsend", onSend);
    });
    const acknowledged = link.publish("oversize/reset", new Uint8Array(BIG));
    await written;
    const closed = new Promise<void>((resolve) => link.client.once("close", () => resolve()));
    proxy.resetAll();
    await closed;
    proxy.resume();
    await acknowledged;
    expect(link.brokerMaxPacketSize).toBeUndefined();
  });
});
