/**
 * The server's side of byte-stream connections: `listenMqtt` serves
 * virtual port `port` of a server id as the raw method
 * `mqrpc.v1.Tunnel/Port{port}`; each call is a connection, handed to the
 * listener's `'connection'` listeners as a socket.
 *
 * One mqrpc server serves every port of a (connection, server id, topic
 * prefix): listeners of several ports share it (a port table answers the
 * server's unknown-service resolver), it is created by the first listener
 * and closed with the last. A server the application passes in (`server`)
 * is shared the same way and never closed here.
 */
import { EventEmitter } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createMqttServer,
  type MqttConnectionInput,
  type MqttServer,
  type MqttServerLogger,
  type RawCallContext,
  type RawMethod,
} from "@mqrpc/runtime";
import { TUNNEL_SETTINGS } from "./connect.js";
import { connectionKey } from "./connection-key.js";
import { MqttSocket, type Segment, type SocketDriver, type SocketIo } from "./mqtt-socket.js";
import { resetStatus, socketErrorOf } from "./socket-error.js";
import {
  checkPort,
  encodeTunnelParts,
  methodPort,
  SOURCE_PORT_HEADER,
  segmentBytes,
  TUNNEL_SERVICE,
} from "./tunnel-message.js";

/** Options of {@link listenMqtt}. */
export interface ListenMqttOptions {
  /**
   * The broker: URL, MQTT.js options or an existing `MqttClient`, as
   * `createMqttServer` takes it. Give this and `serverId`, or `server`.
   */
  readonly mqtt?: MqttConnectionInput;
  /** The server id callers address, e.g. a device id. */
  readonly serverId?: string;
  /**
   * An mqrpc server of the application to serve the port on (next to its
   * own services). Its unknown-service resolver becomes the bridge's (see
   * docs/NET-BRIDGE.md); the server is not closed with the listener.
   */
  readonly server?: MqttServer;
  /** The virtual port, 1 to 65535. One listener per port and server. */
  readonly port: number;
  /** First topic levels of every mqrpc topic; default `mqrpc`. */
  readonly topicPrefix?: string;
  /** Largest MQTT packet published, in bytes (default 128 KiB). For the server this listener creates. */
  readonly maxPublishBytes?: number;
  /**
   * Where the server this listener creates reports what it could not do
   * and went on without (a broker it cannot reach yet, dropped frames):
   * `createMqttServer`'s `logger`, default `console`. Not with `server`,
   * which reports through its own.
   */
  readonly logger?: MqttServerLogger;
  /**
   * How long `close()` lets open connections run before it resets them, in
   * ms (default 5000).
   */
  readonly shutdownTimeoutMs?: number;
  /**
   * Keep a socket's writable side open after the caller's end-of-stream
   * (default false: end it too, as `net.Server` does).
   */
  readonly allowHalfOpen?: boolean;
  /**
   * Each socket's `readableHighWaterMark`, in bytes: how much received data
   * may wait unread in the socket before it stops reading the peer's
   * messages, which then holds the peer back by flow control. Default:
   * Node.js's default for byte streams (`stream.getDefaultHighWaterMark(false)`:
   * 16 KiB on Node.js 20, 64 KiB from Node.js 22). Passed to `stream.Duplex`
   * as it is.
   */
  readonly readableHighWaterMark?: number;
  /**
   * Each socket's `writableHighWaterMark`, in bytes: how much written data
   * may wait in the socket's write buffer before `write()` returns false
   * (then wait for `'drain'`); besides it the socket holds up to about one
   * message (`maxPublishBytes`) taken for sending. Default: Node.js's
   * default for byte streams, as for `readableHighWaterMark`. Passed to
   * `stream.Duplex` as it is.
   */
  readonly writableHighWaterMark?: number;
}

/**
 * Accepts byte-stream connections for one virtual port of a server id.
 * Events: `'connection'` (socket: {@link MqttSocket}), `'error'` (a
 * `'connection'` listener threw), `'close'` (after {@link close}).
 */
export interface MqttListener extends EventEmitter {
  /** The server id served. */
  readonly serverId: string;
  /** The virtual port served. */
  readonly port: number;
  /** The mqrpc server the port is served on (shared with the server id's other ports). */
  readonly server: MqttServer;
  /** Connections open now. */
  readonly connections: number;
  /** `{ address: serverId, family: "mqtt", port }`, as `net.Server.address()`. */
  address(): { address: string; family: "mqtt"; port: number };
  /**
   * Stops accepting at once (new callers get `ECONNREFUSED`), lets open
   * connections run for up to `shutdownTimeoutMs`, then resets the rest;
   * closes the mqrpc server it created when no other port uses it.
   * Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Serves virtual port `port` of `serverId` (or of `server`): resolves once
 * the server is online (its presence acknowledged by the broker), with a
 * listener whose `'connection'` event gives each accepted connection as a
 * {@link MqttSocket}. Feed them to any server that takes sockets:
 * `httpServer.emit("connection", socket)`, grpc-js's
 * `createConnectionInjector(...).injectConnection(socket)`, or your own code.
 *
 * @throws Error naming the option for invalid options; an Error with code
 *   `EADDRINUSE` when the port is served already on that server.
 */
export function listenMqtt(options: ListenMqttOptions): Promise<MqttListener> {
  return openListener(options, undefined);
}

/**
 * Decides whether the server accepts a connection before it answers the
 * caller; rejecting refuses it with the ConnectError's status (UNAVAILABLE
 * reaches the caller as ECONNREFUSED).
 */
export type AcceptGate = (socket: MqttSocket) => Promise<void>;

/** {@link listenMqtt}, with an accept gate for exposePort. */
export async function openListener(
  options: ListenMqttOptions,
  gate: AcceptGate | undefined,
): Promise<MqttListener> {
  if (typeof options !== "object" || options === null) {
    throw new Error("listenMqtt: options must be an object with mqtt, serverId and port");
  }
  const port = checkPort(options.port);
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5000;
  if (!Number.isInteger(shutdownTimeoutMs) || shutdownTimeoutMs < 0) {
    throw new Error(
      `shutdownTimeoutMs must be a non-negative integer, got ${String(options.shutdownTimeoutMs)}`,
    );
  }
  const host = await acquireHost(options);
  if (host.ports.has(port)) {
    await host.releaseIfUnused();
    throw Object.assign(
      new Error(`port ${port} of server "${host.server.serverId}" is served already`),
      { code: "EADDRINUSE" },
    );
  }
  const listener = new Listener(host, port, options, shutdownTimeoutMs, gate);
  host.ports.set(port, listener);
  try {
    await host.server.announced();
  } catch (e) {
    await listener.close();
    throw e;
  }
  return listener;
}

// ---- servers shared by ports -------------------------------------------

/** One mqrpc server and the ports it serves. */
class PortTable {
  readonly ports = new Map<number, Listener>();

  constructor(
    readonly server: MqttServer,
    /** Set for a server created here (closed with its last port), keyed by this. */
    private readonly ownedKey: string | undefined,
  ) {
    server.unknownService(this.resolve);
  }

  private readonly resolve = (service: string, method: string): RawMethod | undefined => {
    if (service !== TUNNEL_SERVICE) return undefined;
    const port = methodPort(method);
    return port === undefined ? undefined : this.ports.get(port)?.rawMethod;
  };

  /** Closes a server created here once no port uses it. */
  async releaseIfUnused(): Promise<void> {
    if (this.ports.size > 0 || this.ownedKey === undefined) return;
    if (ownedTables.get(this.ownedKey) !== this.entry) return;
    ownedTables.delete(this.ownedKey);
    const closing = this.server.close();
    closingServers.set(this.ownedKey, closing);
    try {
      await closing;
    } finally {
      if (closingServers.get(this.ownedKey) === closing) closingServers.delete(this.ownedKey);
    }
  }

  /** The promise this table was registered under. */
  entry: Promise<PortTable> | undefined;
}

/** Tables of servers created here, by connection, server id and prefix. */
const ownedTables = new Map<string, Promise<PortTable>>();
/** Servers created here that are closing: a new one with their client id waits. */
const closingServers = new Map<string, Promise<void>>();
/** Tables of servers the application passed in. */
const adoptedTables = new WeakMap<MqttServer, PortTable>();

async function acquireHost(options: ListenMqttOptions): Promise<PortTable> {
  if (options.server !== undefined) {
    if (options.mqtt !== undefined) {
      throw new Error("listenMqtt: give mqtt (with serverId) or server, not both");
    }
    if (options.serverId !== undefined && options.serverId !== options.server.serverId) {
      throw new Error(
        `serverId "${options.serverId}" differs from the server's ("${options.server.serverId}")`,
      );
    }
    let table = adoptedTables.get(options.server);
    if (table === undefined) {
      table = new PortTable(options.server, undefined);
      adoptedTables.set(options.server, table);
    }
    return table;
  }
  if (options.mqtt === undefined) throw new Error("listenMqtt: mqtt (or server) is required");
  if (typeof options.serverId !== "string" || options.serverId === "") {
    throw new Error("serverId must be a non-empty string");
  }
  const key = [connectionKey(options.mqtt), options.serverId, options.topicPrefix ?? ""].join("\n");
  let entry = ownedTables.get(key);
  if (entry === undefined) {
    const mqtt = options.mqtt;
    const serverId = options.serverId;
    const holder: { entry?: Promise<PortTable> } = {};
    const created = (async () => {
      await closingServers.get(key);
      const server = await createMqttServer({
        mqtt,
        serverId,
        ...(options.topicPrefix !== undefined ? { topicPrefix: options.topicPrefix } : {}),
        ...(options.maxPublishBytes !== undefined
          ? { maxPublishBytes: options.maxPublishBytes }
          : {}),
        ...(options.logger !== undefined ? { logger: options.logger } : {}),
      });
      const table = new PortTable(server, key);
      table.entry = holder.entry;
      return table;
    })();
    holder.entry = created;
    entry = created;
    ownedTables.set(key, created);
    created.catch(() => {
      if (ownedTables.get(key) === created) ownedTables.delete(key);
    });
  }
  return entry;
}

// ---- the listener ----------------------------------------------------------

class Listener extends EventEmitter implements MqttListener {
  readonly rawMethod: RawMethod;
  readonly #sockets = new Map<MqttSocket, ServerTunnel>();
  readonly #segmentBytes: number;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;

  constructor(
    private readonly table: PortTable,
    readonly port: number,
    private readonly options: ListenMqttOptions,
    private readonly shutdownTimeoutMs: number,
    private readonly gate: AcceptGate | undefined,
  ) {
    super();
    this.#segmentBytes = segmentBytes(options.maxPublishBytes);
    this.rawMethod = {
      handler: (requests, context) => this.#accept(requests, context),
      settings: TUNNEL_SETTINGS,
    };
  }

  get serverId(): string {
    return this.table.server.serverId;
  }

  get server(): MqttServer {
    return this.table.server;
  }

  get connections(): number {
    return this.#sockets.size;
  }

  address(): { address: string; family: "mqtt"; port: number } {
    return { address: this.serverId, family: "mqtt", port: this.port };
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutDown();
    return this.#closing;
  }

  async #shutDown(): Promise<void> {
    if (this.table.ports.get(this.port) === this) this.table.ports.delete(this.port);
    if (this.#sockets.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => {
          this.#idle = resolve;
        }),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.shutdownTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      for (const tunnel of [...this.#sockets.values()]) {
        tunnel.shutDown(
          new ConnectError(
            `the listener on port ${this.port} of server "${this.serverId}" closed`,
            Code.Unavailable,
          ),
        );
      }
    }
    await this.table.releaseIfUnused();
    this.emit("close");
  }

  #accept(requests: AsyncIterable<Uint8Array>, context: RawCallContext): AsyncIterable<Uint8Array> {
    const sourcePort = Number(context.requestHeader.get(SOURCE_PORT_HEADER) ?? "");
    const made: { tunnel?: ServerTunnel } = {};
    const socket = new MqttSocket(
      {
        allowHalfOpen: this.options.allowHalfOpen ?? false,
        segmentBytes: this.#segmentBytes,
        connecting: false,
        remoteAddress: context.clientKey,
        remotePort:
          Number.isInteger(sourcePort) && sourcePort >= 1 && sourcePort <= 65535
            ? sourcePort
            : undefined,
        localAddress: this.serverId,
        localPort: this.port,
        readableHighWaterMark: this.options.readableHighWaterMark,
        writableHighWaterMark: this.options.writableHighWaterMark,
      },
      (io) => {
        made.tunnel = new ServerTunnel(io, context, () => this.#forget(socket));
        return made.tunnel;
      },
    );
    const tunnel = made.tunnel as ServerTunnel;
    this.#sockets.set(socket, tunnel);
    tunnel.receive(requests);
    const accepting = this.gate !== undefined ? this.gate(socket) : afterThisTurn();
    try {
      this.emit("connection", socket);
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      socket.destroy(error);
      if (this.listenerCount("error") > 0) this.emit("error", error);
      else
        process.nextTick(() => {
          throw error;
        });
    }
    return tunnel.respond(accepting);
  }

  #forget(socket: MqttSocket): void {
    this.#sockets.delete(socket);
    if (this.#sockets.size === 0) this.#idle?.();
  }
}

/** Resolves after the current event-loop turn, so that what the application writes at once travels with the acceptance. */
function afterThisTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** How long a socket closed with `destroy()` waits for the caller's end of stream before it resets. */
const CLOSE_LINGER_MS = 30_000;

/** Drives the server's side of one connection (see the module comment). */
class ServerTunnel implements SocketDriver {
  #over = false;
  #requestsEnded = false;
  #reset: ConnectError | undefined;
  #waiter: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly io: SocketIo,
    private readonly context: RawCallContext,
    private readonly forget: () => void,
  ) {
    context.signal.addEventListener("abort", this.#aborted, { once: true });
  }

  /** The call ended from outside (the caller's Cancel or silence, a deadline, server shutdown). */
  readonly #aborted = (): void => {
    if (this.#over) return;
    this.#over = true;
    this.#settle();
    this.io.fail(socketErrorOf(this.context.signal.reason, true));
  };

  receive(requests: AsyncIterable<Uint8Array>): void {
    this.io.receive(requests[Symbol.asyncIterator]());
  }

  /**
   * The response messages: the acceptance (with what was written by then),
   * the socket's writes, its end of stream; then, once the caller's end of
   * stream arrived too, the OK End. A reset ends the call with its status.
   */
  async *respond(accepting: Promise<void>): AsyncGenerator<Uint8Array> {
    try {
      await accepting;
      this.#check();
      let segment: Segment = this.io.takeSegment() ?? { parts: [], size: 0, end: false };
      for (;;) {
        yield encodeTunnelParts(segment.parts, segment.size, segment.end);
        if (segment.end) break;
        const next = await this.io.nextSegment();
        this.#check();
        if (next === undefined) {
          throw new ConnectError("connection reset by the server", Code.Aborted);
        }
        segment = next;
      }
      if (!this.#requestsEnded) {
        await new Promise<void>((resolve, reject) => {
          this.#waiter = { resolve, reject };
        });
      }
      this.#check();
      this.#over = true;
      this.#settle();
      this.io.complete();
    } catch (e) {
      if (!this.#over) {
        this.#over = true;
        this.#settle();
        this.io.fail(socketErrorOf(e, true));
      }
      throw e;
    } finally {
      this.forget();
    }
  }

  /** Closes the connection from the server (listener closing). */
  shutDown(status: ConnectError): void {
    this.#resetWith(status);
    this.io.fail(socketErrorOf(status, true));
  }

  destroyed(reset: Error | undefined): void {
    if (reset !== undefined) {
      this.#resetWith(resetStatus(reset, "the server"));
      return;
    }
    this.#lingerTimer = setTimeout(() => {
      this.#resetWith(
        new ConnectError(
          `the caller did not end the connection within ${CLOSE_LINGER_MS} ms of its close`,
          Code.Aborted,
        ),
      );
    }, CLOSE_LINGER_MS);
    this.#lingerTimer.unref();
  }

  incomingDone(): void {
    this.#requestsEnded = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve();
  }

  incomingFailed(reason: unknown): void {
    if (this.#over) return;
    this.#over = true;
    this.#settle();
    this.io.fail(socketErrorOf(reason, true));
  }

  protocolError(error: ConnectError): void {
    this.#resetWith(error);
    this.io.fail(socketErrorOf(error, true));
  }

  /** Ends the call with `status` at the generator's next step. */
  #resetWith(status: ConnectError): void {
    if (this.#over || this.#reset !== undefined) return;
    this.#reset = status;
    clearTimeout(this.#lingerTimer);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(status);
    this.io.complete();
  }

  #check(): void {
    if (this.#reset !== undefined) throw this.#reset;
  }

  #settle(): void {
    clearTimeout(this.#lingerTimer);
    this.context.signal.removeEventListener("abort", this.#aborted);
  }
}
