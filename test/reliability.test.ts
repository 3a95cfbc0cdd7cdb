/**
 * Calls survive what edge links do: connections reset under the caller and
 * the server while calls run, and a server that vanishes fails its calls
 * fast. Every fault goes through a TCP proxy per MQTT client.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import { type BrokerTarget, forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import {
  Closer,
  deferred,
  startServer,
  startTransport,
  uniqueServerId,
  untilAborted,
} from "./support/rpc-fixture.js";

/** Reconnect fast: the faults come every few hundred milliseconds. */
function viaProxy(proxy: FaultProxy, protocolVersion: 4 | 5, clientId: string) {
  return { url: proxy.url, protocolVersion, clientId, reconnectPeriod: 20, connectTimeout: 2000 };
}

const id = () => Math.random().toString(36).slice(2, 10);

forBrokersWhere(
  () => true,
  (target) => {
    describe("reconnects", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      async function proxiedPair(label: string) {
        const serverProxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const clientProxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const serverId = uniqueServerId(label);
        const v = target.mqttOptions.protocolVersion;
        const server = await startServer(closer, target, {
          serverId,
          mqtt: viaProxy(serverProxy, v, `srv-${id()}`),
          logger: { warn: () => {} },
        });
        const transport = startTransport(closer, target, {
          serverId,
          mqtt: viaProxy(clientProxy, v, `cli-${id()}`),
          // A reset server is back within milliseconds; on a loaded machine
          // NATS can take longer to re-deliver its presence, which must not
          // read as "gone" here.
          offlineGraceMs: 15_000,
        });
        return { server, transport, proxies: [serverProxy, clientProxy] };
      }

      it("2,000 unary calls with both connections reset every 300 ms: all succeed, each handler runs once", async () => {
        const { server, transport, proxies } = await proxiedPair("resets");
        const runs = new Map<number, number>();
        server.service(TestService, {
          async unaryCall(req) {
            const n = req.responseSize;
            runs.set(n, (runs.get(n) ?? 0) + 1);
            // Some work per call, so that the run spans many resets.
            await new Promise((r) => setTimeout(r, 10));
            return { payload: { body: new Uint8Array(4) } };
          },
        });
        const client = createClient(TestService, transport);
        await client.unaryCall({ responseSize: -1 });
        const resets = setInterval(() => {
          for (const p of proxies) p.resetAll();
        }, 300);
        try {
          const total = 2000;
          const concurrency = 8;
          let next = 0;
          let ok = 0;
          await Promise.all(
            Array.from({ length: concurrency }, async () => {
              while (next < total) {
                const n = next++;
                await client.unaryCall({ responseSize: n }, { timeoutMs: 30_000 });
                ok++;
              }
            }),
          );
          expect(ok).toBe(total);
        } finally {
          clearInterval(resets);
        }
        const duplicates = [...runs.entries()].filter(([n, count]) => n >= 0 && count !== 1);
        expect(duplicates).toEqual([]);
        expect([...runs.keys()].filter((n) => n >= 0)).toHaveLength(2000);
        // The faults really happened during the run.
        expect(proxies[0]?.connections).toBeGreaterThanOrEqual(4);
        expect(proxies[1]?.connections).toBeGreaterThanOrEqual(4);
      }, 120_000);

      it("a 20,000-message server stream across five resets arrives complete, in order, once", async () => {
        const { server, transport, proxies } = await proxiedPair("streamresets");
        server.service(TestService, {
          async *streamingOutputCall() {
            for (let i = 0; i < 20_000; i++) {
              yield { payload: { body: new Uint8Array([i & 0xff, (i >> 8) & 0xff]) } };
            }
          },
        });
        const client = createClient(TestService, transport);
        let next = 0;
        for await (const res of client.streamingOutputCall({}, { timeoutMs: 60_000 })) {
          const b = res.payload?.body ?? new Uint8Array(2);
          expect((b[0] ?? 0) | ((b[1] ?? 0) << 8)).toBe(next & 0xffff);
          next++;
          if (next % 3500 === 0 && next <= 17_500) {
            for (const p of proxies) p.resetAll();
          }
        }
        expect(next).toBe(20_000);
        expect(proxies[1]?.connections).toBeGreaterThanOrEqual(6);
      }, 120_000);
    });

    describe("dead peers", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("a server that vanishes fails its callers' calls with UNAVAILABLE well before their deadline", async () => {
        const serverProxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const serverId = uniqueServerId("vanish");
        const started = deferred();
        const server = await startServer(closer, target, {
          serverId,
          mqtt: viaProxy(serverProxy, target.mqttOptions.protocolVersion, `srv-${id()}`),
          shutdownTimeoutMs: 0,
          logger: { warn: () => {} },
        });
        server.service(TestService, {
          unaryCall: (_req, ctx) => {
            started.resolve();
            return untilAborted(ctx.signal);
          },
        });
        const client = createClient(
          TestService,
          startTransport(closer, target, { serverId, offlineGraceMs: 1000 }),
        );
        const call = client
          .unaryCall({}, { timeoutMs: 120_000 })
          .catch((e: unknown) => ConnectError.from(e));
        await started.promise;
        serverProxy.refuse(true);
        serverProxy.resetAll();
        const err = await call;
        expect((err as ConnectError).code).toBe(Code.Unavailable);
        expect((err as ConnectError).rawMessage).toContain("went offline");
      });

      it("a caller that vanishes without DISCONNECT has its call ended on the server", async () => {
        const clientProxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const serverId = uniqueServerId("callergone");
        const aborted = deferred<unknown>();
        const server = await startServer(closer, target, { serverId });
        server.service(TestService, {
          async *fullDuplexCall(_requests, ctx) {
            yield await untilAborted(ctx.signal, aborted);
          },
        });
        const transport = startTransport(closer, target, {
          serverId,
          heartbeatMs: 200,
          mqtt: viaProxy(clientProxy, target.mqttOptions.protocolVersion, `cli-${id()}`),
        });
        const client = createClient(TestService, transport);
        const call = (async () => {
          for await (const _ of client.fullDuplexCall((async function* () {})())) {
            // nothing arrives
          }
        })().catch(() => {});
        // Let the call reach the server, then cut the caller off for good.
        await new Promise((r) => setTimeout(r, 300));
        clientProxy.refuse(true);
        clientProxy.resetAll();
        const reason = ConnectError.from(await aborted.promise);
        expect(reason.code).toBe(Code.Unavailable);
        expect(reason.rawMessage).toContain("no heartbeat from the caller");
        await transport.close();
        await call;
      });
    });
  },
);

describe.runIf(mosquittoAvailable())("Mosquitto restart with persistence", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  async function persistentBroker(transportOptions: { offlineGraceMs?: number } = {}) {
    const broker = await startMosquitto({ persistence: true });
    closer.add(broker, (b) => b.stop());
    const target: BrokerTarget = {
      name: "mosquitto-persistent",
      kind: "mosquitto",
      url: broker.url,
      mqttOptions: { protocolVersion: 5 },
      sharedSubscriptions: true,
    };
    const serverId = uniqueServerId("restart");
    const fast = (clientId: string) => ({
      url: broker.url,
      protocolVersion: 5 as const,
      clientId,
      reconnectPeriod: 50,
    });
    const server = await startServer(closer, target, {
      serverId,
      mqtt: fast(`srv-${id()}`),
      logger: { warn: () => {} },
    });
    const transport = startTransport(closer, target, {
      serverId,
      heartbeatMs: 500,
      mqtt: fast(`cli-${id()}`),
      ...transportOptions,
    });
    return { broker, server, client: createClient(TestService, transport) };
  }

  it("a stream in flight completes across a broker restart", async () => {
    const { broker, server, client } = await persistentBroker();
    server.service(TestService, {
      async *streamingOutputCall() {
        for (let i = 0; i < 20_000; i++)
          yield { payload: { body: new Uint8Array([i & 0xff, (i >> 8) & 0xff]) } };
      },
    });
    let next = 0;
    let restart: Promise<void> | undefined;
    for await (const res of client.streamingOutputCall({}, { timeoutMs: 60_000 })) {
      const b = res.payload?.body ?? new Uint8Array(2);
      expect((b[0] ?? 0) | ((b[1] ?? 0) << 8)).toBe(next & 0xffff);
      next++;
      if (next === 5000) restart = broker.restart();
    }
    await restart;
    expect(next).toBe(20_000);
  }, 90_000);

  it("a batch of unary calls in flight completes across a broker restart, each run once", async () => {
    const { broker, server, client } = await persistentBroker();
    const runs = new Map<number, number>();
    let restart: Promise<void> | undefined;
    server.service(TestService, {
      async unaryCall(req) {
        runs.set(req.responseSize, (runs.get(req.responseSize) ?? 0) + 1);
        if (runs.size === 100) restart = broker.restart();
        await new Promise((r) => setTimeout(r, 5));
        return {};
      },
    });
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, n) =>
        client.unaryCall({ responseSize: n }, { timeoutMs: 60_000 }),
      ),
    );
    await restart;
    expect(restart).toBeDefined();
    expect(results).toHaveLength(300);
    expect([...runs.values()].every((c) => c === 1)).toBe(true);
    expect(runs.size).toBe(300);
  }, 90_000);

  it("a call in flight survives a clean broker shutdown longer than the offline grace", async () => {
    // Mosquitto publishes the server's will (DISCONNECTED) as it shuts down,
    // before the caller's link drops; the caller cannot see the server come
    // back until its own link is back, so the grace must not run meanwhile.
    const { broker, server, client } = await persistentBroker({ offlineGraceMs: 200 });
    let runs = 0;
    const started = deferred();
    const finish = deferred();
    server.service(TestService, {
      async unaryCall() {
        runs++;
        started.resolve();
        await finish.promise;
        return { payload: { body: new Uint8Array([7]) } };
      },
    });
    const call = client.unaryCall({}, { timeoutMs: 60_000 });
    await started.promise;
    await broker.restart({ downMs: 2000 });
    finish.resolve();
    const response = await call;
    expect([...(response.payload?.body ?? [])]).toEqual([7]);
    expect(runs).toBe(1);
  }, 60_000);
});
