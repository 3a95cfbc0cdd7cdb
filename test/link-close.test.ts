/**
 * Closing while the link is down (the broker is gone and MQTT.js keeps
 * reconnecting) ends the connection at once: there is nothing to wait for,
 * since no PUBACK can come, so the close grace does not apply.
 */

import { createServer, type Server } from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createMqttServer,
  createMqttTransport,
  type EmbeddedBroker,
  startEmbeddedBroker,
} from "@mqrpc/runtime";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CLOSE_GRACE_MS, MqttLink } from "../packages/runtime/src/link/mqtt-link.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { Closer, deferred, uniqueServerId, untilAborted } from "./support/rpc-fixture.js";

const id = () => Math.random().toString(36).slice(2, 10);

/**
 * Takes the gone broker's port and resolves once a client whose CONNECT
 * names `clientId` tries it again: that client saw its link drop and is
 * reconnecting. Every connection is reset, as if nothing listened.
 */
async function reconnectAttempt(
  closer: Closer,
  port: number,
  clientId: string,
): Promise<Promise<void>> {
  const seen = deferred();
  const server: Server = createServer((socket) => {
    socket.on("error", () => {});
    socket.on("data", (data) => {
      if (data.includes(clientId)) seen.resolve();
      socket.resetAndDestroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  closer.add(server, (s) => new Promise((resolve) => s.close(resolve)));
  return seen.promise;
}

/** Resolves true if `promise` settles before the full close grace is over. */
function beforeGrace(promise: Promise<unknown>): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), CLOSE_GRACE_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe("closing while the broker is gone", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  async function broker(): Promise<EmbeddedBroker> {
    return closer.add(await startEmbeddedBroker(), (b) => b.close());
  }

  it("MqttLink: a link that is down is ended forcibly at once, with publishes still unacknowledged", async () => {
    const gone = await broker();
    const clientId = `close-link-${id()}`;
    const link = MqttLink.acquire({ url: gone.url, clientId, reconnectPeriod: 50 });
    await link.connected();
    await link.subscribe(`close/${clientId}`);
    const dropped = new Promise<void>((resolve) => link.client.once("close", () => resolve()));
    await gone.close();
    await dropped;
    // Stored for the next connection: a graceful end would wait for its PUBACK.
    const unacknowledged = link.publish(`close/${clientId}`, new Uint8Array(8));
    unacknowledged.catch(() => {});
    const endAsync = vi.spyOn(link.client, "endAsync");

    await link.release();
    expect(endAsync.mock.calls.map(([force]) => force)).toEqual([true]);
    expect(link.client.disconnected).toBe(true);
    expect(link.client.connected).toBe(false);
  });

  it("transport and server: close() does not wait out the grace, with a call in flight", async () => {
    const gone = await broker();
    const serverId = uniqueServerId("close-gone");
    const clientId = `close-transport-${id()}`;
    const server = await createMqttServer({
      mqtt: { url: gone.url, clientId: `srv-${id()}`, reconnectPeriod: 50 },
      serverId,
      logger: { warn: () => {} },
      // Its own grace for calls in progress is not what this is about.
      shutdownTimeoutMs: 0,
    });
    const serverClosed = closer.add(server, (s) => s.close());
    const started = deferred();
    server.service(TestService, {
      unaryCall: (_req, ctx) => {
        started.resolve();
        return untilAborted(ctx.signal);
      },
    });
    const transport = createMqttTransport({
      mqtt: { url: gone.url, clientId, reconnectPeriod: 50 },
      serverId,
    });
    closer.add(transport, (t) => t.close());
    const call = createClient(TestService, transport).unaryCall({}, { timeoutMs: 30_000 });
    call.catch(() => {});
    await started.promise;

    await gone.close();
    await reconnectAttempt(closer, gone.port, clientId);
    // The transport tells the server it gave up on the call (a Cancel that
    // MQTT.js keeps for the next connection) and releases the link.
    expect(await beforeGrace(transport.close())).toBe(true);
    await expect(call).rejects.toSatisfy(
      (e) => e instanceof ConnectError && e.code === Code.Canceled,
    );
    expect(await beforeGrace(serverClosed.close())).toBe(true);
  });
});
