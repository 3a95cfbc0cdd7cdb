/**
 * A replica of a shared server dies (its link is cut for good, as by
 * SIGKILL: the broker sees the connection drop and publishes its will).
 * Its calls in flight fail fast with UNAVAILABLE rather than at their
 * deadline, the other replica's calls complete, and new calls go only to
 * the replica that lives: a replica's session is clean, so the broker does
 * not keep handing it work while it is gone (issue 10, item 1).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import {
  Closer,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

forBrokersWhere(
  (t) => t.kind === "mosquitto",
  (target) => {
    describe("a replica that dies", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("fails its calls in flight fast with UNAVAILABLE, and new calls go only to the live replica", async () => {
        const serverId = uniqueServerId("replicas");
        const proxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const started = [0, 0];
        const impl = (replica: number) => ({
          async unaryCall(_req: unknown, ctx: { signal: AbortSignal }) {
            started[replica] = (started[replica] ?? 0) + 1;
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, 2000);
              ctx.signal.addEventListener("abort", () => {
                clearTimeout(timer);
                resolve();
              });
            });
            return { payload: { body: new Uint8Array(1) } };
          },
        });
        const live = await startServer(closer, target, { serverId, shared: true });
        live.service(TestService, impl(0));
        const doomed = await startServer(closer, target, {
          serverId,
          shared: true,
          mqtt: { ...mqttOptions(target), url: proxy.url, reconnectPeriod: 200 },
          shutdownTimeoutMs: 0,
          logger: { warn: () => {} },
        });
        doomed.service(TestService, impl(1));
        const client = createClient(
          TestService,
          startTransport(closer, target, { serverId, heartbeatMs: 500 }),
        );
        const calls = Array.from({ length: 40 }, () =>
          client.unaryCall({}, { timeoutMs: 30_000 }).then(
            () => ({ code: undefined as Code | undefined, at: Date.now() }),
            (e: unknown) => ({ code: ConnectError.from(e).code, at: Date.now() }),
          ),
        );
        await expect.poll(() => (started[0] ?? 0) + (started[1] ?? 0)).toBe(40);
        expect(started[1]).toBeGreaterThan(0);
        // The doomed replica's link is cut and never comes back.
        const killedAt = Date.now();
        proxy.refuse(true);
        proxy.resetAll();
        const outcomes = await Promise.all(calls);
        const failed = outcomes.filter((o) => o.code !== undefined);
        // Its calls fail with UNAVAILABLE, long before the 30 s deadline; the others succeed.
        expect(failed.length).toBe(started[1]);
        expect(failed.every((o) => o.code === Code.Unavailable)).toBe(true);
        expect(Math.max(...failed.map((o) => o.at - killedAt))).toBeLessThan(15_000);
        // New calls: all run, all on the live replica.
        const before = started[0] ?? 0;
        const fresh = await Promise.all(
          Array.from({ length: 20 }, () => client.unaryCall({}, { timeoutMs: 10_000 })),
        );
        expect(fresh).toHaveLength(20);
        expect((started[0] ?? 0) - before).toBe(20);
      }, 60_000);
    });
  },
);
