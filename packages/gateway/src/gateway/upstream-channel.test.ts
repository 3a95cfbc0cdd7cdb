import { once } from "node:events";
import * as http2 from "node:http2";
import * as net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { UpstreamChannel } from "./upstream-channel.js";
import { parseUpstreamUrl } from "./upstream-url.js";

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** An h2c server answering every stream with an empty gRPC OK; its sessions kept for GOAWAY. */
async function grpcServer() {
  const sessions: http2.ServerHttp2Session[] = [];
  const server = http2.createServer();
  server.on("session", (s) => sessions.push(s));
  server.on("stream", (stream) => {
    stream.respond(
      { ":status": 200, "content-type": "application/grpc" },
      { waitForTrailers: true },
    );
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.resume();
    stream.on("end", () => stream.end());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  closers.push(() => {
    for (const s of sessions) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return { port: (server.address() as net.AddressInfo).port, sessions };
}

function channelTo(url: string): UpstreamChannel {
  const channel = new UpstreamChannel(parseUpstreamUrl(url, "u"), undefined);
  closers.push(() => channel.close());
  return channel;
}

const HEADERS = () => ({ "content-type": "application/grpc", te: "trailers" });

async function callOnce(channel: UpstreamChannel) {
  const stream = await channel.request("/s.S/M", HEADERS, new AbortController().signal);
  // A closed stream forgets its session: keep it.
  const session = stream.session as http2.ClientHttp2Session;
  stream.end();
  stream.resume();
  await once(stream, "close");
  return session;
}

describe("UpstreamChannel", () => {
  it("a caller that gives up while the connection is being made opens no stream", async () => {
    // TCP connects, but the TLS handshake is never answered.
    const silent = net.createServer(() => {});
    const sockets = new Set<net.Socket>();
    silent.on("connection", (s) => sockets.add(s));
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    closers.push(() => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => silent.close(resolve));
    });
    const channel = channelTo(`https://127.0.0.1:${(silent.address() as net.AddressInfo).port}`);
    const gaveUp = new AbortController();
    let asked = 0;
    const request = channel.request(
      "/s.S/M",
      () => {
        asked++;
        return HEADERS();
      },
      gaveUp.signal,
    );
    const reason = new Error("the caller's deadline");
    gaveUp.abort(reason);
    await expect(request).rejects.toBe(reason);
    expect(asked).toBe(0);
    expect(channel.connectivity()).toBe("connecting");
  });

  it("tells of a call going out on a new connection after a GOAWAY, though it never looked down", async () => {
    const server = await grpcServer();
    const channel = channelTo(`http://127.0.0.1:${server.port}`);
    let reconnects = 0;
    const reconnected = new Promise<void>((resolve) => {
      channel.watch(() => {
        reconnects++;
        resolve();
      });
    });
    const first = await callOnce(channel);
    expect(reconnects).toBe(0);
    // The server hands over: GOAWAY on the connection the first call used.
    server.sessions[0]?.goaway(http2.constants.NGHTTP2_NO_ERROR);
    await once(first, "goaway");
    const second = await callOnce(channel);
    expect(second === first).toBe(false);
    await reconnected;
    expect(reconnects).toBe(1);
  });

  it("a stream its caller gave up on while it was being opened survives its connection failing", async () => {
    const server = await grpcServer();
    const channel = channelTo(`http://127.0.0.1:${server.port}`);
    const session = await callOnce(channel);
    const gaveUp = new AbortController();
    const reason = new Error("the caller's deadline");
    const request = channel.request(
      "/s.S/M",
      () => {
        gaveUp.abort(reason);
        return HEADERS();
      },
      gaveUp.signal,
    );
    await expect(request).rejects.toBe(reason);
    // As a GOAWAY with an error code does, before the cancelled stream has closed:
    // the stream gets an 'error', which without a listener would end the process.
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on("uncaughtException", onUncaught);
    try {
      const closed = new Promise((resolve) => session.once("close", resolve));
      session.destroy(new Error("Session closed with error code 2"));
      await closed;
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    expect(uncaught).toEqual([]);
  });

  it("a keepalive check of a quiet connection to a distant upstream is not a reconnect", async () => {
    const server = await grpcServer();
    // 200 ms each way: a PING round trip outlasts the watcher's 250 ms look.
    const delay = net.createServer((client) => {
      const upstream = net.connect(server.port, "127.0.0.1");
      const later =
        (to: net.Socket) =>
        (chunk: Buffer): void => {
          setTimeout(() => {
            if (!to.destroyed) to.write(chunk);
          }, 200);
        };
      client.on("data", later(upstream));
      upstream.on("data", later(client));
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("close", end);
      upstream.on("close", end);
      client.on("error", end);
      upstream.on("error", end);
    });
    delay.listen(0, "127.0.0.1");
    await once(delay, "listening");
    closers.push(() => new Promise((resolve) => delay.close(resolve)));
    const channel = new UpstreamChannel(
      parseUpstreamUrl(`http://127.0.0.1:${(delay.address() as net.AddressInfo).port}`, "u"),
      undefined,
      undefined,
      { timeMs: 100, timeoutMs: 5_000 },
    );
    closers.push(() => channel.close());
    let reconnects = 0;
    channel.watch(() => reconnects++);
    await callOnce(channel);
    for (let i = 0; i < 3; i++) {
      // Quiet for longer than the keepalive time: the next call's connection is checked first.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await callOnce(channel);
    }
    expect(reconnects).toBe(0);
  });
});
