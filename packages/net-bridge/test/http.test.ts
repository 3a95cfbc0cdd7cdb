/**
 * A plain node:http HTTP/1.1 server behind `listenMqtt`, unmodified: a
 * 50 MiB download through `http.get` with `createConnection: connectMqtt`
 * and a 50 MiB upload through `forwardPort` arrive byte-exact, keep-alive
 * connections carry several requests, and keep-alive timeouts
 * (socket.setTimeout) close idle connections quietly. On one broker (Mosquitto 5
 * when installed, else the embedded one): the sizes are what the issue
 * fixes, and the other brokers run the same path in the other suites.
 */
import { once } from "node:events";
import {
  Agent,
  createServer as createHttpServer,
  get,
  type IncomingMessage,
  request,
} from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerTargets } from "../../../test/brokers/targets.js";
import { Closer } from "../../../test/support/rpc-fixture.js";
import {
  connectMqtt,
  forwardPort,
  type MqttListener,
  type MqttSocket,
  type PortForward,
} from "../src/index.js";
import {
  callerMqtt,
  startListener,
  streamBytes,
  verifyStream,
  writeStream,
} from "./support/bridge-fixture.js";

const MiB = 1024 * 1024;
const SIZE = 50 * MiB;

const targets = brokerTargets();
const target =
  targets.find((t) => t.name === "mosquitto-5") ?? targets.find((t) => t.kind === "aedes");

describe.runIf(target !== undefined)(`node:http over the bridge, on ${target?.name}`, () => {
  const closer = new Closer();
  let listener: MqttListener;
  let forward: PortForward;
  const mqtt = target ? callerMqtt(target) : undefined;

  beforeAll(async () => {
    if (target === undefined || mqtt === undefined) return;
    const http = createHttpServer(async (req, res) => {
      if (req.method === "GET" && req.url === "/download") {
        res.writeHead(200, { "content-length": String(SIZE) });
        await writeStream(res, SIZE, { chunk: 64 * 1024 });
        return;
      }
      if (req.method === "PUT" && req.url === "/upload") {
        try {
          const n = await verifyStream(req);
          res.end(`verified ${n}`);
        } catch (e) {
          res.writeHead(422).end(String(e));
        }
        return;
      }
      res.end(`hello ${req.socket.remoteAddress}`);
    });
    // Long enough for the agent to reuse the socket (a Keep-Alive hint
    // under 2 s makes Node's agent drop it), short for the test.
    http.keepAliveTimeout = 2000;
    closer.add(http, (h) => {
      h.closeAllConnections();
      return new Promise((resolve) => h.close(resolve));
    });
    listener = await startListener(closer, target, { port: 80 });
    listener.on("connection", (socket) => http.emit("connection", socket));
    forward = closer.add(await forwardPort({ mqtt, serverId: listener.serverId, port: 80 }), (f) =>
      f.close(),
    );
  });
  afterAll(() => closer.closeAll());

  const createConnection = () => {
    if (mqtt === undefined) throw new Error("no broker");
    return connectMqtt({ mqtt, serverId: listener.serverId, port: 80 });
  };

  it("serves a 50 MiB download byte-exact through createConnection", async () => {
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      get({ host: "device", path: "/download", createConnection }, resolve).on("error", reject);
    });
    expect(response.statusCode).toBe(200);
    expect(await verifyStream(response)).toBe(SIZE);
  });

  it("takes a 50 MiB upload byte-exact through forwardPort", async () => {
    expect(forward.address.host).toBe("127.0.0.1");
    const req = request({
      host: forward.address.host,
      port: forward.address.port,
      method: "PUT",
      path: "/upload",
      headers: { "content-length": String(SIZE) },
    });
    const response = once(req, "response") as Promise<[IncomingMessage]>;
    await writeStream(req, SIZE, { chunk: 64 * 1024 });
    const [res] = await response;
    res.setEncoding("utf8");
    let body = "";
    for await (const chunk of res) body += chunk;
    expect([res.statusCode, body]).toEqual([200, `verified ${SIZE}`]);
  });

  it("keeps a connection alive across requests; the keep-alive timeouts close it quietly", async () => {
    const sockets: MqttSocket[] = [];
    const agent = closer.add(new Agent({ keepAlive: true, maxSockets: 1 }), (a) => a.destroy());
    agent.createConnection = () => {
      const socket = createConnection();
      sockets.push(socket);
      return socket;
    };
    const fetchText = (path: string) =>
      new Promise<string>((resolve, reject) => {
        get({ host: "device", path, agent }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            body += chunk;
          });
          res.on("end", () => resolve(body));
        }).on("error", reject);
      });
    const first = await fetchText("/a");
    expect(first).toMatch(/^hello caller-/);
    expect(await fetchText("/b")).toBe(first);
    expect(sockets).toHaveLength(1);
    // Idle: the agent's socket timeout (1 s, from the server's Keep-Alive
    // hint) or the server's keepAliveTimeout (2 s), both socket.setTimeout
    // on a bridged socket, closes the connection without an error.
    const [socket] = sockets as [MqttSocket];
    if (!socket.closed) await once(socket, "close");
    expect(socket.errored).toBeNull();
  });

  it("sends the same bytes as it was given (the pattern itself is checked)", () => {
    // A guard on the test's own stream: words count up across writes.
    const whole = streamBytes(0, 64);
    expect(Buffer.concat([streamBytes(0, 13), streamBytes(13, 51)]).equals(whole)).toBe(true);
    expect(whole.readUInt32LE(60)).toBe(15);
    expect(forward.address.port).toBe((forward.address as unknown as AddressInfo).port);
  });
});
