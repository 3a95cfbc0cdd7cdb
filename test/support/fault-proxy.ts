/**
 * A TCP proxy between one MQTT client and the broker that the test
 * controls: reset every connection (RST both ways), stall traffic, refuse
 * new connections. Faults happen on the real TCP path, so MQTT.js, the
 * broker and mqrpc all see what a flaky link does; nothing is mocked.
 */
import { createServer, type Server, Socket } from "node:net";

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

export class FaultProxy {
  private readonly pairs = new Set<Pair>();
  private readonly closedWaiters = new Set<() => void>();
  private refusing = false;
  private stalled = false;
  /** Connections accepted so far (reconnects included). */
  connections = 0;

  private constructor(
    private readonly server: Server,
    private readonly target: { host: string; port: number },
    readonly port: number,
  ) {}

  /** Starts a proxy on a free port in front of the broker at `brokerUrl`. */
  static async start(brokerUrl: string): Promise<FaultProxy> {
    const url = new URL(brokerUrl);
    const target = { host: url.hostname, port: Number(url.port) };
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    const proxy = new FaultProxy(server, target, port);
    server.on("connection", (client) => proxy.accept(client));
    return proxy;
  }

  /** Connections open now. */
  get open(): number {
    return this.pairs.size;
  }

  /** Resolves once `count` connections are open (checked as connections close). */
  async untilOpen(count: number): Promise<void> {
    while (this.pairs.size !== count) {
      await new Promise<void>((resolve) => this.closedWaiters.add(resolve));
    }
  }

  /** The URL clients use instead of the broker's. */
  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Resets every open connection in both directions, as a dropped link does. */
  resetAll(): void {
    for (const pair of [...this.pairs]) this.kill(pair);
  }

  /** Stops forwarding bytes (both ways) until {@link resume}. */
  stall(): void {
    this.stalled = true;
    for (const { client, upstream } of this.pairs) {
      client.pause();
      upstream.pause();
    }
  }

  resume(): void {
    this.stalled = false;
    for (const { client, upstream } of this.pairs) {
      client.resume();
      upstream.resume();
    }
  }

  /** While on, new connections are reset at once: the peer looks gone for good. */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  async close(): Promise<void> {
    this.resetAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    this.connections++;
    client.setNoDelay(true);
    const upstream = new Socket();
    upstream.setNoDelay(true);
    const pair = { client, upstream };
    this.pairs.add(pair);
    upstream.connect(this.target.port, this.target.host);
    client.pipe(upstream);
    upstream.pipe(client);
    if (this.stalled) {
      client.pause();
      upstream.pause();
    }
    const end = () => this.kill(pair);
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  }

  private kill(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    for (const wake of this.closedWaiters) wake();
    this.closedWaiters.clear();
    pair.client.unpipe();
    pair.upstream.unpipe();
    if (!pair.client.destroyed) pair.client.resetAndDestroy();
    if (!pair.upstream.destroyed) pair.upstream.resetAndDestroy();
  }
}
