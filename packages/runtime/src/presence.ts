/**
 * Server presence (docs/PROTOCOL.md, "Liveness"). Each server instance keeps
 * a retained Presence on `{prefix}/p/{serverId}/{instance}`: ONLINE while it
 * serves, OFFLINE when it closes or, through its MQTT last will, when it
 * vanishes. Clients watch these to fail fast instead of waiting for a
 * deadline when nobody serves.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Presence, Presence_State, PresenceSchema } from "./gen/mqrpc/v1/wire_pb.js";
import type { MqttLink } from "./mqtt-link.js";
import type { TopicScheme } from "./topic-scheme.js";

/** The Presence version this runtime writes and believes (the protocol version). */
const PRESENCE_VERSION = 2;

/** Encodes a presence announcement. */
export function encodePresence(
  instance: string,
  state: Presence_State,
  shared: boolean,
  incarnation: number,
): Uint8Array {
  return toBinary(
    PresenceSchema,
    create(PresenceSchema, { version: PRESENCE_VERSION, state, instance, shared, incarnation }),
  );
}

/** A random non-zero uint32 naming one run of a server (Presence.incarnation). */
export function newIncarnation(): number {
  const word = new Uint32Array(1);
  do globalThis.crypto.getRandomValues(word);
  while (word[0] === 0);
  return word[0] as number;
}

/** Quiet time after the last retained announcement before deciding. */
const QUIET_MS = 50;

/** Retained presence is asked for again at most this often. */
const RECHECK_INTERVAL_MS = 1000;

/** Whether a server answers, as far as its presence tells. */
export type Availability = "online" | "offline" | "unknown";

/**
 * Follows the presence of every instance of one server id. Shared by all
 * transports on a connection that call that server.
 */
export class PresenceWatch {
  private readonly instances = new Map<string, Presence>();
  private readonly listeners = new Set<() => void>();
  private settledAt: Promise<void> | undefined;
  /** When the server stopped being online, if it was online before and is not now. */
  offlineSince: number | undefined;
  /** The subscription, as started by {@link start}; set by the owner. */
  ready: Promise<void> = Promise.resolve();

  constructor(
    private readonly link: MqttLink,
    private readonly scheme: TopicScheme,
    private readonly serverId: string,
    private readonly settleMs: number,
  ) {}

  /**
   * Subscribes to the presence topics. Resolves when the subscription is
   * granted; retained announcements follow it.
   */
  start(): Promise<void> {
    const filter = this.scheme.presenceFilter(this.serverId);
    const unroute = this.link.routePrefix(filter.slice(0, -1), (topic, payload) =>
      this.onMessage(topic, payload),
    );
    // After a reconnect, ask for the retained presence again: announcements
    // queued while the link was down may have been dropped by the broker.
    let connectedBefore = this.link.client.connected;
    const onConnect = () => {
      if (connectedBefore) void this.link.refresh(filter);
      connectedBefore = true;
    };
    this.link.client.on("connect", onConnect);
    this.undo = () => {
      unroute();
      this.link.client.off("connect", onConnect);
      this.settleNow?.();
      this.listeners.clear();
      return this.link.unsubscribe(filter);
    };
    return this.link.subscribe(filter).then(() => {
      // Just granted: what is retained arrives now, no need to ask again yet.
      this.recheckedAt = Date.now();
      this.settledAt = new Promise<void>((resolve) => {
        // Retained announcements of several instances arrive one by one: wait
        // for a short quiet spell after the last one, or for an online one,
        // or for settleMs when there are none at all. Some may have arrived
        // before the grant was processed: then only the quiet spell is left.
        if (this.availability === "online") {
          resolve();
          return;
        }
        let timer = setTimeout(done, this.instances.size > 0 ? QUIET_MS : this.settleMs);
        const undo = this.onChange(() => {
          clearTimeout(timer);
          if (this.availability === "online") done();
          else timer = setTimeout(done, QUIET_MS);
        });
        this.settleNow = done;
        function done() {
          clearTimeout(timer);
          undo();
          resolve();
        }
      });
    });
  }

  /**
   * Asks the broker for the retained presence again and resolves once it had
   * its chance to arrive (the SUBACK, then a short quiet spell), at most
   * once a second: before a caller gives up on a server that presence says
   * is not online, in case an announcement was lost on the way (a broker
   * drops queued messages past its limit while a link stalls).
   */
  recheck(): Promise<void> {
    const now = Date.now();
    if (now - this.recheckedAt < RECHECK_INTERVAL_MS) {
      // Asked again within the second: the subscription is fresh, but an
      // announcement may be on its way (a server that just came back, whose
      // ONLINE the broker acknowledged to it before delivering it here):
      // give it a quiet spell to arrive.
      return (this.rechecking ?? Promise.resolve()).then(() => this.quietSpell());
    }
    this.recheckedAt = now;
    const filter = this.scheme.presenceFilter(this.serverId);
    this.rechecking = this.link
      .refresh(filter)
      .then(() => new Promise<void>((resolve) => setTimeout(resolve, QUIET_MS)));
    return this.rechecking;
  }

  private rechecking: Promise<void> | undefined;
  private recheckedAt = 0;

  /** Resolves once this server id is online, or after QUIET_MS. */
  private quietSpell(): Promise<void> {
    if (this.availability === "online") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        undo();
        resolve();
      };
      const timer = setTimeout(done, QUIET_MS);
      const undo = this.onChange(() => {
        if (this.availability === "online") done();
      });
    });
  }

  /** Stops watching: removes its route, listeners and subscription. */
  dispose(): Promise<void> {
    const undo = this.undo;
    this.undo = undefined;
    return undo?.() ?? Promise.resolve();
  }

  private undo: (() => Promise<void>) | undefined;
  /** Ends the wait for retained announcements at once (when disposed). */
  private settleNow: (() => void) | undefined;

  /** What the announcements say now. */
  get availability(): Availability {
    let known = false;
    for (const presence of this.instances.values()) {
      if (presence.state === Presence_State.ONLINE) return "online";
      known = true;
    }
    return known ? "offline" : "unknown";
  }

  /** Whether any instance serves through a shared subscription. */
  get shared(): boolean {
    for (const p of this.instances.values())
      if (p.state === Presence_State.ONLINE && p.shared) return true;
    return false;
  }

  /** What `instance` last announced, if anything. */
  stateOf(instance: string): Presence_State | undefined {
    return this.instances.get(instance)?.state;
  }

  /** The incarnation an online instance announced, if it is online. */
  incarnationOf(instance: string): number | undefined {
    const p = this.instances.get(instance);
    return p?.state === Presence_State.ONLINE ? p.incarnation : undefined;
  }

  /** The ids of the instances that announce themselves online. */
  onlineInstances(): string[] {
    const ids: string[] = [];
    for (const [id, p] of this.instances) if (p.state === Presence_State.ONLINE) ids.push(id);
    return ids;
  }

  /**
   * Resolves once retained announcements had their chance to arrive: when
   * one says online, 50 ms after the last one, or `settleMs` after the
   * subscription was granted when none came.
   */
  async settle(): Promise<void> {
    await this.settledAt;
  }

  /** Resolves when some instance is online; rejects with the reason when `signal` aborts first. */
  online(signal: AbortSignal): Promise<void> {
    if (this.availability === "online") return Promise.resolve();
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        undo();
        reject(signal.reason);
      };
      const undo = this.onChange(() => {
        if (this.availability !== "online") return;
        undo();
        signal.removeEventListener("abort", onAbort);
        resolve();
      });
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Calls `listener` after every change; returns the undo. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Whether `presence` speaks of an earlier run of `instance` than the one
   * known: a retained announcement and a live one may arrive in either
   * order (NATS delivers retained messages late), and a restarted server
   * keeps its instance id. The departure (OFFLINE, DISCONNECTED) of another
   * incarnation than the one online, and the ONLINE of an incarnation that
   * closed on purpose, are both about the past.
   */
  private isStale(instance: string, presence: Presence): boolean {
    const current = this.instances.get(instance);
    const incarnation = presence.incarnation;
    if (incarnation === 0) return false;
    let closed = this.closedRuns.get(instance);
    if (presence.state === Presence_State.ONLINE) return closed?.includes(incarnation) ?? false;
    if (presence.state === Presence_State.OFFLINE) {
      closed ??= [];
      if (!closed.includes(incarnation)) closed.push(incarnation);
      // A few are enough to tell late announcements of recent runs apart.
      if (closed.length > 8) closed.shift();
      this.closedRuns.set(instance, closed);
    }
    return (
      current?.state === Presence_State.ONLINE &&
      current.incarnation !== 0 &&
      current.incarnation !== incarnation
    );
  }

  /** Incarnations of each instance that closed on purpose (never to return). */
  private readonly closedRuns = new Map<string, number[]>();

  private onMessage(topic: string, payload: Uint8Array): void {
    const instance = this.scheme.parsePresenceTopic(this.serverId, topic);
    if (instance === undefined) return;
    const wasOnline = this.availability === "online";
    if (payload.byteLength === 0) {
      this.instances.delete(instance);
    } else {
      let presence: Presence;
      try {
        presence = fromBinary(PresenceSchema, payload);
      } catch {
        return;
      }
      // A presence of another protocol version cannot be believed: its
      // server would not understand this client's frames.
      if (presence.version !== PRESENCE_VERSION) return;
      if (this.isStale(instance, presence)) return;
      this.instances.set(instance, presence);
    }
    const online = this.availability === "online";
    // Only a dropped link (the last will) earns a grace period; an instance
    // that closed on purpose is offline at once.
    const dropped = this.instances.get(instance)?.state === Presence_State.DISCONNECTED;
    if (wasOnline && !online && dropped) this.offlineSince = Date.now();
    if (online || !dropped) this.offlineSince = undefined;
    for (const listener of [...this.listeners]) listener();
  }
}
