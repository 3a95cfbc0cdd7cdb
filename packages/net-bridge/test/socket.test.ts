/**
 * The bridged socket behaves like a net.Socket to the code that uses it:
 * 'connect', bytes both ways in order, half-close in each direction, a
 * graceful destroy() and a reset destroy(err) reaching the peer, refused
 * and timed-out connects with Node's error codes, writes made before
 * 'connect' delivered, the socket options accepted, and listeners of
 * several ports sharing one mqrpc server per server id.
 */
import { once } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { Closer, mqttOptions, startServer } from "../../../test/support/rpc-fixture.js";
import { connectMqtt, listenMqtt, MqttSocketError, TUNNEL_SERVICE } from "../src/index.js";
import {
  callerMqtt,
  closed,
  connectTo,
  nextConnection,
  nextError,
  readAll,
  startListener,
  uniqueServerId,
} from "./support/bridge-fixture.js";

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("a bridged socket", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("connects, carries bytes both ways in order and closes cleanly on both ends", async () => {
        const listener = await startListener(closer, target, { port: 7 });
        const accepted = nextConnection(listener);
        const socket = connectTo(closer, target, listener);
        expect(socket.connecting).toBe(true);
        expect(socket.readyState).toBe("opening");
        await once(socket, "connect");
        expect(socket.connecting).toBe(false);
        expect(socket.readyState).toBe("open");
        const server = await accepted;
        // Names: the caller sees the server id and port; the server sees
        // the caller's client key and source port.
        expect([socket.remoteAddress, socket.remotePort, socket.remoteFamily]).toEqual([
          listener.serverId,
          7,
          "mqtt",
        ]);
        expect(server.remoteAddress).toMatch(/^caller-/);
        expect(server.remotePort).toBe(socket.localPort);
        expect(server.address()).toEqual({
          address: listener.serverId,
          family: "mqtt",
          port: 7,
        });
        server.pipe(server); // echo
        const echoed = readAll(socket);
        for (let i = 0; i < 100; i++) socket.write(`${i},`);
        socket.end("done");
        const text = (await echoed).toString();
        expect(text).toBe(`${Array.from({ length: 100 }, (_, i) => `${i},`).join("")}done`);
        await Promise.all([closed(socket), closed(server)]);
        expect(socket.errored).toBeNull();
        expect(server.errored).toBeNull();
        expect(socket.bytesWritten).toBe(text.length);
        expect(server.bytesRead).toBe(text.length);
        await expect.poll(() => listener.connections).toBe(0);
      });

      it("half-closes each direction while the other keeps flowing", async () => {
        const listener = await startListener(closer, target, { port: 8, allowHalfOpen: true });
        // The caller ends first; the server reads to the end, then answers.
        const accepted = nextConnection(listener);
        const first = connectTo(closer, target, listener, { allowHalfOpen: true });
        first.end("question");
        const server = await accepted;
        expect((await readAll(server)).toString()).toBe("question");
        expect(server.writable).toBe(true);
        const answer = readAll(first);
        server.write("answer ");
        server.end("after the caller's end");
        expect((await answer).toString()).toBe("answer after the caller's end");
        await Promise.all([closed(first), closed(server)]);

        // The server ends first; the caller keeps writing and the server reads it.
        const acceptedAgain = nextConnection(listener);
        const second = connectTo(closer, target, listener, { allowHalfOpen: true });
        await once(second, "connect");
        const server2 = await acceptedAgain;
        const fromCaller = readAll(server2);
        server2.end("bye early");
        expect((await readAll(second)).toString()).toBe("bye early");
        second.write("still ");
        second.end("talking");
        expect((await fromCaller).toString()).toBe("still talking");
        await Promise.all([closed(second), closed(server2)]);
        expect([second.errored, server2.errored]).toEqual([null, null]);
      });

      it("ends the other side with net.Socket's default (allowHalfOpen false)", async () => {
        const listener = await startListener(closer, target, { port: 9 });
        const accepted = nextConnection(listener);
        const socket = connectTo(closer, target, listener);
        const got = readAll(socket);
        socket.end("ping");
        const server = await accepted;
        // The server only reads: its writable side ends by itself at the caller's end.
        expect((await readAll(server)).toString()).toBe("ping");
        expect((await got).length).toBe(0);
        await Promise.all([closed(socket), closed(server)]);
      });

      it("delivers what is written before 'connect', in order", async () => {
        const listener = await startListener(closer, target, { port: 10 });
        const accepted = nextConnection(listener);
        const socket = connectMqtt({
          mqtt: callerMqtt(target),
          serverId: listener.serverId,
          port: 10,
        });
        closer.add(socket, (s) => s.destroy());
        const early: string[] = [];
        for (let i = 0; i < 50; i++) {
          expect(socket.connecting).toBe(true);
          early.push(`early-${i};`);
          socket.write(early[i] as string);
        }
        const connected = once(socket, "connect");
        socket.end();
        const server = await accepted;
        expect((await readAll(server)).toString()).toBe(early.join(""));
        await connected;
      });

      it("resets the peer on destroy(err), in both directions, with ECONNRESET and the status", async () => {
        const listener = await startListener(closer, target, { port: 11 });
        // The caller resets.
        let accepted = nextConnection(listener);
        const socket = connectTo(closer, target, listener);
        await once(socket, "connect");
        let server = await accepted;
        const serverError = nextError(server);
        socket.on("error", () => {}); // its own error, emitted locally as net.Socket does
        socket.destroy(new Error("caller gave up"));
        const e1 = await serverError;
        expect(e1).toBeInstanceOf(MqttSocketError);
        expect(e1.code).toBe("ECONNRESET");
        expect(ConnectError.from(e1.cause).code).toBe(Code.Canceled);
        await closed(server);

        // The server resets; the caller sees the server's message.
        accepted = nextConnection(listener);
        const socket2 = connectTo(closer, target, listener);
        await once(socket2, "connect");
        server = await accepted;
        const callerError = nextError(socket2);
        server.on("error", () => {});
        server.destroy(new Error("disk on fire"));
        const e2 = await callerError;
        expect(e2.code).toBe("ECONNRESET");
        expect((e2 as MqttSocketError).syscall).toBe("read");
        const status = ConnectError.from(e2.cause);
        expect(status.code).toBe(Code.Aborted);
        expect(status.rawMessage).toContain("disk on fire");
        await closed(socket2);

        // resetAndDestroy() resets too, without an error on its own side.
        accepted = nextConnection(listener);
        const socket3 = connectTo(closer, target, listener);
        await once(socket3, "connect");
        server = await accepted;
        const serverError3 = nextError(server);
        socket3.resetAndDestroy();
        expect((await serverError3).code).toBe("ECONNRESET");
        expect(socket3.errored).toBeNull();
      });

      it("closes gracefully on destroy(): written bytes, then end of stream", async () => {
        const listener = await startListener(closer, target, { port: 12 });
        const accepted = nextConnection(listener);
        const socket = connectTo(closer, target, listener);
        const got = readAll(socket);
        await once(socket, "connect");
        const server = await accepted;
        server.write("last words");
        server.destroy();
        expect((await got).toString()).toBe("last words");
        await closed(socket);
        expect(socket.errored).toBeNull();
        await expect.poll(() => listener.connections).toBe(0);
      });

      it("refuses with ECONNREFUSED where nothing listens or the server is offline", async () => {
        const listener = await startListener(closer, target, { port: 13 });
        const wrongPort = connectTo(closer, target, { serverId: listener.serverId, port: 14 });
        const e1 = await nextError(wrongPort);
        expect(e1.code).toBe("ECONNREFUSED");
        expect((e1 as MqttSocketError).syscall).toBe("connect");
        expect(ConnectError.from(e1.cause).code).toBe(Code.Unimplemented);
        expect(e1.message).toBe(
          `connect ECONNREFUSED: nothing listens on port 14 of server "${listener.serverId}"`,
        );
        expect(wrongPort.connecting).toBe(true);

        const offline = connectTo(closer, target, { serverId: uniqueServerId("nobody"), port: 13 });
        const e2 = await nextError(offline);
        expect(e2.code).toBe("ECONNREFUSED");
        expect(ConnectError.from(e2.cause).code).toBe(Code.Unavailable);
      });

      it("fails with ETIMEDOUT when the server does not accept within connectTimeoutMs", async () => {
        // A server that takes the tunnel call but never answers it.
        const serverId = uniqueServerId("silent");
        const server = await startServer(closer, target, { serverId });
        server.unknownService((service) =>
          service === TUNNEL_SERVICE
            ? {
                handler: (_requests, context) => ({
                  [Symbol.asyncIterator]: () => ({
                    next: () =>
                      new Promise<IteratorResult<Uint8Array>>((_resolve, reject) =>
                        context.signal.addEventListener("abort", () =>
                          reject(context.signal.reason),
                        ),
                      ),
                  }),
                }),
              }
            : undefined,
        );
        await server.announced();
        const socket = connectTo(closer, target, { serverId, port: 1 }, { connectTimeoutMs: 300 });
        const e = await nextError(socket);
        expect(e.code).toBe("ETIMEDOUT");
        expect(ConnectError.from(e.cause).code).toBe(Code.DeadlineExceeded);
      });

      it("accepts the net.Socket options and emits 'timeout' when idle", async () => {
        const listener = await startListener(closer, target, { port: 15 });
        const accepted = nextConnection(listener);
        const socket = connectTo(closer, target, listener);
        expect(socket.setNoDelay(true)).toBe(socket);
        expect(socket.setKeepAlive(true, 1000)).toBe(socket);
        expect(socket.ref()).toBe(socket);
        expect(socket.unref()).toBe(socket);
        await once(socket, "connect");
        const server = await accepted;
        const timedOut = once(server, "timeout");
        expect(server.setTimeout(100)).toBe(server);
        await timedOut;
        // The timeout only tells: the socket stays open.
        expect(server.destroyed).toBe(false);
        server.setTimeout(0);
        socket.end();
        server.resume();
        await closed(server);
      });

      it("serves several ports of one server id on one mqrpc server", async () => {
        const serverId = uniqueServerId("ports");
        const a = await startListener(closer, target, { serverId, port: 80 });
        const b = await startListener(closer, target, { serverId, port: 443 });
        expect(a.server).toBe(b.server);
        await expect(
          listenMqtt({ mqtt: mqttOptions(target), serverId, port: 80 }),
        ).rejects.toMatchObject({ code: "EADDRINUSE" });
        for (const l of [a, b]) {
          l.on("connection", (s) => s.end(`port ${s.localPort}`));
        }
        for (const port of [80, 443]) {
          const socket = connectTo(closer, target, { serverId, port });
          socket.end();
          expect((await readAll(socket)).toString()).toBe(`port ${port}`);
        }
        // Closing one port leaves the other served.
        await a.close();
        const refused = connectTo(closer, target, { serverId, port: 80 });
        expect((await nextError(refused)).code).toBe("ECONNREFUSED");
        const still = connectTo(closer, target, { serverId, port: 443 });
        still.end();
        expect((await readAll(still)).toString()).toBe("port 443");
      });

      it("serves a port on the application's own mqrpc server", async () => {
        const serverId = uniqueServerId("own");
        const server = await startServer(closer, target, { serverId });
        const listener = closer.add(await listenMqtt({ server, port: 22 }), (l) => l.close());
        expect(listener.server).toBe(server);
        listener.on("connection", (s) => s.end("hello from the app's server"));
        const socket = connectTo(closer, target, listener);
        socket.end();
        expect((await readAll(socket)).toString()).toBe("hello from the app's server");
      });

      it("names the option in configuration errors", () => {
        const mqtt = callerMqtt(target);
        expect(() => connectMqtt({ mqtt, serverId: "x", port: 0 })).toThrow(/^port must be/);
        expect(() => connectMqtt({ mqtt, serverId: "", port: 1 })).toThrow(/^serverId/);
        expect(() => connectMqtt({ mqtt, serverId: "x", port: 1, connectTimeoutMs: -1 })).toThrow(
          /^connectTimeoutMs/,
        );
      });
    });
  },
);
