/**
 * What only Mosquitto can show: its default per-client queue limit (QoS 1
 * messages past `max_queued_messages`, 1000, are dropped silently), shared
 * subscriptions for replicas, and MQTT 5's CONNACK maximum packet size.
 */
import { createClient } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type MosquittoBroker, mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, startServer, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

forBrokersWhere(
  (t) => t.kind === "mosquitto",
  (target) => {
    describe("flow control against Mosquitto's default queue", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("a server stream of 50,000 messages reaches a slow consumer complete, in order, once each", async () => {
        const serverId = uniqueServerId("flood");
        const server = await startServer(closer, target, { serverId });
        server.service(TestService, {
          async *streamingOutputCall() {
            for (let i = 0; i < 50_000; i++)
              yield { payload: { body: new Uint8Array([i & 0xff, (i >> 8) & 0xff, i >> 16]) } };
          },
        });
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        let next = 0;
        for await (const res of client.streamingOutputCall({}, { timeoutMs: 120_000 })) {
          const b = res.payload?.body ?? new Uint8Array(3);
          const i = (b[0] ?? 0) | ((b[1] ?? 0) << 8) | ((b[2] ?? 0) << 16);
          expect(i).toBe(next);
          next++;
          // A deliberately slow consumer: the producer must wait, not overrun the broker's queue.
          if (next % 250 === 0) await new Promise((r) => setTimeout(r, 5));
        }
        expect(next).toBe(50_000);
      }, 120_000);

      it("a client stream of 20,000 messages into a slow handler arrives complete and in order", async () => {
        const serverId = uniqueServerId("upflood");
        const server = await startServer(closer, target, { serverId });
        server.service(TestService, {
          async streamingInputCall(requests) {
            let next = 0;
            for await (const r of requests) {
              const b = r.payload?.body ?? new Uint8Array(2);
              if (((b[0] ?? 0) | ((b[1] ?? 0) << 8)) !== next % 65536)
                throw new Error(`message ${next} out of order`);
              next++;
              if (next % 250 === 0) await new Promise((res) => setTimeout(res, 5));
            }
            return { aggregatedPayloadSize: next };
          },
        });
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        async function* flood() {
          for (let i = 0; i < 20_000; i++)
            yield { payload: { body: new Uint8Array([i & 0xff, (i >> 8) & 0xff]) } };
        }
        const res = await client.streamingInputCall(flood(), { timeoutMs: 120_000 });
        expect(res.aggregatedPayloadSize).toBe(20_000);
      }, 120_000);
    });

    describe("replicas behind a shared subscription", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("spreads calls across replicas and keeps each stream on the replica that took it", async () => {
        const serverId = uniqueServerId("replicas");
        const served = [0, 0];
        for (const replica of [0, 1]) {
          const server = await startServer(closer, target, { serverId, shared: true });
          server.service(TestService, {
            async streamingInputCall(requests) {
              served[replica] = (served[replica] ?? 0) + 1;
              let size = 0;
              for await (const r of requests) size += r.payload?.body.byteLength ?? 0;
              return { aggregatedPayloadSize: size };
            },
            async *fullDuplexCall(requests) {
              served[replica] = (served[replica] ?? 0) + 1;
              for await (const r of requests)
                yield { payload: { body: new Uint8Array(r.payload?.body.byteLength ?? 0) } };
            },
          });
        }
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        async function* pieces(n: number) {
          for (let i = 1; i <= n; i++) yield { payload: { body: new Uint8Array(i) } };
        }
        const sums = await Promise.all(
          Array.from({ length: 20 }, () =>
            client.streamingInputCall(pieces(10), { timeoutMs: 20_000 }),
          ),
        );
        expect(sums.map((s) => s.aggregatedPayloadSize)).toEqual(Array(20).fill(55));
        const echoes: number[] = [];
        for await (const r of client.fullDuplexCall(pieces(30), { timeoutMs: 20_000 }))
          echoes.push(r.payload?.body.byteLength ?? -1);
        expect(echoes).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
        expect(served[0]).toBeGreaterThan(0);
        expect(served[1]).toBeGreaterThan(0);
        expect((served[0] ?? 0) + (served[1] ?? 0)).toBe(21);
      });

      it("a burst of concurrent unary calls is spread, not coalesced onto one replica", async () => {
        const serverId = uniqueServerId("burst");
        const served = [0, 0];
        for (const replica of [0, 1]) {
          const server = await startServer(closer, target, { serverId, shared: true });
          server.service(TestService, {
            unaryCall() {
              served[replica] = (served[replica] ?? 0) + 1;
              return {};
            },
          });
        }
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        await Promise.all(Array.from({ length: 40 }, () => client.unaryCall({})));
        // Mosquitto hands each publish of a share group to the next member:
        // one publish per Open spreads the burst evenly.
        expect(served[0]).toBeGreaterThanOrEqual(10);
        expect(served[1]).toBeGreaterThanOrEqual(10);
      });
    });
  },
);

forBrokersWhere(
  (t) => t.kind === "mosquitto",
  (target) => {
    describe("heartbeats on replicas", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("a long unary call on a replicated server keeps its owner's heartbeats and completes", async () => {
        const serverId = uniqueServerId("longunary");
        for (let i = 0; i < 3; i++) {
          const server = await startServer(closer, target, { serverId, shared: true });
          server.service(TestService, {
            async unaryCall() {
              await new Promise((r) => setTimeout(r, 1500));
              return { payload: { body: new Uint8Array(1) } };
            },
          });
        }
        // Pings every 150 ms: a replica that heard none for 450 ms would cancel.
        const client = createClient(
          TestService,
          startTransport(closer, target, { serverId, heartbeatMs: 150 }),
        );
        const results = await Promise.all(
          Array.from({ length: 4 }, () => client.unaryCall({}, { timeoutMs: 20_000 })),
        );
        expect(results.every((r) => r.payload?.body.byteLength === 1)).toBe(true);
      });
    });
  },
);

describe.runIf(mosquittoAvailable())("MQTT 5 maximum packet size on Mosquitto", () => {
  let broker: MosquittoBroker;
  const closer = new Closer();
  beforeAll(async () => {
    broker = await startMosquitto({ extraConfig: "max_packet_size 8192" });
  });
  afterEach(() => closer.closeAll());
  afterAll(() => broker.stop());

  it("chunks to the broker's CONNACK limit in both directions", async () => {
    const target = {
      name: "mosquitto-5-small-packets",
      kind: "mosquitto" as const,
      url: broker.url,
      mqttOptions: { protocolVersion: 5 as const },
      sharedSubscriptions: true,
    };
    const serverId = uniqueServerId("small");
    const server = await startServer(closer, target, { serverId });
    server.service(TestService, interopService);
    const client = createClient(TestService, startTransport(closer, target, { serverId }));
    const res = await client.unaryCall({
      responseSize: 314_159,
      payload: { body: new Uint8Array(271_828) },
    });
    expect(res.payload?.body.byteLength).toBe(314_159);
  });
});
