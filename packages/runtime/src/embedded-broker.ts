/**
 * An in-process MQTT broker (Aedes) for demos, tests and single-process
 * deployments. Aedes and `node:net` are imported only when
 * {@link startEmbeddedBroker} runs, so the client's import graph stays free of
 * Node-only modules.
 */

/** Options for {@link startEmbeddedBroker}. */
export interface EmbeddedBrokerOptions {
  /** TCP port; 0 (the default) picks a free one. */
  readonly port?: number;
  /** Interface to listen on; defaults to the loopback address 127.0.0.1. */
  readonly host?: string;
}

/** A running embedded broker. */
export interface EmbeddedBroker {
  /** `mqtt://host:port`, ready for `createMqttTransport({ mqtt: url })`. */
  readonly url: string;
  /** The port actually bound. */
  readonly port: number;
  /** Disconnects every client and stops listening. */
  close(): Promise<void>;
}

/**
 * Starts Aedes on a TCP port (free by default) with TCP_NODELAY on every
 * accepted socket: without it a QoS 1 round trip on loopback waits for
 * delayed ACKs and takes tens of milliseconds instead of a fraction of one.
 * Speaks MQTT 3.1.1 (Aedes has no MQTT 5).
 *
 * For development and tests: it has **no authentication and no ACL**. Any
 * client that reaches it can read, forge and cancel every call and write
 * any server's presence. It listens on 127.0.0.1 unless given another
 * `host`; do not expose it on a network you do not trust (docs/SECURITY.md).
 */
export async function startEmbeddedBroker(
  options: EmbeddedBrokerOptions = {},
): Promise<EmbeddedBroker> {
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`port must be an integer from 0 to 65535, got ${port}`);
  }
  const host = options.host ?? "127.0.0.1";
  const [{ Aedes }, net] = await Promise.all([import("aedes"), import("node:net")]);
  const aedes = await Aedes.createBroker();
  const sockets = new Set<import("node:net").Socket>();
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    aedes.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address !== null ? address.port : port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `mqtt://${urlHost}:${boundPort}`,
    port: boundPort,
    close() {
      closing ??= (async () => {
        // server.close() only stops accepting; its callback waits for every
        // accepted connection to end. Clients reconnect rather than leave,
        // so the connections are ended here: Aedes closes the clients it
        // knows (publishing their wills), then whatever is left (sockets
        // that never sent CONNECT, or that Aedes is still closing) is
        // destroyed.
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await stopped;
      })();
      return closing;
    },
  };
}
