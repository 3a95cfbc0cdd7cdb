/**
 * The caller's side of a byte-stream connection: `connectMqtt` opens a
 * bidi call of `mqrpc.v1.Tunnel/Port{port}` on the server id and hands
 * back its socket at once. What is written before the server accepts goes
 * out with the call (the server reads it once it accepts), so nothing
 * written early is lost or has to wait for `'connect'`.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createMqttTransport,
  type MqttConnectionInput,
  type MqttTransport,
  type MqttTransportOptions,
} from "@mqrpc/runtime";
import { connectionKey } from "./connection-key.js";
import { MqttSocket, type SocketDriver, type SocketIo } from "./mqtt-socket.js";
import { MqttSocketError, resetStatus, socketErrorOf } from "./socket-error.js";
import {
  checkPort,
  encodeTunnelParts,
  portMethod,
  SOURCE_PORT_HEADER,
  segmentBytes,
  TUNNEL_SERVICE,
} from "./tunnel-message.js";

/** Options of {@link connectMqtt}. */
export interface ConnectMqttOptions {
  /** The broker: URL, MQTT.js options or an existing `MqttClient` (as `createMqttTransport` takes it). */
  readonly mqtt: MqttConnectionInput;
  /** The server id that listens (`listenMqtt`, `exposePort`), e.g. a device id. */
  readonly serverId: string;
  /** The virtual port, 1 to 65535. */
  readonly port: number;
  /** First topic levels of every mqrpc topic; default `mqrpc`. Must match the listener's. */
  readonly topicPrefix?: string;
  /**
   * How long the server may take to accept, in ms (default 30000; 0: no
   * limit). Past it the socket fails with `ETIMEDOUT`.
   */
  readonly connectTimeoutMs?: number;
  /**
   * Wait for an offline server to come online (within `connectTimeoutMs`)
   * instead of failing at once with `ECONNREFUSED` (default false).
   */
  readonly waitForServer?: boolean;
  /**
   * How often the connection's call pings the server, in ms (default
   * 10000). The server resets a connection whose caller was silent for
   * three intervals; the caller resets one whose server was silent for
   * four (docs/NET-BRIDGE.md "Limits").
   */
  readonly heartbeatMs?: number;
  /** Largest MQTT packet published, in bytes (default 128 KiB); each message carries at most about this much. */
  readonly maxPublishBytes?: number;
  /**
   * Keep the writable side open after the server's end-of-stream (default
   * false: end it too, as `net.Socket` does).
   */
  readonly allowHalfOpen?: boolean;
  /** `socket.setTimeout(timeout)` at once, as `net.connect`'s `timeout` option. */
  readonly timeout?: number;
  /**
   * The socket's `readableHighWaterMark`, in bytes: how much received data
   * may wait unread in the socket before it stops reading the peer's
   * messages, which then holds the peer back by flow control. Default:
   * Node.js's default for byte streams (`stream.getDefaultHighWaterMark(false)`:
   * 16 KiB on Node.js 20, 64 KiB from Node.js 22). Passed to `stream.Duplex`
   * as it is.
   */
  readonly readableHighWaterMark?: number;
  /**
   * The socket's `writableHighWaterMark`, in bytes: how much written data
   * may wait in the socket's write buffer before `write()` returns false
   * (then wait for `'drain'`); besides it the socket holds up to about one
   * message (`maxPublishBytes`) taken for sending. Default: Node.js's
   * default for byte streams, as for `readableHighWaterMark`. Passed to
   * `stream.Duplex` as it is.
   */
  readonly writableHighWaterMark?: number;
}

/**
 * Opens a byte-stream connection to virtual port `port` of `serverId`, like
 * `net.connect`: returns the socket at once; it emits `'connect'` when the
 * server accepted, or fails with `ECONNREFUSED` (nothing listens on the
 * port, or the server is offline), `EACCES` (the broker refused the
 * request topic, on MQTT 5) or `ETIMEDOUT` (see `connectTimeoutMs`).
 * Writes made before `'connect'` are sent with the call and read by the
 * server once it accepts. The connection's call runs on a transport shared
 * by the sockets of equal options, closed with the last of them.
 *
 * @throws Error naming the option when `serverId`, `port` or another option is invalid.
 */
export function connectMqtt(options: ConnectMqttOptions, connectListener?: () => void): MqttSocket {
  if (typeof options !== "object" || options === null) {
    throw new Error("connectMqtt: options must be an object with mqtt, serverId and port");
  }
  if (typeof options.serverId !== "string" || options.serverId === "") {
    throw new Error("serverId must be a non-empty string");
  }
  const port = checkPort(options.port);
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (!Number.isInteger(connectTimeoutMs) || connectTimeoutMs < 0) {
    throw new Error(
      `connectTimeoutMs must be a non-negative integer, got ${String(options.connectTimeoutMs)}`,
    );
  }
  const segment = segmentBytes(options.maxPublishBytes);
  const lease = acquireTransport(options);
  const sourcePort = nextSourcePort();
  const made: { tunnel?: ClientTunnel } = {};
  let socket: MqttSocket;
  try {
    socket = new MqttSocket(
      {
        allowHalfOpen: options.allowHalfOpen ?? false,
        segmentBytes: segment,
        connecting: true,
        remoteAddress: options.serverId,
        remotePort: port,
        localPort: sourcePort,
        readableHighWaterMark: options.readableHighWaterMark,
        writableHighWaterMark: options.writableHighWaterMark,
      },
      (io) => {
        made.tunnel = new ClientTunnel(
          io,
          lease,
          options.serverId,
          port,
          sourcePort,
          connectTimeoutMs,
        );
        return made.tunnel;
      },
    );
    if (options.timeout !== undefined) socket.setTimeout(options.timeout);
  } catch (e) {
    lease.release();
    throw e;
  }
  if (connectListener !== undefined) socket.once("connect", connectListener);
  made.tunnel?.start();
  return socket;
}

/** Default of {@link ConnectMqttOptions.connectTimeoutMs}. */
const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

/**
 * How long a socket closed with `destroy()` keeps its call open for the
 * server's end of stream before it resets the connection.
 */
export const CLOSE_LINGER_MS = 30_000;

/** Response and request messages of a connection travel batched: small writes of one turn share a publish. */
export const TUNNEL_SETTINGS = { batchedStream: false } as const;

// ---- source ports ------------------------------------------------------

/** The range ephemeral ports come from, as IANA suggests. */
const EPHEMERAL_FIRST = 49152;
const EPHEMERAL_COUNT = 65536 - EPHEMERAL_FIRST;
let sourcePortCounter = Math.floor(Math.random() * EPHEMERAL_COUNT);

/** A source port for the next connection: names it, with the client key, in the server's logs. */
function nextSourcePort(): number {
  sourcePortCounter = (sourcePortCounter + 1) % EPHEMERAL_COUNT;
  return EPHEMERAL_FIRST + sourcePortCounter;
}

// ---- shared transports ---------------------------------------------------

/** A socket's share of a transport. */
export interface TransportLease {
  /** The transport. */
  readonly transport: Promise<MqttTransport>;
  /** Gives the share back; the last one closes the transport. Idempotent. */
  release(): void;
}

interface PooledTransport {
  readonly transport: Promise<MqttTransport>;
  users: number;
}

const transports = new Map<string, PooledTransport>();

/** The options of a transport for connections, as `connectMqtt` and `forwardPort` take them. */
export type TransportChoice = Pick<
  ConnectMqttOptions,
  "mqtt" | "serverId" | "topicPrefix" | "waitForServer" | "heartbeatMs" | "maxPublishBytes"
>;

/**
 * A share of the transport for `options`: sockets with equal options share
 * one, created by the first and closed with the last.
 *
 * @throws Error naming the option when the transport cannot be created.
 */
export function acquireTransport(options: TransportChoice): TransportLease {
  const linkKey = `${connectionKey(options.mqtt)}\n${options.topicPrefix ?? ""}`;
  const key = [
    linkKey,
    options.serverId,
    options.waitForServer ?? "",
    options.heartbeatMs ?? "",
    options.maxPublishBytes ?? "",
  ].join("\n");
  let pooled = transports.get(key);
  if (pooled === undefined) {
    const transportOptions: MqttTransportOptions = {
      mqtt: options.mqtt,
      serverId: options.serverId,
      ...(options.topicPrefix !== undefined ? { topicPrefix: options.topicPrefix } : {}),
      ...(options.waitForServer !== undefined ? { waitForServer: options.waitForServer } : {}),
      ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}),
      ...(options.maxPublishBytes !== undefined
        ? { maxPublishBytes: options.maxPublishBytes }
        : {}),
    };
    const transport = Promise.resolve(createMqttTransport(transportOptions));
    transport.catch(() => {});
    pooled = { transport, users: 0 };
    transports.set(key, pooled);
  }
  const entry = pooled;
  entry.users++;
  let released = false;
  return {
    transport: entry.transport,
    release() {
      if (released) return;
      released = true;
      entry.users--;
      if (entry.users > 0) return;
      if (transports.get(key) === entry) transports.delete(key);
      void entry.transport.then(
        (t) => t.close(),
        () => {},
      );
    },
  };
}

// ---- the call ------------------------------------------------------------

/** Drives the caller's side of one connection (see the module comment). */
class ClientTunnel implements SocketDriver {
  readonly #abort = new AbortController();
  #accepted = false;
  #over = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly io: SocketIo,
    private readonly lease: TransportLease,
    private readonly serverId: string,
    private readonly port: number,
    private readonly sourcePort: number,
    private readonly connectTimeoutMs: number,
  ) {}

  start(): void {
    if (this.connectTimeoutMs > 0) {
      this.#timer = setTimeout(() => {
        this.#abort.abort(
          new ConnectError(
            `server "${this.serverId}" did not accept a connection to port ${this.port} within ${this.connectTimeoutMs} ms (connectTimeoutMs)`,
            Code.DeadlineExceeded,
          ),
        );
      }, this.connectTimeoutMs);
      this.#timer.unref();
    }
    void this.#run();
  }

  async #run(): Promise<void> {
    let messages: AsyncIterator<Uint8Array>;
    let first: IteratorResult<Uint8Array>;
    try {
      const transport = await this.lease.transport;
      const response = await transport.rawStream({
        service: TUNNEL_SERVICE,
        method: portMethod(this.port),
        message: this.#requests(),
        header: { [SOURCE_PORT_HEADER]: String(this.sourcePort) },
        signal: this.#abort.signal,
        settings: TUNNEL_SETTINGS,
      });
      messages = response.message[Symbol.asyncIterator]();
      // The server's first message (maybe empty) is its acceptance.
      first = await messages.next();
    } catch (e) {
      this.#end(e);
      return;
    }
    clearTimeout(this.#timer);
    if (this.#over) {
      void messages.return?.();
      return;
    }
    this.#accepted = true;
    this.io.connected();
    this.io.receive(messages, first.done === true ? undefined : first.value);
  }

  /** The request messages: the socket's writes as the call's credit takes them, then the half-close. */
  async *#requests(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const segment = await this.io.nextSegment();
      if (segment === undefined) return;
      if (segment.size > 0) yield encodeTunnelParts(segment.parts, segment.size, false);
      if (segment.end) return;
    }
  }

  destroyed(reset: Error | undefined): void {
    if (reset !== undefined) {
      this.#reset(resetStatus(reset, "the client"));
      return;
    }
    // Closed gracefully: the end of stream goes out after what was
    // written, and the call stays open until the server ends it too.
    const linger = setTimeout(() => {
      this.#reset(
        new ConnectError(
          `the server did not end the connection within ${CLOSE_LINGER_MS} ms of its close`,
          Code.Aborted,
        ),
      );
    }, CLOSE_LINGER_MS);
    linger.unref();
    this.#lingerTimer = linger;
  }

  #lingerTimer: ReturnType<typeof setTimeout> | undefined;

  incomingDone(): void {
    // The OK End: the server finished both directions.
    if (this.#over) return;
    this.#finish();
    if (this.io.sentEnd) {
      this.io.complete();
    } else {
      this.io.fail(
        new MqttSocketError(
          "EPIPE",
          "read",
          "the server ended the connection while this side was still writing",
          new ConnectError("the server ended the call before the half-close", Code.Aborted),
        ),
      );
    }
  }

  incomingFailed(reason: unknown): void {
    this.#end(reason);
  }

  protocolError(error: ConnectError): void {
    this.#reset(error);
    this.io.fail(socketErrorOf(error, this.#accepted));
  }

  /** Resets the connection: the server's handler sees CANCELED. */
  #reset(status: ConnectError): void {
    if (this.#over) return;
    this.#finish();
    this.#abort.abort(status);
    this.io.complete();
  }

  /** The call ended with `reason` (a status, or the abort of a reset or timeout). */
  #end(reason: unknown): void {
    if (this.#over) return;
    this.#finish();
    const aborted = this.#abort.signal.aborted ? this.#abort.signal.reason : undefined;
    this.io.fail(socketErrorOf(this.#inWords(aborted ?? reason), this.#accepted));
  }

  /**
   * A refusal in the caller's terms: a server that serves other ports (or
   * none) answers UNIMPLEMENTED for the tunnel method of this one, which
   * means nothing listens on it.
   */
  #inWords(reason: unknown): unknown {
    if (this.#accepted || !(reason instanceof ConnectError)) return reason;
    if (reason.code !== Code.Unimplemented) return reason;
    return new ConnectError(
      `nothing listens on port ${this.port} of server "${this.serverId}"`,
      Code.Unimplemented,
      undefined,
      undefined,
      reason,
    );
  }

  #finish(): void {
    this.#over = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#lingerTimer);
    this.lease.release();
  }
}
