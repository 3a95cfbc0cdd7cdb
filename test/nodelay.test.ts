/**
 * TCP_NODELAY on both ends of a broker connection: the sockets the
 * transport and server open, and the sockets the embedded broker accepts.
 * Without it a QoS 1 round trip on loopback waits for delayed ACKs.
 */
import { Socket } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, startEmbeddedBroker } from "@mqrpc/runtime";
import { afterEach, describe, expect, it, vi } from "vitest";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer } from "./support/rpc-fixture.js";

describe("TCP_NODELAY", () => {
  const closer = new Closer();
  afterEach(async () => {
    await closer.closeAll();
    vi.restoreAllMocks();
  });

  it("is set on client, server and embedded-broker sockets", async () => {
    const calls: Array<{ local: number | undefined; remote: number | undefined; on: boolean }> = [];
    const original = Socket.prototype.setNoDelay;
    vi.spyOn(Socket.prototype, "setNoDelay").mockImplementation(function (
      this: Socket,
      noDelay?: boolean,
    ) {
      calls.push({ local: this.localPort, remote: this.remotePort, on: noDelay !== false });
      return original.call(this, noDelay);
    });
    const broker = closer.add(await startEmbeddedBroker(), (b) => b.close());
    const server = closer.add(
      await createMqttServer({ mqtt: broker.url, serverId: "nodelay" }),
      (s) => s.close(),
    );
    server.service(TestService, interopService);
    const transport = closer.add(
      // Options of its own, so that it does not share the server's connection.
      createMqttTransport({
        mqtt: { url: broker.url, clientId: "nodelay-caller" },
        serverId: "nodelay",
      }),
      (t) => t.close(),
    );
    await createClient(TestService, transport).emptyCall({});
    const toBroker = calls.filter((c) => c.remote === broker.port && c.on);
    const accepted = calls.filter((c) => c.local === broker.port && c.on);
    expect(toBroker.length).toBeGreaterThanOrEqual(2); // the server's and the transport's connections
    expect(accepted.length).toBeGreaterThanOrEqual(2); // both, as the broker accepted them
  });
});
