/**
 * Faults on the real path: MQTT links reset mid-transfer (through the
 * project's fault proxy), a Mosquitto restart with persistence, and a peer
 * process killed. A transfer either completes byte-exact on both ends or
 * fails on both ends, never silently; a dead peer is noticed within the
 * documented bound (docs/NET-BRIDGE.md "Limits").
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  type MosquittoBroker,
  mosquittoAvailable,
  startMosquitto,
} from "../../../test/brokers/mosquitto.js";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { FaultProxy } from "../../../test/support/fault-proxy.js";
import { Closer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { connectMqtt, listenMqtt, type MqttSocket } from "../src/index.js";
import {
  closed,
  nextConnection,
  nextError,
  verifyStream,
  writeStream,
} from "./support/bridge-fixture.js";
import { startBridgeChild } from "./support/bridge-process.js";

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

/** How an echo round trip ended on each side. */
interface RoundTrip {
  readonly caller: "complete" | string;
  readonly server: "complete" | string;
}

/**
 * Round-trips SIZE bytes through an echo behind the listener; calls
 * `fault` once the caller has read `at` bytes back. Each side reports
 * "complete" (every byte arrived in order, and the stream ended) or its
 * error code.
 */
async function echoRoundTrip(
  caller: MqttSocket,
  server: Promise<MqttSocket>,
  at: number,
  fault: () => Promise<void> | void,
): Promise<RoundTrip> {
  let faulted: Promise<void> | undefined;
  const serverSide = server.then(
    (socket) =>
      new Promise<string>((resolve) => {
        socket.pipe(socket);
        socket.on("error", (e: Error & { code?: string }) => resolve(e.code ?? e.message));
        socket.on("close", () => resolve(socket.errored === null ? "complete" : "error"));
      }),
  );
  const writing = writeStream(caller, SIZE).catch(() => {});
  const reading = verifyStream(caller, {
    onChunk: (n) => {
      if (faulted === undefined && n >= at) {
        faulted = Promise.resolve(fault());
        return faulted;
      }
      return undefined;
    },
  }).then(
    (n) => (n === SIZE ? "complete" : `short: ${n}`),
    (e: Error & { code?: string }) => e.code ?? e.message,
  );
  const [callerEnd, serverEnd] = await Promise.all([reading, serverSide, writing]);
  await faulted;
  return { caller: callerEnd, server: serverEnd };
}

/** Either both ends got every byte, or both ends failed: never one silently short. */
function expectNoSilentLoss(trip: RoundTrip): void {
  const complete = [trip.caller, trip.server].filter((end) => end === "complete").length;
  expect(complete === 2 || complete === 0, JSON.stringify(trip)).toBe(true);
}

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("links reset mid-transfer", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("completes byte-exact through resets of the caller's and the server's links", async () => {
        const callerProxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const serverProxy = closer.add(await FaultProxy.start(target.url), (p) => p.close());
        const serverId = uniqueServerId("reset");
        const link = (url: string, clientId: string) => ({
          url,
          ...target.mqttOptions,
          clientId,
          reconnectPeriod: 100,
        });
        const listener = closer.add(
          await listenMqtt({
            mqtt: link(serverProxy.url, `srv-${serverId.replace(/\W/g, "")}`),
            serverId,
            port: 7,
          }),
          (l) => l.close(),
        );
        const accepted = nextConnection(listener);
        const caller = closer.add(
          connectMqtt({
            mqtt: link(callerProxy.url, `reset-caller-${process.pid}`),
            serverId,
            port: 7,
            heartbeatMs: 1000,
          }),
          (s) => s.destroy(),
        );
        let resets = 0;
        const trip = await echoRoundTrip(caller, accepted, 4 * MiB, async () => {
          callerProxy.resetAll();
          serverProxy.resetAll();
          resets++;
        });
        expect(resets).toBe(1);
        expect(callerProxy.connections).toBeGreaterThan(1); // it did reconnect
        expectNoSilentLoss(trip);
        // With sessions kept across reconnects nothing is lost: it completes.
        expect(trip).toEqual({ caller: "complete", server: "complete" });
      }, 60_000);
    });
  },
);

describe.runIf(mosquittoAvailable())("a Mosquitto restart with persistence", () => {
  const closer = new Closer();
  let broker: MosquittoBroker | undefined;
  afterEach(async () => {
    await closer.closeAll();
    await broker?.stop();
  });

  it("leaves a transfer complete byte-exact, or failed on both ends", async () => {
    broker = await startMosquitto({ persistence: true });
    const serverId = uniqueServerId("restart");
    const link = (clientId?: string) => ({
      url: (broker as MosquittoBroker).url,
      protocolVersion: 5 as const,
      reconnectPeriod: 100,
      ...(clientId !== undefined ? { clientId } : {}),
    });
    const listener = closer.add(await listenMqtt({ mqtt: link(), serverId, port: 7 }), (l) =>
      l.close(),
    );
    const accepted = nextConnection(listener);
    const caller = closer.add(
      connectMqtt({
        mqtt: link(`restart-caller-${process.pid}`),
        serverId,
        port: 7,
        heartbeatMs: 1000,
      }),
      (s) => s.destroy(),
    );
    const trip = await echoRoundTrip(caller, accepted, 4 * MiB, () =>
      (broker as MosquittoBroker).restart(),
    );
    expectNoSilentLoss(trip);
    expect(trip).toEqual({ caller: "complete", server: "complete" });
  }, 60_000);
});

forBrokersWhere(
  (t) => t.name === "mosquitto-5" || (t.kind === "aedes" && !mosquittoAvailable()),
  (target) => {
    describe("a peer process killed", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("resets the caller's socket when the listening process dies", async () => {
        const serverId = uniqueServerId("killed-server");
        const child = closer.add(
          await startBridgeChild(
            {
              role: "listen",
              url: target.url,
              protocolVersion: target.mqttOptions.protocolVersion,
              serverId,
              port: 7,
            },
            "ready",
          ),
          (c) => c.kill(),
        );
        const caller = closer.add(
          connectMqtt({
            mqtt: { url: target.url, ...target.mqttOptions, clientId: `k1-${process.pid}` },
            serverId,
            port: 7,
          }),
          (s) => s.destroy(),
        );
        caller.write("ping");
        await new Promise<void>((resolve) => caller.once("data", () => resolve()));
        const error = nextError(caller);
        const killedAt = performance.now();
        await child.kill();
        const e = await error;
        const ms = performance.now() - killedAt;
        expect(e.code).toBe("ECONNRESET");
        // The broker publishes the dead server's will at once (its TCP
        // connection closed); the caller gives it offlineGraceMs (3 s) to
        // come back, then probes for 1 s.
        expect(ms).toBeLessThan(3000 + 1000 + 4000);
        await closed(caller);
      }, 30_000);

      it("resets the listener's socket when the calling process dies", async () => {
        const listener = closer.add(
          await listenMqtt({
            mqtt: { url: target.url, ...target.mqttOptions },
            serverId: uniqueServerId("killed-caller"),
            port: 7,
          }),
          (l) => l.close(),
        );
        const accepted = nextConnection(listener);
        const heartbeatMs = 500;
        const child = closer.add(
          await startBridgeChild(
            {
              role: "connect",
              url: target.url,
              protocolVersion: target.mqttOptions.protocolVersion,
              serverId: listener.serverId,
              port: 7,
              clientId: `k2-${process.pid}`,
              heartbeatMs,
            },
            "connected",
          ),
          (c) => c.kill(),
        );
        const server = await accepted;
        server.resume();
        const error = nextError(server);
        const killedAt = performance.now();
        await child.kill();
        const e = await error;
        const ms = performance.now() - killedAt;
        expect(e.code).toBe("ECONNRESET");
        // Three silent heartbeat intervals, checked once a second.
        expect(ms).toBeLessThan(3 * heartbeatMs + 1000 + 4000);
        await closed(server);
      }, 30_000);
    });
  },
);
