/**
 * Port forwarding for programs that cannot take a socket object, as
 * `ssh -L` and `ssh -R` do it: `forwardPort` listens on a local TCP port
 * and carries each connection to a virtual port of a server id;
 * `exposePort` serves a virtual port by connecting each connection to one
 * fixed TCP target. Both splice the two sockets both ways, half-close
 * included, and turn an error on either side into a reset of the other.
 */
import { createConnection, createServer, type Socket } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { acquireTransport, type ConnectMqttOptions, connectMqtt } from "./connect.js";
import { type ListenMqttOptions, type MqttListener, openListener } from "./listener.js";
import type { MqttSocket } from "./mqtt-socket.js";
import { checkPort } from "./tunnel-message.js";

/** Options of {@link forwardPort}: those of `connectMqtt` for the MQTT side, and where to listen. */
export interface ForwardPortOptions
  extends Omit<ConnectMqttOptions, "allowHalfOpen" | "timeout" | "port"> {
  /** The virtual port to reach, 1 to 65535. */
  readonly port: number;
  /**
   * The local TCP address to listen on: `host` defaults to `127.0.0.1`
   * (loopback only: give another address on purpose), `port` to 0 (a free
   * port; see {@link PortForward.address}).
   */
  readonly listen?: { readonly host?: string; readonly port?: number };
}

/** A running {@link forwardPort}. */
export interface PortForward {
  /** Where local programs connect: the address and port the TCP server is bound to. */
  readonly address: { readonly host: string; readonly port: number };
  /** Forwarded connections open now. */
  readonly connections: number;
  /** Stops listening, resets the open connections and releases the MQTT side. Idempotent. */
  close(): Promise<void>;
}

/**
 * Listens on a local TCP port (127.0.0.1 and a free port by default) and
 * forwards every connection to virtual port `port` of `serverId`, for
 * programs that only take a host and port (a grpc-js or Python gRPC
 * client, curl, ssh). A connection the server refuses, or that is reset on
 * the MQTT side, is reset on the local side (and the other way round).
 *
 * @throws Error naming the option for invalid options, or the listen error (e.g. EADDRINUSE).
 */
export async function forwardPort(options: ForwardPortOptions): Promise<PortForward> {
  if (typeof options !== "object" || options === null) {
    throw new Error("forwardPort: options must be an object with mqtt, serverId and port");
  }
  if (typeof options.serverId !== "string" || options.serverId === "") {
    throw new Error("serverId must be a non-empty string");
  }
  checkPort(options.port);
  const host = options.listen?.host ?? "127.0.0.1";
  const listenPort = options.listen?.port ?? 0;
  if (!Number.isInteger(listenPort) || listenPort < 0 || listenPort > 65535) {
    throw new Error(`listen.port must be an integer from 0 to 65535, got ${String(listenPort)}`);
  }
  // One transport for the forward's life, shared by its connections.
  const lease = acquireTransport(options);
  const { listen: _listen, ...connectOptions } = options;
  const open = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (local) => {
    open.add(local);
    local.once("close", () => open.delete(local));
    const remote = connectMqtt({ ...connectOptions, allowHalfOpen: true });
    splice(local, remote);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(listenPort, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    lease.release();
    throw e;
  }
  const bound = server.address();
  const address =
    typeof bound === "object" && bound !== null
      ? { host: bound.address, port: bound.port }
      : { host, port: listenPort };
  let closing: Promise<void> | undefined;
  return {
    address,
    get connections() {
      return open.size;
    },
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const local of open) local.resetAndDestroy();
        });
        lease.release();
      })();
      return closing;
    },
  };
}

/** Options of {@link exposePort}: those of `listenMqtt`, and the one TCP target. */
export interface ExposePortOptions extends Omit<ListenMqttOptions, "allowHalfOpen"> {
  /**
   * The TCP address every connection is forwarded to, and the only one:
   * nothing a caller sends can name another. `host` defaults to `127.0.0.1`.
   */
  readonly target: { readonly host?: string; readonly port: number };
}

/** A running {@link exposePort}. */
export interface ExposedPort {
  /** The listener that serves the virtual port. */
  readonly listener: MqttListener;
  /** The TCP target connections go to. */
  readonly target: { readonly host: string; readonly port: number };
  /** Forwarded connections open now. */
  readonly connections: number;
  /** Stops accepting, resets open connections (after the listener's grace) and closes. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves virtual port `port` of `serverId` by connecting each connection
 * to `target` (TCP, `127.0.0.1` by default), as `ssh -R` does: a device
 * exposes its SSH daemon or local HTTP server without an inbound port. The
 * call is accepted only once the target accepted the TCP connection; a
 * target that refuses reaches the caller as `ECONNREFUSED`.
 *
 * @throws Error naming the option for invalid options (as listenMqtt).
 */
export async function exposePort(options: ExposePortOptions): Promise<ExposedPort> {
  if (typeof options !== "object" || options === null || typeof options.target !== "object") {
    throw new Error("exposePort: options must be an object with mqtt, serverId, port and target");
  }
  const target = {
    host: options.target.host ?? "127.0.0.1",
    port: checkPort(options.target.port, "target.port"),
  };
  const targets = new WeakMap<MqttSocket, Socket>();
  const listener = await openListener(
    { ...options, allowHalfOpen: true },
    (socket) =>
      new Promise<void>((resolve, reject) => {
        const tcp = createConnection({
          host: target.host,
          port: target.port,
          allowHalfOpen: true,
          noDelay: true,
        });
        targets.set(socket, tcp);
        const refused = (e: Error & { code?: string }) => {
          reject(
            new ConnectError(
              `target ${target.host}:${target.port} refused the connection: ${e.code ?? e.message}`,
              Code.Unavailable,
            ),
          );
        };
        tcp.once("error", refused);
        tcp.once("connect", () => {
          tcp.off("error", refused);
          resolve();
        });
      }),
  );
  listener.on("connection", (socket: MqttSocket) => {
    const tcp = targets.get(socket);
    if (tcp !== undefined) splice(tcp, socket);
  });
  let closing: Promise<void> | undefined;
  return {
    listener,
    target,
    get connections() {
      return listener.connections;
    },
    close() {
      closing ??= listener.close();
      return closing;
    },
  };
}

/**
 * Joins a TCP socket and a bridged socket both ways. End-of-stream crosses
 * as end-of-stream; an error on one side resets the other (the TCP side
 * with an RST).
 */
function splice(tcp: Socket, bridged: MqttSocket): void {
  tcp.pipe(bridged);
  bridged.pipe(tcp);
  tcp.on("error", (e) => {
    if (!bridged.destroyed) bridged.destroy(e);
  });
  bridged.on("error", () => {
    if (!tcp.destroyed) tcp.resetAndDestroy();
  });
}
