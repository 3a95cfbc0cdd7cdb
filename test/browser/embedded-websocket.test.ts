/**
 * The embedded broker's WebSocket listener, from Node (no browser needed):
 * `startEmbeddedBroker({ websocket: true })` serves MQTT over WebSockets
 * on a free port next to TCP, both reach the same broker, accepted sockets
 * get TCP_NODELAY, close() ends WebSocket clients and frees the port, and
 * bad option values are refused with an error naming the option.
 */
import { Socket } from "node:net";
import { startEmbeddedBroker } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import { afterEach, describe, expect, it, vi } from "vitest";
import { freePort } from "../brokers/free-port.js";
import { Closer } from "../support/rpc-fixture.js";

describe("startEmbeddedBroker({ websocket })", () => {
  const closer = new Closer();
  afterEach(async () => {
    await closer.closeAll();
    vi.restoreAllMocks();
  });

  const connect = async (url: string) =>
    closer.add(await connectAsync(url, { reconnectPeriod: 0 }), (c: MqttClient) =>
      c.endAsync(true),
    );

  it("has no WebSocket listener unless asked", async () => {
    const broker = closer.add(await startEmbeddedBroker(), (b) => b.close());
    expect(broker.wsUrl).toBeUndefined();
    expect(broker.wsPort).toBeUndefined();
  });

  it("serves MQTT over WebSockets beside TCP, one broker behind both", async () => {
    const broker = closer.add(await startEmbeddedBroker({ websocket: true }), (b) => b.close());
    expect(broker.wsUrl).toBe(`ws://127.0.0.1:${broker.wsPort}/mqtt`);
    expect(broker.wsPort).not.toBe(broker.port);
    const overWebSocket = await connect(broker.wsUrl!);
    const overTcp = await connect(broker.url);
    await overWebSocket.subscribeAsync("ws-test/+", { qos: 1 });
    const received = new Promise<string>((resolve) =>
      overWebSocket.once("message", (topic, payload) => resolve(`${topic} ${payload.toString()}`)),
    );
    await overTcp.publishAsync("ws-test/a", "from tcp", { qos: 1 });
    expect(await received).toBe("ws-test/a from tcp");
  });

  it("listens on the port given", async () => {
    const port = await freePort();
    const broker = closer.add(await startEmbeddedBroker({ websocket: { port } }), (b) => b.close());
    expect(broker.wsPort).toBe(port);
    await connect(`ws://127.0.0.1:${port}/mqtt`);
  });

  it("sets TCP_NODELAY on the WebSocket connections it accepts", async () => {
    const calls: Array<{ local: number | undefined; on: boolean }> = [];
    const original = Socket.prototype.setNoDelay;
    vi.spyOn(Socket.prototype, "setNoDelay").mockImplementation(function (
      this: Socket,
      noDelay?: boolean,
    ) {
      calls.push({ local: this.localPort, on: noDelay !== false });
      return original.call(this, noDelay);
    });
    const broker = closer.add(await startEmbeddedBroker({ websocket: true }), (b) => b.close());
    await connect(broker.wsUrl!);
    expect(calls.filter((c) => c.local === broker.wsPort && c.on).length).toBeGreaterThanOrEqual(1);
  });

  it("close() ends WebSocket clients and stops listening", async () => {
    const broker = await startEmbeddedBroker({ websocket: true });
    const client = await connect(broker.wsUrl!);
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    await broker.close();
    await closed;
    await expect(connectAsync(broker.wsUrl!, { reconnectPeriod: 0 })).rejects.toThrow();
  });

  it.each([
    ["yes", /option websocket must be true, false or \{ port \}/],
    [{ port: -1 }, /option websocket\.port must be an integer from 0 to 65535/],
    [{ host: "0.0.0.0" }, /option websocket has an unknown field "host"/],
  ])("refuses websocket: %j", async (websocket, message) => {
    await expect(startEmbeddedBroker({ websocket: websocket as never })).rejects.toThrow(message);
  });
});
