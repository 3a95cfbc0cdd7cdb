/**
 * EmbeddedBroker.close() ends the connections it accepted, so it resolves
 * while clients are still connected (and reconnecting): a client never
 * leaves by itself.
 */

import { createServer, Socket } from "node:net";
import { startEmbeddedBroker } from "@mqrpc/runtime";
import { connect, type MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { Closer } from "./support/rpc-fixture.js";

describe("EmbeddedBroker.close()", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  it("resolves with an MQTT.js client connected that does not disconnect, and frees the port", async () => {
    const broker = await startEmbeddedBroker();
    closer.add(broker, (b) => b.close());
    const client: MqttClient = closer.add(
      connect(broker.url, { clientId: `embedded-close-${process.pid}`, reconnectPeriod: 50 }),
      (c) => c.endAsync(true),
    );
    await new Promise((resolve) => client.once("connect", resolve));
    const dropped = new Promise<void>((resolve) => client.once("close", () => resolve()));

    await broker.close();
    await dropped;
    // The listening socket is gone too: the port can be bound again.
    const again = createServer();
    await new Promise<void>((resolve, reject) => {
      again.once("error", reject);
      again.listen(broker.port, "127.0.0.1", () => resolve());
    });
    await new Promise<void>((resolve) => again.close(() => resolve()));
    // Closing again is harmless.
    await broker.close();
  });

  it("resolves with a TCP connection that never sent CONNECT, and closes it", async () => {
    const broker = await startEmbeddedBroker();
    closer.add(broker, (b) => b.close());
    const socket = closer.add(new Socket(), (s) => s.destroy());
    await new Promise<void>((resolve) => socket.connect(broker.port, "127.0.0.1", resolve));
    const ended = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});

    await broker.close();
    await ended;
    expect(socket.destroyed).toBe(true);
  });
});
