/**
 * One MQTT connection as mqrpc uses it: TCP_NODELAY on its socket, one
 * `message` listener that routes by topic to the transports and servers
 * sharing the connection, publish with the broker's packet size in mind, and
 * reference counting so a shared connection closes only when its owner says.
 */
import {
  connect,
  type IClientOptions,
  type IClientPublishOptions,
  type IConnackPacket,
  type IPublishPacket,
  MqttClient,
} from "mqtt";
import { PublishCoalescer, type PublishFailureListener } from "./publish-coalescer.js";

/**
 * How mqrpc reaches the broker: a URL (`mqtt://host:1883`, `mqtts://…`,
 * `ws://…`), MQTT.js client options (with `url` or host/port), or an existing
 * `MqttClient` that carries the application's own TLS, auth, WebSocket and
 * reconnect settings. Transports and servers given the same `MqttClient`
 * share it; one made from a URL or options is owned and closed by mqrpc.
 */
export type MqttConnectionInput =
  | string
  | (IClientOptions & { readonly url?: string })
  | MqttClient;

/** Receives a message published on a routed topic. */
export type TopicHandler = (topic: string, payload: Uint8Array, packet: IPublishPacket) => void;

/** A last will to install when mqrpc opens the connection itself. */
export interface LinkWill {
  readonly topic: string;
  readonly payload: Uint8Array;
}

const links = new WeakMap<MqttClient, MqttLink>();

/** MQTT.js copies publish options, so one object serves every publish. */
const QOS_1: IClientPublishOptions = { qos: 1 };

/** How long closing waits for in-flight publishes before it forces the close. */
const CLOSE_GRACE_MS = 2000;

/** Thrown for an `mqtt` option that cannot be used. */
function configError(message: string): Error {
  return new Error(`mqtt option: ${message}`);
}

/** A routed MQTT connection; see the module comment. */
export class MqttLink {
  /** The largest MQTT packet the broker accepts, from an MQTT 5 CONNACK. */
  brokerMaxPacketSize: number | undefined;
  /** Whether mqrpc installed its last will on this connection. */
  readonly willInstalled: boolean;

  private readonly exact = new Map<string, TopicHandler>();
  private readonly prefixes = new Map<string, TopicHandler>();
  private refs = 0;
  private readonly resources = new Map<string, unknown>();
  private readonly filters = new Set<string>();

  private constructor(
    readonly client: MqttClient,
    private readonly owned: boolean,
    willInstalled: boolean,
  ) {
    this.willInstalled = willInstalled;
    client.setMaxListeners(0);
    const onConnect = (connack: IConnackPacket) => {
      this.brokerMaxPacketSize = connack.properties?.maximumPacketSize;
      setNoDelay(client);
    };
    client.on("connect", onConnect);
    if (client.connected) setNoDelay(client);
    client.on("message", (topic, payload, packet) => this.dispatch(topic, payload, packet));
    // An owned client's errors (refused auth, broken socket) surface through
    // the calls that fail; without a listener Node would crash the process.
    if (owned) client.on("error", () => {});
  }

  /**
   * Returns the link for `input`, creating the MQTT client when given a URL
   * or options. `will` is installed only on a client mqrpc creates; a shared
   * `MqttClient` keeps whatever will it was connected with.
   */
  static acquire(input: MqttConnectionInput, will?: (clientId: string) => LinkWill): MqttLink {
    let link: MqttLink;
    if (input instanceof MqttClient) {
      link = links.get(input) ?? new MqttLink(input, false, false);
      links.set(input, link);
    } else {
      const options = resolveOptions(input, will);
      const { url, ...rest } = options;
      const client = url === undefined ? connect(rest) : connect(url, rest);
      link = new MqttLink(client, true, will !== undefined && options.will !== undefined);
    }
    link.refs++;
    return link;
  }

  /** The MQTT client id; mqrpc derives client keys and instance ids from it. */
  get clientId(): string {
    return this.client.options.clientId ?? "";
  }

  /** The MQTT protocol level of the connection (4 is 3.1.1, 5 is MQTT 5). */
  get protocolVersion(): number {
    return this.client.options.protocolVersion ?? 4;
  }

  /** Resolves once the connection is up (immediately if it already is). */
  connected(signal?: AbortSignal): Promise<void> {
    if (this.client.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        this.client.off("connect", done);
        signal?.removeEventListener("abort", aborted);
        resolve();
      };
      const aborted = () => {
        this.client.off("connect", done);
        reject(signal?.reason);
      };
      this.client.on("connect", done);
      signal?.addEventListener("abort", aborted, { once: true });
    });
  }

  /**
   * Returns the connection-wide object stored under `key`, creating it on
   * first use. This is how transports sharing a connection share one reply
   * subscription and one presence watch per server.
   */
  resource<T>(key: string, create: () => T): T {
    if (!this.resources.has(key)) this.resources.set(key, create());
    return this.resources.get(key) as T;
  }

  /** Routes messages on exactly `topic` to `handler`. Returns the undo. */
  routeExact(topic: string, handler: TopicHandler): () => void {
    if (this.exact.has(topic)) {
      throw new Error(`topic ${topic} is already routed on this connection`);
    }
    this.exact.set(topic, handler);
    return () => this.exact.delete(topic);
  }

  /** Routes messages on every topic starting with `prefix`. Returns the undo. */
  routePrefix(prefix: string, handler: TopicHandler): () => void {
    if (this.prefixes.has(prefix)) {
      throw new Error(`topic prefix ${prefix} is already routed on this connection`);
    }
    this.prefixes.set(prefix, handler);
    return () => this.prefixes.delete(prefix);
  }

  /**
   * Subscribes at QoS 1 and checks the grant: a broker that refuses the
   * subscription (ACL) answers with a failure code that MQTT.js passes on
   * without an error.
   */
  async subscribe(filter: string): Promise<void> {
    this.filters.add(filter);
    const grants = await this.client.subscribeAsync(filter, { qos: 1 });
    for (const grant of grants) {
      if (grant.qos >= 0x80) {
        throw new Error(`the broker refused the subscription to ${filter} (code ${grant.qos})`);
      }
    }
  }

  /** Unsubscribes, ignoring a connection that is already gone. */
  async unsubscribe(filter: string): Promise<void> {
    this.filters.delete(filter);
    if (this.client.disconnecting || this.client.disconnected) return;
    await this.client.unsubscribeAsync(filter).catch(() => {});
  }

  /**
   * Publishes one call frame at QoS 1, sharing the publish with frames of
   * other calls due on the same topic in this turn (see PublishCoalescer),
   * unless `alone`.
   */
  sendFrame(
    topic: string,
    callId: number,
    frame: Uint8Array,
    maxBytes: number,
    onError: PublishFailureListener,
    alone = false,
  ): void {
    this.coalescer.send(topic, callId, frame, maxBytes, onError, alone);
  }

  private readonly coalescer = new PublishCoalescer((topic, payload, done) => {
    this.client.publish(topic, asBuffer(payload), QOS_1, done);
  });

  /** Publishes at QoS 1 (the default); resolves on PUBACK. */
  publish(topic: string, payload: Uint8Array, options?: IClientPublishOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.publish(
        topic,
        asBuffer(payload),
        options ? { qos: 1, ...options } : QOS_1,
        (error) => (error ? reject(error) : resolve()),
      );
    });
  }

  /** Drops one reference; the owner's last release ends the connection. */
  async release(): Promise<void> {
    // Frames waiting for the end of this turn go to MQTT.js now, so a close
    // right after a call's last frame (a Cancel, an End) still sends it.
    this.coalescer.flushAll();
    if (--this.refs > 0) return;
    if (this.owned) {
      // The session is persistent: leave nothing subscribed in it, so the
      // broker queues nothing for a peer that is gone for good.
      if (this.client.connected && this.filters.size > 0) {
        await this.client.unsubscribeAsync([...this.filters]).catch(() => {});
      }
      // Let publishes in flight finish, but never hang on one the broker
      // will not acknowledge (a dead link): force the close after a grace.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const graceful = this.client.endAsync(false).catch(() => {});
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), CLOSE_GRACE_MS);
      });
      if (await Promise.race([graceful.then(() => false), timedOut])) {
        await this.client.endAsync(true).catch(() => {});
      }
      clearTimeout(timer);
    } else {
      links.delete(this.client);
    }
  }

  private dispatch(topic: string, payload: Uint8Array, packet: IPublishPacket): void {
    const handler = this.exact.get(topic) ?? this.prefixHandler(topic);
    handler?.(topic, payload, packet);
  }

  private prefixHandler(topic: string): TopicHandler | undefined {
    for (const [prefix, handler] of this.prefixes) {
      if (topic.startsWith(prefix)) return handler;
    }
    return undefined;
  }
}

/** MQTT.js wants a Buffer; in Node, wrap the bytes without copying them. */
function asBuffer(bytes: Uint8Array): Buffer {
  const NodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer;
  if (NodeBuffer === undefined || NodeBuffer.isBuffer(bytes)) return bytes as Buffer;
  return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function setNoDelay(client: MqttClient): void {
  const stream = client.stream as unknown as
    | { setNoDelay?: (noDelay: boolean) => void }
    | undefined;
  stream?.setNoDelay?.(true);
}

function resolveOptions(
  input: string | (IClientOptions & { readonly url?: string }),
  will: ((clientId: string) => LinkWill) | undefined,
): IClientOptions & { url?: string } {
  const options: IClientOptions & { url?: string } =
    typeof input === "string" ? { url: input } : { ...input };
  if (typeof input === "string" && input.trim() === "") {
    throw configError("the broker URL is empty");
  }
  if (typeof input !== "string" && options.url === undefined && options.host === undefined) {
    throw configError("give a URL string, options with url or host, or an MqttClient");
  }
  options.clientId ??= `mqrpc_${randomId()}`;
  options.reconnectPeriod ??= 500;
  options.connectTimeout ??= 10_000;
  // A dead link is noticed by the broker within 1.5 keepalives, which bounds
  // how long a vanished server looks online.
  options.keepalive ??= 15;
  // Persistent sessions: while a peer reconnects, the broker keeps its
  // subscriptions and queues the QoS 1 frames of its calls, so calls in
  // flight survive a dropped link. The cost: a session outlives a process
  // that never comes back, until it expires (MQTT 5: after
  // sessionExpiryInterval, default 5 minutes here; MQTT 3.1.1: per broker
  // settings, e.g. Mosquitto's persistent_client_expiration).
  options.clean ??= false;
  if (options.protocolVersion === 5 && options.clean === false) {
    options.properties = { sessionExpiryInterval: 300, ...options.properties };
  }
  if (will !== undefined && options.will === undefined) {
    const { topic, payload } = will(options.clientId);
    options.will = { topic, payload: asBuffer(payload), qos: 1, retain: true };
  }
  return options;
}

function randomId(): string {
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
