/**
 * One MQTT connection as mqrpc uses it: TCP_NODELAY on its socket, one
 * `message` listener that routes by topic to the transports and servers
 * sharing the connection, publish with the broker's packet size in mind,
 * and reference counting (of the link, its subscriptions and its shared
 * objects) so that a connection mqrpc opened closes when its last user
 * leaves, and one the application shared is left as mqrpc found it.
 */
// The default import: MQTT.js's browser build (its "browser" export) is an
// ES module with a default export only, so named value imports would fail
// to bundle; in Node the default is the CommonJS exports object.
import mqtt, {
  type IClientOptions,
  type IClientPublishOptions,
  type IPublishPacket,
  type MqttClient,
  type Packet,
} from "mqtt";
import { afterThisTurn } from "../flow/event-loop-turn.js";
import { MIN_PUBLISH_BYTES } from "../wire/limits.js";
import { mqttInputProblem } from "./broker-url.js";
import { PublishCoalescer, type PublishFailureListener } from "./publish-coalescer.js";
import { PacketTooLargeError } from "./publish-error.js";

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

/**
 * The session a link mqrpc opens asks for, unless the options say: a
 * persistent one (calls survive a dropped link), or a clean one (a
 * replicated server's: while it is gone the broker must not keep handing it
 * new calls through its shared subscription).
 */
export type SessionDefault = "persistent" | "clean";

/** A last will to install when mqrpc opens the connection itself. */
export interface LinkWill {
  readonly topic: string;
  readonly payload: Uint8Array;
}

/**
 * One holder's share of a connection-wide object (see
 * {@link MqttLink.acquireResource}).
 */
export interface LinkResourceLease<T> {
  /** The shared object. */
  readonly value: T;
  /**
   * Gives this share back; the last one disposes of the object. Idempotent.
   * Resolves once the disposal (if this was the last share) is done.
   */
  release(): Promise<void>;
}

const links = new WeakMap<MqttClient, MqttLink>();

/**
 * Connections mqrpc opened, by connection key (see {@link connectionKey}):
 * transports and servers given equal connection options share one.
 */
const sharedLinks = new Map<string, MqttLink>();

/** Client ids of the connections mqrpc opened that are open in this process. */
const openClientIds = new Map<string, MqttLink>();

/**
 * UNSUBSCRIBEs sent and not yet acknowledged, per client and filter. A
 * SUBSCRIBE to such a filter waits for the UNSUBACK: sent before it, MQTT.js
 * would skip it as a duplicate while its UNSUBSCRIBE still waits in its
 * queue (after a reconnect), and a broker that handles the two
 * concurrently (Aedes) may remove the new subscription with the old one.
 */
const unsubscribing = new WeakMap<MqttClient, Map<string, Promise<void>>>();

/** MQTT 5 session expiry of the sessions mqrpc asks for, in seconds (PROTOCOL.md 2.1). */
export const SESSION_EXPIRY_SECONDS = 60;

/** MQTT.js copies publish options, so one object serves every publish. */
const QOS_1: IClientPublishOptions = { qos: 1 };

/**
 * How long closing waits for in-flight publishes (and for the broker to
 * acknowledge unsubscribing) before it forces the close.
 */
export const CLOSE_GRACE_MS = 2000;

/** First and longest wait before subscribing again after the broker refused a resubscription, in ms. */
const RESUBSCRIBE_RETRY_MS = 1000;
const RESUBSCRIBE_RETRY_MAX_MS = 30_000;

/** The MQTT 5 reason code of a DISCONNECT over a packet that was too large. */
const PACKET_TOO_LARGE = 0x95;

/** The MQTT 5 reason code of a PUBACK the broker's ACL refused. */
const NOT_AUTHORIZED = 0x87;

/** The MQTT 5 reason code of a DISCONNECT because another connection took the client id. */
const SESSION_TAKEN_OVER = 0x8e;

const noop = () => {};

/** Thrown for an `mqtt` option that cannot be used. */
function configError(message: string): Error {
  return new Error(`mqtt option: ${message}`);
}

interface SharedResource {
  readonly value: unknown;
  /** Shares handed out and not given back; `resource()` shares are never given back. */
  holders: number;
  readonly dispose: (() => unknown) | undefined;
}

interface Subscription {
  holders: number;
  readonly granted: Promise<void>;
  /**
   * False when MQTT.js found the filter subscribed already (by the
   * application, on a shared client) and sent nothing: then it is not the
   * link's to unsubscribe.
   */
  ours: boolean;
  /** Whether the broker granted it (on some connection). */
  acknowledged: boolean;
}

/** A routed MQTT connection; see the module comment. */
export class MqttLink {
  private hasWill: boolean;

  private readonly exact = new Map<string, TopicHandler>();
  private readonly prefixes = new Map<string, TopicHandler>();
  private refs = 0;
  private readonly resources = new Map<string, SharedResource>();
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly oversize = new OversizeWatch();
  /** From the last MQTT 5 CONNACK. */
  private connackMaxPacketSize: number | undefined;
  /** Learned from publishes the broker closed the connection on. */
  private learnedMaxPacketSize: number | undefined;
  /** The error of the last publish dropped for being too large (see {@link explain}). */
  private lastRefusal: PacketTooLargeError | undefined;
  /** The shared client's own setting, restored when mqrpc leaves it. */
  private readonly originalMaxListeners: number;

  private constructor(
    readonly client: MqttClient,
    /** Whether mqrpc opened the connection (false for an `MqttClient` given to it). */
    readonly owned: boolean,
    willInstalled: boolean,
    /** Where the link is registered for sharing (owned links only). */
    private readonly key?: string,
    /** Whether the client id comes back with the next process (given, the username, or a server's), not random. */
    private readonly stableClientId = false,
  ) {
    this.hasWill = willInstalled;
    this.originalMaxListeners = client.getMaxListeners();
    // Servers add a `connect` listener each; many of them on one connection
    // are expected, not a leak.
    client.setMaxListeners(0);
    client.on("packetreceive", this.onPacketReceive);
    client.on("packetsend", this.onPacketSend);
    client.on("close", this.onClose);
    client.on("connect", this.onConnect);
    client.on("message", this.onMessage);
    this.connackMaxPacketSize = client.serverProperties?.maximumPacketSize;
    if (client.connected) setNoDelay(client);
    // An owned client's errors (refused auth, broken socket) surface through
    // the calls that fail; without a listener Node would crash the process.
    if (owned) client.on("error", noop);
  }

  /**
   * Returns the link for `input`, creating the MQTT client when given a URL
   * or options. Every acquire takes a reference that {@link release} gives
   * back.
   *
   * Sharing: transports and servers given the same `MqttClient` share it;
   * those given equal URLs or options (same values, same `session`) share
   * one connection mqrpc opens, closed with its last user. Options holding
   * functions or objects other than plain data and bytes are not compared
   * and get a connection of their own.
   *
   * `will` (a server's presence) is installed only on a connection mqrpc
   * opens; a shared `MqttClient` keeps whatever will it was connected with.
   * A connection carries one will: a server joins an open connection of
   * equal options only if it has none yet and its client id is the
   * application's (then the will is installed and the connection made
   * again); otherwise it opens its own, with `defaultClientId` when the
   * options name none.
   *
   * @throws Error naming the `mqtt` option when two connections of this
   *   process would use the same client id (the broker would drop one of
   *   them each time the other connects).
   */
  static acquire(
    input: MqttConnectionInput,
    will?: (clientId: string) => LinkWill,
    session: SessionDefault = "persistent",
    defaultClientId?: string,
  ): MqttLink {
    if (input instanceof mqtt.MqttClient) {
      const link = links.get(input) ?? new MqttLink(input, false, false);
      links.set(input, link);
      link.refs++;
      return link;
    }
    const key = connectionKey(input, session);
    const open = key === undefined ? undefined : sharedLinks.get(key);
    if (open !== undefined && (will === undefined || (!open.hasWill && open.stableClientId))) {
      if (will !== undefined) open.installWill(will);
      open.refs++;
      return open;
    }
    const { options, stable, resume } = resolveOptions(input, will, session, defaultClientId);
    const clientId = options.clientId ?? "";
    if (openClientIds.has(clientId)) {
      throw configError(
        `client id "${clientId}" is already connected from this process with other options, ` +
          "or by another mqrpc server (a connection carries one server's last will); " +
          "give each server its own clientId (with use_username_as_clientid: its own account), " +
          "or give transports the same options so that they share one connection",
      );
    }
    const { url, ...rest } = options;
    const client = url === undefined ? mqtt.connect(rest) : mqtt.connect(url, rest);
    const link = new MqttLink(
      client,
      true,
      will !== undefined && options.will !== undefined,
      key,
      stable,
    );
    if (resume) {
      // The first connect starts clean: a new process never inherits the
      // session (and the queued frames) of an earlier one under its client
      // id. Reconnects resume the session it made (PROTOCOL.md 2.1).
      client.once("connect", () => {
        client.options.clean = false;
      });
    }
    if (key !== undefined && (open === undefined || (will !== undefined && !open.hasWill))) {
      sharedLinks.set(key, link);
    }
    openClientIds.set(clientId, link);
    link.refs++;
    return link;
  }

  /**
   * Why a broker may refuse mqrpc's own topics: one that makes client ids
   * from usernames (SECURITY.md) gave this connection another id than mqrpc
   * uses in its topics.
   */
  private identityHint(): string {
    const { username, clientId } = this.client.options;
    return username !== undefined && username !== clientId
      ? `; the client id "${clientId}" is not the username "${username}": a broker with use_username_as_clientid uses the username as client id, so leave clientId unset or equal to it`
      : "";
  }

  /** Whether this connection carries an mqrpc server's last will (its presence). */
  get willInstalled(): boolean {
    return this.hasWill;
  }

  /**
   * Installs a server's will on a connection opened without one: the will
   * goes into the CONNECT packet, so a connection that is up (or whose
   * CONNECT went out) is made again; its session and its publishes in
   * flight carry over.
   */
  private installWill(will: (clientId: string) => LinkWill): void {
    const { topic, payload } = will(this.clientId);
    this.client.options.will = { topic, payload: asBuffer(payload), qos: 1, retain: true };
    this.hasWill = true;
    if (!this.client.reconnecting) this.client.stream?.destroy();
  }

  /**
   * The largest MQTT packet the broker accepts, when known: from an MQTT 5
   * CONNACK, or learned from a publish the broker closed the connection on
   * (MQTT 3.1.1, see {@link OversizeWatch}); the smaller of the two.
   */
  get brokerMaxPacketSize(): number | undefined {
    const announced = this.connackMaxPacketSize;
    const learned = this.learnedMaxPacketSize;
    if (announced === undefined) return learned;
    return learned === undefined ? announced : Math.min(announced, learned);
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
   * Takes a share of the connection-wide object stored under `key`,
   * creating it on first use. This is how transports sharing a connection
   * share one reply subscription and one presence watch per server.
   *
   * When the last share is released, the object is disposed of: by
   * `dispose` if given, else by the object's own `dispose()` method if it
   * has one. Disposal is where an object undoes what it set up on the link:
   * its routes (the undo functions of {@link routeExact} and
   * {@link routePrefix}), its subscriptions ({@link unsubscribe}), its
   * timers. Objects still held when the link's last reference is released
   * are disposed of then.
   */
  acquireResource<T>(
    key: string,
    create: () => T,
    dispose?: (value: T) => unknown,
  ): LinkResourceLease<T> {
    let shared = this.resources.get(key);
    if (shared === undefined) {
      const value = create();
      const own = (value as { dispose?: unknown } | null | undefined)?.dispose;
      shared = {
        value,
        holders: 0,
        dispose:
          dispose !== undefined
            ? () => dispose(value)
            : typeof own === "function"
              ? () => (own as () => unknown).call(value)
              : undefined,
      };
      this.resources.set(key, shared);
    }
    shared.holders++;
    const held = shared;
    let released = false;
    return {
      value: held.value as T,
      release: async () => {
        if (released) return;
        released = true;
        if (--held.holders > 0 || this.resources.get(key) !== held) return;
        this.resources.delete(key);
        await held.dispose?.();
      },
    };
  }

  /**
   * Returns the connection-wide object stored under `key`, creating it on
   * first use, for as long as the link lives (it is disposed of with the
   * link's last reference). Prefer {@link acquireResource}, which lets the
   * object go when its last user does.
   */
  resource<T>(key: string, create: () => T): T {
    return this.acquireResource(key, create).value;
  }

  /**
   * Routes messages on exactly `topic` to `handler`, as well as to a prefix
   * route that covers it (see {@link routePrefix}). Returns the undo.
   */
  routeExact(topic: string, handler: TopicHandler): () => void {
    if (this.exact.has(topic)) {
      throw new Error(`topic ${topic} is already routed on this connection`);
    }
    this.exact.set(topic, handler);
    return () => {
      if (this.exact.get(topic) === handler) this.exact.delete(topic);
    };
  }

  /** Routes messages on every topic starting with `prefix`. Returns the undo. */
  routePrefix(prefix: string, handler: TopicHandler): () => void {
    if (this.prefixes.has(prefix)) {
      throw new Error(`topic prefix ${prefix} is already routed on this connection`);
    }
    this.prefixes.set(prefix, handler);
    this.prefixList = undefined;
    return () => {
      if (this.prefixes.get(prefix) !== handler) return;
      this.prefixes.delete(prefix);
      this.prefixList = undefined;
    };
  }

  /**
   * Subscribes to `filter` at QoS 1 and checks the grant: a broker that
   * refuses the subscription (ACL) answers with a failure code that MQTT.js
   * passes on without an error. Counted per filter: only the first
   * subscriber sends SUBSCRIBE, later ones wait for the same grant, and each
   * owes one {@link unsubscribe}. A refused subscription is forgotten (the
   * next subscriber asks again). A filter the application subscribed itself
   * on a shared client is left subscribed when the link is done with it.
   */
  subscribe(filter: string): Promise<void> {
    let subscription = this.subscriptions.get(filter);
    if (subscription === undefined) {
      // MQTT.js records a filter as subscribed when it sends SUBSCRIBE, and
      // keeps that record when the connection drops before the SUBACK; a
      // plain subscribe() of it then sends nothing and reports no grants,
      // and a resumed session ("session present") has no such subscription.
      // So an attempt after a drop makes MQTT.js send the SUBSCRIBE.
      const attempt = (again: boolean): Promise<void> =>
        this.client
          .subscribeAsync(again ? ({ [filter]: { qos: 1 }, resubscribe: true } as never) : filter, {
            qos: 1,
          })
          .then(
            (grants) => {
              if (grants.length === 0) created.ours = false;
              for (const grant of grants) {
                if (grant.qos >= 0x80) {
                  throw new Error(
                    `the broker refused the subscription to ${filter} (code ${grant.qos})${this.identityHint()}`,
                  );
                }
              }
              created.acknowledged = true;
            },
            (e: unknown) => {
              // The connection dropped before the SUBACK (a reset, or a will
              // being installed): subscribe again once it is back.
              const dropped = e instanceof Error && e.message === "Connection closed";
              if (
                !dropped ||
                this.client.disconnecting ||
                this.subscriptions.get(filter) !== created
              ) {
                throw e;
              }
              return this.connected().then(() => attempt(true));
            },
          );
      const pending = unsubscribing.get(this.client)?.get(filter);
      const granted = pending === undefined ? attempt(false) : pending.then(() => attempt(false));
      const created: Subscription = { holders: 0, granted, ours: true, acknowledged: false };
      granted.catch(() => {
        if (this.subscriptions.get(filter) === created) this.subscriptions.delete(filter);
      });
      subscription = created;
      this.subscriptions.set(filter, subscription);
    }
    subscription.holders++;
    return subscription.granted;
  }

  /**
   * Sends SUBSCRIBE again for a filter this link holds, so that the broker
   * delivers its retained messages again: after a reconnect that resumed the
   * session, messages queued meanwhile may have been dropped (a broker's
   * queue limit) while no new SUBSCRIBE would bring them back. Resolves
   * on the SUBACK (the retained messages come with it) or a failure.
   */
  refresh(filter: string): Promise<void> {
    if (!this.subscriptions.has(filter)) return Promise.resolve();
    return new Promise((resolve) => {
      this.client.subscribe({ [filter]: { qos: 1 }, resubscribe: true } as never, () => resolve());
    });
  }

  /**
   * Gives back one {@link subscribe} of `filter`; the last one unsubscribes.
   * Waits for the broker's acknowledgement while connected (at most
   * {@link CLOSE_GRACE_MS}); offline, the UNSUBSCRIBE goes out on reconnect.
   */
  async unsubscribe(filter: string): Promise<void> {
    const subscription = this.subscriptions.get(filter);
    if (subscription === undefined || --subscription.holders > 0) return;
    this.subscriptions.delete(filter);
    if (subscription.ours) await this.sendUnsubscribe([filter]);
  }

  /**
   * Publishes one call frame at QoS 1, sharing the publish with frames of
   * other calls due on the same topic in this turn (see PublishCoalescer),
   * unless `alone`. A publish larger than the broker accepts fails with a
   * {@link PacketTooLargeError}, reported to `onError`.
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

  private readonly coalescer = new PublishCoalescer(
    (topic, payload, done) => {
      const refusal = this.refusal(topic, payload.byteLength);
      if (refusal !== undefined) done(refusal);
      else this.client.publish(topic, asBuffer(payload), QOS_1, done);
    },
    undefined,
    (error) => this.explain(error),
  );

  /**
   * Publishes at QoS 1 (the default); resolves on PUBACK. A publish larger
   * than the broker accepts rejects with a {@link PacketTooLargeError}.
   */
  publish(topic: string, payload: Uint8Array, options?: IClientPublishOptions): Promise<void> {
    const refusal = this.refusal(topic, payload.byteLength);
    if (refusal !== undefined) return Promise.reject(refusal);
    return new Promise((resolve, reject) => {
      this.client.publish(
        topic,
        asBuffer(payload),
        options ? { qos: 1, ...options } : QOS_1,
        (error) => (error ? reject(this.explain(error)) : resolve()),
      );
    });
  }

  /**
   * Drops one reference. The last one disposes of the shared objects still
   * held, unsubscribes what the link still has subscribed and removes the
   * link's listeners; then a connection mqrpc opened is closed, and a shared
   * `MqttClient` is left as mqrpc found it (still connected).
   */
  async release(): Promise<void> {
    // Frames waiting for the end of this turn go to MQTT.js now, so a close
    // right after a call's last frame (a Cancel, an End) still sends it.
    this.coalescer.flushAll();
    if (--this.refs > 0) return;
    if (links.get(this.client) === this) links.delete(this.client);
    if (this.key !== undefined && sharedLinks.get(this.key) === this) sharedLinks.delete(this.key);
    if (openClientIds.get(this.clientId) === this) openClientIds.delete(this.clientId);
    // Everything below that talks to MQTT.js happens before the first await,
    // so a link made on the same client right after this one (a transport
    // closed and created again) subscribes after this one unsubscribed.
    const disposals: Promise<unknown>[] = [];
    for (const shared of [...this.resources.values()].reverse()) {
      try {
        disposals.push(Promise.resolve(shared.dispose?.()).catch(noop));
      } catch {
        // Disposal is best effort here: the link goes anyway.
      }
    }
    this.resources.clear();
    this.exact.clear();
    this.prefixes.clear();
    this.prefixList = undefined;
    // The session may be persistent: leave nothing subscribed in it, so the
    // broker queues nothing for a peer that is gone for good.
    const filters: string[] = [];
    for (const [filter, subscription] of this.subscriptions) {
      if (subscription.ours) filters.push(filter);
    }
    this.subscriptions.clear();
    const unsubscribed =
      filters.length > 0 && (this.client.connected || !this.owned)
        ? this.sendUnsubscribe(filters)
        : Promise.resolve();
    this.detach();
    await Promise.all([...disposals, unsubscribed]);
    if (this.owned) await this.end();
  }

  /**
   * Ends a connection mqrpc opened. Publishes in flight may finish, but a
   * link that is down (reconnecting to a broker that is gone) is ended at
   * once, and one that drops or does not answer within the grace is forced.
   */
  private async end(): Promise<void> {
    const { client } = this;
    if (!client.connected) {
      await client.endAsync(true).catch(noop);
      return;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    let closed: (() => void) | undefined;
    // A process that leaves on purpose does not come back for its session:
    // MQTT 5 lets the DISCONNECT end it now rather than after its expiry.
    const disconnect =
      this.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0 } } : undefined;
    const graceful = client.endAsync(false, disconnect).then(
      () => true,
      () => true,
    );
    const cut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), CLOSE_GRACE_MS);
      // A graceful end waits for PUBACKs; a connection that drops meanwhile
      // will never bring them (nor reconnect, since it is ending).
      closed = () => resolve(false);
      client.once("close", closed);
    });
    const finished = await Promise.race([graceful, cut]);
    clearTimeout(timer);
    if (closed !== undefined) client.off("close", closed);
    // MQTT.js ignores end(true) while a graceful end is pending, so cut the
    // connection itself (its close handler then stays down: the client is
    // disconnecting). A no-op when the connection already closed.
    if (!finished) client.stream?.destroy();
  }

  /** Removes the listeners the link added and restores the client's listener limit. */
  private detach(): void {
    const { client } = this;
    client.off("packetreceive", this.onPacketReceive);
    client.off("packetsend", this.onPacketSend);
    client.off("close", this.onClose);
    client.off("connect", this.onConnect);
    client.off("message", this.onMessage);
    clearTimeout(this.resubscribeTimer);
    // An owned client keeps its error listener: ending it may still fail.
    if (!this.owned) client.setMaxListeners(this.originalMaxListeners);
  }

  /**
   * Sends UNSUBSCRIBE. Connected, waits for the acknowledgement for at most
   * {@link CLOSE_GRACE_MS}; offline, MQTT.js sends it on reconnect (and
   * stops resubscribing the filters at once), and nothing waits for that.
   */
  private sendUnsubscribe(filters: string[]): Promise<void> {
    if (this.client.disconnecting) return Promise.resolve();
    const acknowledged = this.client.unsubscribeAsync(filters).then(noop, noop);
    let pending = unsubscribing.get(this.client);
    if (pending === undefined) {
      pending = new Map();
      unsubscribing.set(this.client, pending);
    }
    for (const filter of filters) pending.set(filter, acknowledged);
    const byFilter = pending;
    void acknowledged.then(() => {
      for (const filter of filters) {
        if (byFilter.get(filter) === acknowledged) byFilter.delete(filter);
      }
    });
    if (!this.client.connected) return Promise.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      acknowledged,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_GRACE_MS);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /**
   * The error for a publish of `payloadBytes` on `topic` that is larger
   * than the broker is known to accept, or undefined when it may go.
   */
  private refusal(topic: string, payloadBytes: number): PacketTooLargeError | undefined {
    const limit = this.brokerMaxPacketSize;
    if (limit === undefined) return undefined;
    // Cheap bound first: header, topic length, packet id, properties, and
    // at most 3 UTF-8 bytes per UTF-16 unit of the topic.
    if (payloadBytes + 3 * topic.length + 10 <= limit) return undefined;
    const bytes = publishPacketBytes(topic, payloadBytes, this.protocolVersion);
    return bytes <= limit ? undefined : new PacketTooLargeError(bytes, limit, false);
  }

  /**
   * MQTT.js fails a publish the link dropped (see {@link refuseOversize})
   * with a plain "Message removed"; the caller is told why instead.
   */
  private explain(error: unknown): unknown {
    if (!(error instanceof Error)) return error;
    if (this.lastRefusal !== undefined && error.message === "Message removed") {
      return this.lastRefusal;
    }
    const hint = this.identityHint();
    if (hint !== "" && (error as { code?: unknown }).code === NOT_AUTHORIZED) {
      return Object.assign(error, { hint });
    }
    return error;
  }

  private readonly onPacketReceive = (packet: Packet): void => {
    switch (packet.cmd) {
      case "puback":
      case "pubrec":
      case "pubcomp":
        if (packet.messageId !== undefined) this.oversize.acknowledged(packet.messageId);
        break;
      case "connack":
        // MQTT.js emits `connect` only after replaying its store, which a
        // connection that closes meanwhile never reaches: note it here.
        // Owed at every CONNACK, the session present or not (see onConnect).
        this.resubscribeOwed = true;
        this.connacks++;
        this.connackMaxPacketSize = packet.properties?.maximumPacketSize;
        setNoDelay(this.client);
        break;
      case "disconnect":
        if (packet.reasonCode === PACKET_TOO_LARGE) this.oversize.brokerSaidTooLarge();
        if (packet.reasonCode === SESSION_TAKEN_OVER && this.owned) this.takenOver();
        break;
    }
  };

  /**
   * Another connection took this client id (MQTT 5 reason 0x8E): another
   * process runs as the same server or account. Reconnecting would take it
   * back and start a tug of war in which both keep losing calls, so this
   * connection stays down, and calls on it fail naming the cause.
   */
  private takenOver(): void {
    this.yieldClientId(
      `another connection took over client id "${this.clientId}" (MQTT 5 reason 0x8e); ` +
        "this one stays down: run one process per client id, or give each its own clientId or account",
    );
  }

  /** How many connections the broker has accepted (CONNACKs) on this link so far. */
  get connections(): number {
    return this.connacks;
  }

  private connacks = 0;

  /**
   * Leaves the client id to another process that uses it too: this
   * connection does not come back once closed (the other's next connect
   * closes it), and `reason` is the client's error, which calls on it
   * report. Only an owned link yields (a client passed in is its owner's
   * to manage); returns whether this one did.
   */
  yieldClientId(reason: string): boolean {
    if (!this.owned) return false;
    this.client.options.reconnectPeriod = 0;
    const error = new Error(reason);
    this.yieldedId = true;
    this.settleYielded(error);
    this.client.emit("error", error);
    return true;
  }

  /** Whether this link left its client id to another connection ({@link yieldClientId}). */
  get hasYielded(): boolean {
    return this.yieldedId;
  }

  private yieldedId = false;

  // Declared before `yielded`, whose initializer sets it.
  private settleYielded: (reason: Error) => void = () => {};

  /**
   * Resolves with the reason once this link left its client id to another
   * connection ({@link yieldClientId}); never while it keeps it.
   */
  readonly yielded = new Promise<Error>((resolve) => {
    this.settleYielded = resolve;
  });

  private readonly onPacketSend = (packet: Packet): void => {
    if (packet.cmd !== "publish" || packet.qos === 0 || packet.messageId === undefined) return;
    const payload = packet.payload;
    const payloadBytes = typeof payload === "string" ? utf8Length(payload) : payload.byteLength;
    this.oversize.sent(
      packet.messageId,
      publishPacketBytes(packet.topic, payloadBytes, this.protocolVersion),
    );
  };

  /** Whether the link's filters must be subscribed again at the next CONNACK, session or not. */
  private resubscribeOwed = false;

  /** Timer of the next resubscription after the broker refused one. */
  private resubscribeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Delay before the next such resubscription, in ms. */
  private resubscribeDelayMs = RESUBSCRIBE_RETRY_MS;

  /**
   * Subscribes again, once connected after a CONNACK (or after a
   * resubscription that a closing connection cut off), to every filter the
   * broker had acknowledged, whether the broker said the session was
   * present or not. MQTT.js's own resubscription (only without a session)
   * waits behind its replay of unacknowledged publishes; when the
   * connection closes first (a publish the broker refuses), the session
   * the broker made has none of the filters, and the next CONNACK says
   * "session present". And a broker may resume a session without some of
   * its subscriptions: NATS, resuming a session on another node of a
   * cluster while JetStream elects new leaders, drops a subscription whose
   * consumer it could not make, with CONNACK "session present" all the same
   * (docs/DEPLOYMENT.md). A subscription that exists already is replaced by
   * an equal one. A refused resubscription is asked for again, 1 s later
   * and then at doubling intervals up to 30 s, while connected.
   */
  private readonly onConnect = (): void => {
    clearTimeout(this.resubscribeTimer);
    this.resubscribeTimer = undefined;
    if (!this.resubscribeOwed) return;
    const filters: Record<string, { qos: 1 }> = {};
    for (const [filter, subscription] of this.subscriptions) {
      if (subscription.ours && subscription.acknowledged) filters[filter] = { qos: 1 };
    }
    if (Object.keys(filters).length === 0) {
      this.resubscribeOwed = false;
      this.resubscribed();
      return;
    }
    // `resubscribe` makes MQTT.js send filters it believes subscribed.
    // MQTT.js rejects a SUBACK with a refusal (and one cut off by a close).
    this.client.subscribeAsync({ ...filters, resubscribe: true } as never).then((grants) => {
      if (grants.some((grant) => grant.qos >= 0x80)) {
        this.resubscribeLater();
      } else {
        this.resubscribeOwed = false;
        this.resubscribeDelayMs = RESUBSCRIBE_RETRY_MS;
        this.resubscribed();
      }
    }, this.resubscribeLater);
  };

  private readonly resubscribedListeners = new Set<() => void>();

  /**
   * When the link's subscriptions were last in place again after a
   * (re)connect, by `Date.now()`: what a peer missed before then it could
   * not have heard, so silence and graces count from no earlier than this.
   */
  get subscriptionsCurrentSince(): number {
    return this.currentSince;
  }

  private currentSince = Date.now();

  private resubscribed(): void {
    this.currentSince = Date.now();
    for (const listener of [...this.resubscribedListeners]) listener();
  }

  /**
   * Whether the link is connected with its subscriptions in place: what
   * arrives now is news (presence, replies). False while the connection is
   * down and after a reconnect until the resubscription is granted (see
   * {@link onResubscribed}).
   */
  get subscriptionsCurrent(): boolean {
    return this.client.connected && !this.resubscribeOwed;
  }

  /**
   * Calls `listener` each time the link's subscriptions were granted again
   * after a reconnect (or found none to ask for). Frames the peer sent before that reached no
   * subscription (a broker that resumed the session without it, or refused
   * it for a while), so a peer asks again for what it may have lost.
   * Returns the function that removes the listener.
   */
  onResubscribed(listener: () => void): () => void {
    this.resubscribedListeners.add(listener);
    return () => {
      this.resubscribedListeners.delete(listener);
    };
  }

  /** After a refused resubscription: asks again later, if still connected then (else at the next CONNACK). */
  private readonly resubscribeLater = (): void => {
    if (this.resubscribeTimer !== undefined || !this.client.connected) return;
    this.resubscribeTimer = setTimeout(() => {
      this.resubscribeTimer = undefined;
      if (this.client.connected) this.onConnect();
    }, this.resubscribeDelayMs);
    (this.resubscribeTimer as { unref?: () => void }).unref?.();
    this.resubscribeDelayMs = Math.min(this.resubscribeDelayMs * 2, RESUBSCRIBE_RETRY_MAX_MS);
  };

  private readonly onClose = (): void => {
    const culprit = this.oversize.closed(this.client.disconnecting);
    // After the close event: MQTT.js's own close handlers (store replay
    // teardown, reconnect timer) run first, and the reconnect, which would
    // send the publish again, is a timer away.
    if (culprit !== undefined) queueMicrotask(() => this.refuseOversize(culprit));
  };

  /** A message goes to the exact route of its topic and to the prefix route that covers it. */
  private readonly onMessage = (topic: string, payload: Uint8Array, packet: IPublishPacket) => {
    this.holdWritesForTurn();
    this.exact.get(topic)?.(topic, payload, packet);
    this.prefixHandler(topic)?.(topic, payload, packet);
  };

  /** The socket is corked until the end of this turn (holdWritesForTurn). */
  private writesHeld = false;

  /**
   * Corks the connection's socket until the current event-loop turn is
   * over, so that what this turn writes in answer to what it read leaves
   * in one `writev`: the PUBACK MQTT.js sends for a request and the reply
   * a quick handler publishes, or the PUBACKs of a burst. MQTT.js uncorks
   * on the next tick, which would put the PUBACK alone on the wire ahead of
   * the reply (and, on a gateway, ahead of the HTTP/2 write to the
   * upstream, which Node makes at the end of the turn). One segment
   * instead of two costs this process, the broker and the peer a syscall
   * and a wake-up each. Node only: elsewhere the end of the turn is a
   * timer, which would hold the writes too long. Not while bytes wait to
   * be written already.
   */
  private holdWritesForTurn(): void {
    if (this.writesHeld || !HAS_SET_IMMEDIATE) return;
    const stream = this.client.stream as unknown as
      | {
          cork?: () => void;
          uncork?: () => void;
          writableLength?: number;
          writableNeedDrain?: boolean;
        }
      | undefined;
    if (typeof stream?.cork !== "function" || typeof stream.uncork !== "function") return;
    // Bytes already waiting (a bulk transfer, a slow socket): nothing to
    // gain, and holding would keep what this turn writes in memory longer.
    if ((stream.writableLength ?? 0) > 0 || stream.writableNeedDrain === true) return;
    stream.cork();
    this.writesHeld = true;
    afterThisTurn(() => {
      this.writesHeld = false;
      stream.uncork?.();
    });
  }

  /**
   * Drops a publish the broker closed the connection on, so that MQTT.js
   * does not send it again on every reconnect, fails it (its callback gets
   * a {@link PacketTooLargeError}) and lowers the link's packet limit, so
   * that later messages as large are chunked below it.
   */
  private refuseOversize(culprit: { messageId: number; bytes: number }): void {
    const announced = this.connackMaxPacketSize;
    // A publish over the limit the broker announced (one made directly on a
    // shared client, bypassing mqrpc) teaches nothing new.
    if (announced === undefined || culprit.bytes <= announced) {
      // Anything the broker acknowledged fits; the refused size does not.
      // Half of it chunks a message like it into pieces that have a fair
      // chance, and if the broker refuses those too, the limit halves again.
      const limit = Math.max(
        this.oversize.largestAcknowledged,
        Math.floor(culprit.bytes / 2),
        MIN_PUBLISH_BYTES,
      );
      this.learnedMaxPacketSize = Math.min(this.learnedMaxPacketSize ?? limit, limit);
    }
    this.lastRefusal = new PacketTooLargeError(
      culprit.bytes,
      this.brokerMaxPacketSize ?? culprit.bytes - 1,
      true,
    );
    // The public way to take a publish out of both MQTT.js's `outgoing` map
    // and its outgoing store (freeing its message id); its callback is
    // called with "Message removed", which explain() turns into lastRefusal.
    this.client.removeOutgoingMessage(culprit.messageId);
  }

  /**
   * The handler of the longest routed prefix of `topic`: prefixes may nest
   * (a transport's `{prefix}/p/` for presence and another topic prefix
   * `{prefix}/p` on the same connection), and the most specific one owns the
   * topic. A scan: a connection carries a few prefixes (a reply route and a
   * presence route per topic prefix, a server's request route), not one
   * per server called.
   */
  private prefixHandler(topic: string): TopicHandler | undefined {
    // Longest first, so the first match is the one; an array, so that the
    // scan of every message allocates nothing.
    this.prefixList ??= [...this.prefixes.keys()].sort((a, b) => b.length - a.length);
    const list = this.prefixList;
    for (let i = 0; i < list.length; i++) {
      const prefix = list[i] as string;
      if (topic.startsWith(prefix)) return this.prefixes.get(prefix);
    }
    return undefined;
  }

  /** The routed prefixes, longest first; made again after a change. */
  private prefixList: string[] | undefined;
}

/** One QoS 1/2 publish the broker has not acknowledged yet. */
interface InFlight {
  readonly messageId: number;
  readonly bytes: number;
  /** The connection (count of closes before it) it was last written on. */
  connection: number;
  /** Consecutive closes of connections it was written on and not acknowledged. */
  strikes: number;
}

/**
 * Recognises a publish the broker closes the connection on because it is
 * larger than the broker's maximum packet size. On MQTT 3.1.1 that is all a
 * broker can do (Mosquitto with `max_packet_size`, NATS over its max
 * payload), and MQTT.js, keeping the unacknowledged publish in its
 * outgoing store, sends it again first thing on every reconnect: the
 * connection is poisoned for good.
 *
 * A link reset (a flaky network, a broker restart) also closes connections
 * with publishes in flight, so the watch acts only on a pattern a reset
 * does not make: the earliest publish written on the connection that was
 * not acknowledged when it closed (a broker handles publishes in order, so
 * it is the one the broker choked on) was also written and unacknowledged
 * when the previous connection that carried publishes closed (MQTT.js
 * replays its outgoing store first thing, one publish at a time), it is
 * larger than every publish the broker acknowledged on this link, and it
 * is larger than {@link MIN_PUBLISH_BYTES} (mqrpc needs at least that
 * much, so a broker refusing less is beyond help and a small frame is
 * never taken for an oversize one). An MQTT 5 broker that says so
 * (DISCONNECT with reason 0x95) needs no second close. Closes of
 * connections that carried no publish (refused connection attempts) do not
 * count, and closes mqrpc or the application asked for are ignored.
 */
class OversizeWatch {
  /** Unacknowledged publishes, in the order they were last written. */
  private readonly inFlight = new Map<number, InFlight>();
  /** Connections closed so far. */
  private connection = 0;
  private wroteOnConnection = false;
  private toldTooLarge = false;
  /** The largest packet the broker acknowledged, in bytes. */
  largestAcknowledged = 0;

  /** A publish (new or replayed) was written to the connection. */
  sent(messageId: number, bytes: number): void {
    let publish = this.inFlight.get(messageId);
    if (publish !== undefined && publish.bytes === bytes) {
      // A replay: moved to the end, so the map stays in the order written.
      this.inFlight.delete(messageId);
      publish.connection = this.connection;
    } else {
      publish = { messageId, bytes, connection: this.connection, strikes: 0 };
    }
    this.inFlight.set(messageId, publish);
    this.wroteOnConnection = true;
  }

  acknowledged(messageId: number): void {
    const publish = this.inFlight.get(messageId);
    if (publish === undefined) return;
    this.inFlight.delete(messageId);
    if (publish.bytes > this.largestAcknowledged) this.largestAcknowledged = publish.bytes;
  }

  /** The broker's DISCONNECT said the last packet was too large (MQTT 5). */
  brokerSaidTooLarge(): void {
    this.toldTooLarge = true;
  }

  /**
   * The connection closed (`onPurpose` when the client is ending). Returns
   * the publish the broker refused, if the pattern above shows one.
   */
  closed(onPurpose: boolean): { messageId: number; bytes: number } | undefined {
    const connection = this.connection++;
    const wrote = this.wroteOnConnection;
    const told = this.toldTooLarge;
    this.wroteOnConnection = false;
    this.toldTooLarge = false;
    if (onPurpose || !wrote) return undefined;
    let culprit: InFlight | undefined;
    for (const publish of this.inFlight.values()) {
      if (publish.connection === connection) {
        publish.strikes++;
        culprit ??= publish;
      } else {
        publish.strikes = 0;
      }
    }
    if (
      culprit === undefined ||
      (culprit.strikes < 2 && !told) ||
      culprit.bytes <= this.largestAcknowledged ||
      culprit.bytes <= MIN_PUBLISH_BYTES
    ) {
      return undefined;
    }
    this.inFlight.delete(culprit.messageId);
    return culprit;
  }
}

/** Size of an MQTT PUBLISH packet at QoS 1 (MQTT 5: without properties). */
function publishPacketBytes(topic: string, payloadBytes: number, protocolVersion: number): number {
  const remaining = 2 + utf8Length(topic) + 2 + (protocolVersion === 5 ? 1 : 0) + payloadBytes;
  const lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4;
  return 1 + lengthBytes + remaining;
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit < 0xdc00) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** MQTT.js wants a Buffer; in Node, wrap the bytes without copying them. */
function asBuffer(bytes: Uint8Array): Buffer {
  const NodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer;
  if (NodeBuffer === undefined || NodeBuffer.isBuffer(bytes)) return bytes as Buffer;
  return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Node (and Bun, Deno) end a turn with setImmediate; browsers only have timers. */
const HAS_SET_IMMEDIATE = typeof globalThis.setImmediate === "function";

function setNoDelay(client: MqttClient): void {
  const stream = client.stream as unknown as
    | { setNoDelay?: (noDelay: boolean) => void }
    | undefined;
  stream?.setNoDelay?.(true);
}

/**
 * A string that is equal for connection inputs that may share one
 * connection: the session kind and the options as data (keys sorted, bytes
 * as hex). Undefined for options that hold functions or objects other than
 * plain data and bytes, which are not compared.
 */
export function connectionKey(
  input: string | (IClientOptions & { readonly url?: string }),
  session: SessionDefault,
): string | undefined {
  const options = typeof input === "string" ? { url: input } : input;
  try {
    return `${session}\n${JSON.stringify(canonical(options))}`;
  } catch {
    return undefined;
  }
}

function canonical(value: unknown): unknown {
  if (value === null || typeof value !== "object") {
    if (typeof value === "function" || typeof value === "symbol" || typeof value === "bigint") {
      throw new TypeError("not comparable");
    }
    return value;
  }
  if (value instanceof Uint8Array) return { bytes: hex(value) };
  if (Array.isArray(value)) return value.map(canonical);
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) throw new TypeError("not comparable");
  const sorted: Record<string, unknown> = {};
  for (const name of Object.keys(value).sort()) {
    const field = (value as Record<string, unknown>)[name];
    if (field !== undefined) sorted[name] = canonical(field);
  }
  return sorted;
}

/**
 * The options of a connection mqrpc opens, with its defaults (PROTOCOL.md
 * 2.1): `stable` says whether the client id comes back with the next
 * process (given, the username, or `defaultClientId`) rather than random,
 * `resume` whether reconnects resume the session (`clean` switched off
 * after the first CONNACK).
 */
function resolveOptions(
  input: string | (IClientOptions & { readonly url?: string }),
  will: ((clientId: string) => LinkWill) | undefined,
  session: SessionDefault,
  defaultClientId: string | undefined,
): { options: IClientOptions & { url?: string }; stable: boolean; resume: boolean } {
  const options: IClientOptions & { url?: string } =
    typeof input === "string" ? { url: input } : { ...input };
  const problem = mqttInputProblem(input);
  if (problem !== undefined) throw configError(problem);
  // Identity (SECURITY.md): brokers that bind client ids to accounts
  // (Mosquitto's use_username_as_clientid) make the username the client id,
  // and mqrpc's topics must use the id the broker uses.
  const stable =
    options.clientId !== undefined ||
    options.username !== undefined ||
    defaultClientId !== undefined;
  options.clientId ??= options.username ?? defaultClientId ?? `mqrpc_${randomId()}`;
  options.reconnectPeriod ??= 500;
  options.connectTimeout ??= 10_000;
  // A dead link is noticed by the broker within 1.5 keepalives, which bounds
  // how long a vanished server looks online.
  options.keepalive ??= 15;
  // Sessions (PROTOCOL.md 2.1): a session is kept only for a client id that
  // comes back (the application's, or a server's derived from its id). Each
  // process starts clean, so it never inherits the queue of an earlier one,
  // and its reconnects resume the session, so calls in flight survive a
  // dropped link. The session a process that is gone leaves expires after
  // SESSION_EXPIRY_SECONDS (MQTT 5) or is taken over by the next process
  // with that id (MQTT 3.1.1, where sessions do not expire). A random
  // client id never comes back: its session is clean throughout, and what a
  // dropped link loses is recovered by resends.
  let resume = false;
  if (options.clean === undefined) {
    options.clean = true;
    resume = session === "persistent" && stable;
  }
  if (options.protocolVersion === 5 && (resume || options.clean === false)) {
    options.properties = {
      sessionExpiryInterval: SESSION_EXPIRY_SECONDS,
      ...options.properties,
    };
  }
  if (will !== undefined && options.will === undefined) {
    const { topic, payload } = will(options.clientId);
    options.will = { topic, payload: asBuffer(payload), qos: 1, retain: true };
  }
  return { options, stable, resume };
}

function randomId(): string {
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  return hex(bytes);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
