import { once } from "node:events";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
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
    // A client closing its connection with an error code (CANCEL) sends a
    // GOAWAY its open streams emit as 'error'.
    stream.on("error", () => {});
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

/**
 * A TCP proxy to `port` that passes bytes on at once, until `hold()`: from
 * then on, what the server sends on the connections open at that moment is
 * kept from the client (a PING's ACK among it). Counts the connections it took.
 */
async function holdingProxy(port: number) {
  const open = new Set<{ held: boolean }>();
  let accepted = 0;
  const proxy = net.createServer((client) => {
    accepted++;
    const pair = { held: false };
    open.add(pair);
    const upstream = net.connect(port, "127.0.0.1");
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      if (!pair.held && !client.destroyed) client.write(chunk);
    });
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on("close", end);
      socket.on("error", end);
    }
  });
  proxy.listen(0, "127.0.0.1");
  await once(proxy, "listening");
  closers.push(() => new Promise((resolve) => proxy.close(resolve)));
  return {
    port: (proxy.address() as net.AddressInfo).port,
    accepted: () => accepted,
    hold: () => {
      for (const pair of open) pair.held = true;
    },
  };
}

/** A channel to `port` with keepalive PINGs every `timeMs`, closed in teardown. */
function keepaliveChannel(port: number, timeMs: number, timeoutMs: number): UpstreamChannel {
  const channel = new UpstreamChannel(
    parseUpstreamUrl(`http://127.0.0.1:${port}`, "u"),
    undefined,
    undefined,
    { timeMs, timeoutMs },
  );
  closers.push(() => channel.close());
  return channel;
}

/** The server's sessions still open. */
function liveSessions(sessions: readonly http2.ServerHttp2Session[]): number {
  return sessions.filter((s) => !s.closed && !s.destroyed).length;
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

  it("a call whose keepalive check outlives its connection retiring goes out on the new connection, leaking none", async () => {
    const server = await grpcServer();
    const proxy = await holdingProxy(server.port);
    const timeMs = 100;
    const channel = keepaliveChannel(proxy.port, timeMs, 5_000);
    // One more call than the burst of cancels the connection allows: the
    // last cancel has to wait, and the connection retires.
    const running = await Promise.all(
      Array.from({ length: 801 }, () =>
        channel.request("/s.S/M", HEADERS, new AbortController().signal),
      ),
    );
    await Promise.all(running.map((stream) => once(stream, "response")));
    // The server's answers stop (the next PING's ACK among them), and the
    // connection goes quiet for longer than the keepalive time.
    // (Nothing but the server's bytes marks it alive: a wait is what it takes.)
    proxy.hold();
    await new Promise((resolve) => setTimeout(resolve, 3 * timeMs));
    // The call waits in Connect's manager for the ACK of its keepalive PING
    // (sent before request() returns: the connection's state was "open").
    let asked = 0;
    const request = channel.request(
      "/s.S/M",
      () => {
        asked++;
        return HEADERS();
      },
      new AbortController().signal,
    );
    expect(asked).toBe(1);
    // Meanwhile the connection retires and, once its calls are cancelled, closes.
    for (const stream of running) channel.cancel(stream);
    const stream = await request;
    const session = stream.session as http2.ClientHttp2Session;
    stream.end();
    stream.resume();
    await once(stream, "close");
    const next = await callOnce(channel);
    // The race took place: the closed connection's manager connected again
    // for the waiting call (the first connection, that one, the new one).
    await vi.waitFor(() => expect(proxy.accepted()).toBe(3));
    // The upstream is left with one connection, the one new calls take, and
    // the call went out on it: none left open on the closed connection's manager.
    const live = () => liveSessions(server.sessions);
    await vi.waitFor(() => expect(live()).toBe(1));
    expect(next === session).toBe(true);
    channel.close();
    await vi.waitFor(() => expect(live()).toBe(0));
  });

  /**
   * A channel with keepalive whose connection, once a call made it, goes
   * quiet for longer than the keepalive time while the server's bytes (the
   * next PING's ACK among them) are held back: the next request waits in
   * Connect's manager for a PING that is never acknowledged.
   */
  async function waitingForKeepaliveCheck() {
    const server = await grpcServer();
    const proxy = await holdingProxy(server.port);
    const timeMs = 100;
    const channel = keepaliveChannel(proxy.port, timeMs, 60_000);
    await callOnce(channel);
    proxy.hold();
    // (Nothing but the server's bytes marks it alive: a wait is what it takes.)
    await new Promise((resolve) => setTimeout(resolve, 3 * timeMs));
    return { channel, live: () => liveSessions(server.sessions) };
  }

  it("a call waiting for a keepalive check when the gateway closes fails UNAVAILABLE, leaving no connection", async () => {
    const { channel, live } = await waitingForKeepaliveCheck();
    const request = channel.request("/s.S/M", HEADERS, new AbortController().signal);
    channel.close();
    const error = await request.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Unavailable);
    expect((error as ConnectError).rawMessage).toMatch(/the gateway closed its connection/);
    await vi.waitFor(() => expect(live()).toBe(0));
  });

  it("a caller that gives up during a keepalive check stops waiting at once", async () => {
    const { channel } = await waitingForKeepaliveCheck();
    const abort = new AbortController();
    const request = channel.request("/s.S/M", HEADERS, abort.signal);
    const reason = new ConnectError("gave up", Code.Canceled);
    abort.abort(reason);
    // Without the signal honoured, this waits for the PING timeout (60 s).
    await expect(request).rejects.toBe(reason);
  });
});
