/**
 * Server presence (docs/PROTOCOL.md, "Liveness"). Each server instance keeps
 * a retained Presence on `{prefix}/p/{serverId}/{instance}`: ONLINE while it
 * serves, OFFLINE when it closes or, through its MQTT last will, when it
 * vanishes. Clients watch these to fail fast instead of waiting for a
 * deadline when nobody serves.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CallGate } from "../flow/call-gate.js";
import { type Presence, Presence_State, PresenceSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { decodeTopicSegment, encodeTopicSegment, type TopicScheme } from "../wire/topic-scheme.js";
import type { MqttLink } from "./mqtt-link.js";

/** The Presence version this runtime writes and believes (the protocol version). */
const PRESENCE_VERSION = 2;

/** The optional fields of a presence announcement (0 when left out). */
export interface PresenceDetails {
  /** When the instance entered the state, Unix ms by the server's clock; unknown in the last will. */
  readonly sinceMs?: number;
  /** When this incarnation started serving, Unix ms (PROTOCOL.md 15.1 `started_ms`). */
  readonly startedMs?: number;
  /** Calls one caller may have there before a refusal (PROTOCOL.md 15.1 `max_calls_per_caller`). */
  readonly maxCallsPerCaller?: number;
}

/** Encodes a presence announcement. */
export function encodePresence(
  instance: string,
  state: Presence_State,
  shared: boolean,
  incarnation: number,
  details: PresenceDetails = {},
): Uint8Array {
  return toBinary(
    PresenceSchema,
    create(PresenceSchema, {
      version: PRESENCE_VERSION,
      state,
      instance,
      shared,
      incarnation,
      sinceMs: unixMs(details.sinceMs),
      startedMs: unixMs(details.startedMs),
      maxCallsPerCaller: details.maxCallsPerCaller ?? 0,
    }),
  );
}

const unixMs = (ms: number | undefined): bigint =>
  ms === undefined ? 0n : BigInt(Math.max(0, Math.trunc(ms)));

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

/** What {@link PresenceWatch.settle} returns once the retained announcements had their chance. */
const SETTLED = Promise.resolve();

const noop = () => {};

/** Whether a server answers, as far as its presence tells. */
export type Availability = "online" | "offline" | "unknown";

/**
 * The presence watches of one connection and topic prefix. One route takes
 * every presence topic (`{prefix}/p/`) and hands each message to the watch
 * of its server id, and one `connect` listener asks for the retained
 * presence again after a reconnect, so that watching another server costs
 * its subscription and its watch, not a route and a listener of its own.
 * Shared by the transports on the connection (one per topic prefix).
 */
export class PresenceBoard {
  /** The watches by encoded server id (the topic level that names the server). */
  private readonly watches = new Map<string, PresenceWatch>();
  private readonly base: string;
  private readonly unroute: () => void;

  constructor(
    readonly link: MqttLink,
    readonly scheme: TopicScheme,
  ) {
    this.base = `${scheme.prefix}/p/`;
    this.unroute = link.routePrefix(this.base, this.onMessage);
    link.client.on("connect", this.onConnect);
  }

  /**
   * Takes a share of the watch of `serverId`, creating it (and subscribing to
   * its presence) on first use; `settleMs` applies to a watch created now.
   * Give it back with {@link release}.
   */
  acquire(serverId: string, settleMs: number): PresenceWatch {
    const segment = encodeTopicSegment(serverId);
    let watch = this.watches.get(segment);
    if (watch === undefined) {
      watch = new PresenceWatch(this, serverId, segment, settleMs);
      this.watches.set(segment, watch);
      watch.start();
    }
    watch.holders++;
    return watch;
  }

  /**
   * Gives back one share of a watch; the last one stops it (its
   * subscription is removed). Resolves once that is done.
   */
  release(watch: PresenceWatch): Promise<void> {
    if (--watch.holders > 0 || this.watches.get(watch.segment) !== watch) return SETTLED;
    this.watches.delete(watch.segment);
    return watch.dispose();
  }

  /** Stops every watch, the route and the listener. */
  dispose(): Promise<void> {
    this.unroute();
    this.link.client.off("connect", this.onConnect);
    const watches = [...this.watches.values()];
    this.watches.clear();
    return Promise.all(watches.map((watch) => watch.dispose())).then(noop);
  }

  /** `{prefix}/p/{serverId}/{instance}`: to the watch of the server id, with the instance level. */
  private readonly onMessage = (topic: string, payload: Uint8Array): void => {
    const end = topic.indexOf("/", this.base.length);
    if (end < 0) return;
    this.watches.get(topic.slice(this.base.length, end))?.onMessage(topic.slice(end + 1), payload);
  };

  private readonly onConnect = (): void => {
    for (const watch of this.watches.values()) watch.connected();
  };
}

/**
 * Follows the presence of every instance of one server id. Shared by all
 * transports on a connection that call that server (see {@link PresenceBoard}).
 * A fleet caller holds one per device it calls, so what a watch keeps is
 * kept small: its maps and listener set are made when first needed.
 */
export class PresenceWatch {
  /** Shares held by transports; see {@link PresenceBoard}. */
  holders = 0;
  /** Resolves once the subscription is granted (see {@link start}). */
  ready: Promise<void> = SETTLED;
  /** Whether the subscription was granted (and {@link settle} can be waited for). */
  subscribed = false;
  /** When the server stopped being online, if it was online before and is not now. */
  offlineSince: number | undefined;
  /**
   * The calls this connection has open to the server, within what its
   * online instances announce (`max_calls_per_caller`, summed over the
   * replicas of a replicated server; no limit when one announces none).
   * Shared, like the watch, by the transports that call the server.
   */
  readonly gate = new CallGate();
  /** The presence topic filter of this server id (one string, reused for every request). */
  private readonly filter: string;
  /** What each instance announced last. */
  private readonly instances = new Announcements();
  private listeners: Set<() => void> | undefined;
  private settledAt: Promise<void> | undefined;
  /** Whether the link was up when the watch started, or came up since. */
  private sawConnect = false;
  /** Whether {@link soleInstance} is worked out (until the next change). */
  private soleKnown = false;
  private soleId: string | undefined;

  constructor(
    private readonly board: PresenceBoard,
    serverId: string,
    /** The server id as a topic level: the board's key. */
    readonly segment: string,
    private readonly settleMs: number,
  ) {
    this.filter = flatString(board.scheme.presenceFilter(serverId));
  }

  /**
   * Subscribes to the presence topics; {@link ready} resolves when the
   * subscription is granted (retained announcements follow it), or rejects
   * when the broker refuses it. The board starts its watches.
   */
  start(): void {
    const link = this.board.link;
    this.sawConnect = link.client.connected;
    this.ready = link.subscribe(this.filter).then(() => {
      // Just granted: what is retained arrives now, no need to ask again yet.
      this.recheckedAt = Date.now();
      // Retained announcements of several instances arrive one by one: wait
      // for a short quiet spell after the last one, or for an online one,
      // or for settleMs when there are none at all. Some may have arrived
      // before the grant was processed: then only the quiet spell is left.
      this.settledAt =
        this.availability === "online"
          ? SETTLED
          : new Promise<void>((resolve) => {
              let timer = setTimeout(done, this.instances.size > 0 ? QUIET_MS : this.settleMs);
              const undo = this.onChange(() => {
                clearTimeout(timer);
                if (this.availability === "online") done();
                else timer = setTimeout(done, QUIET_MS);
              });
              this.settleNow = done;
              const watch = this;
              function done() {
                clearTimeout(timer);
                undo();
                // Settled for good: what waited for it is let go.
                watch.settleNow = undefined;
                watch.settledAt = SETTLED;
                resolve();
              }
            });
      this.subscribed = true;
      // Granted for good: what waited for it is let go.
      this.ready = SETTLED;
    });
    // Callers that need it wait for it and see its failure.
    this.ready.catch(noop);
  }

  /**
   * The board's link came up. After a reconnect, ask for the retained
   * presence again: announcements queued while the link was down may have
   * been dropped by the broker.
   */
  connected(): void {
    if (this.sawConnect) void this.board.link.refresh(this.filter);
    this.sawConnect = true;
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
      return (this.rechecking ?? SETTLED).then(() => this.quietSpell());
    }
    this.recheckedAt = now;
    this.rechecking = this.board.link
      .refresh(this.filter)
      .then(() => new Promise<void>((resolve) => setTimeout(resolve, QUIET_MS)));
    return this.rechecking;
  }

  private rechecking: Promise<void> | undefined;
  private recheckedAt = 0;

  /** Resolves once this server id is online, or after QUIET_MS. */
  private quietSpell(): Promise<void> {
    if (this.availability === "online") return SETTLED;
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

  /**
   * Stops watching: ends the wait for retained announcements, drops its
   * listeners and removes its subscription. The board calls it (its last
   * share given back, or the board disposed of). Idempotent.
   */
  dispose(): Promise<void> {
    if (this.disposed) return SETTLED;
    this.disposed = true;
    this.settleNow?.();
    this.listeners = undefined;
    return this.board.link.unsubscribe(this.filter);
  }

  private disposed = false;
  /** Ends the wait for retained announcements at once (when disposed). */
  private settleNow: (() => void) | undefined;

  /** What the announcements say now. */
  get availability(): Availability {
    if (this.instances.size === 0) return "unknown";
    return this.instances.some(isOnline) ? "online" : "offline";
  }

  /** Whether any instance serves through a shared subscription. */
  get shared(): boolean {
    return this.instances.some(isOnlineShared);
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
    return this.instances.ids(isOnline);
  }

  /**
   * The one instance online, for a server that is not replicated (undefined
   * otherwise): what a call is bound to. Worked out again only after
   * presence changed, not per call.
   */
  get soleInstance(): string | undefined {
    if (!this.soleKnown) this.findSole();
    return this.soleId;
  }

  /** The incarnation of {@link soleInstance}. */
  get soleIncarnation(): number | undefined {
    const instance = this.soleInstance;
    return instance === undefined ? undefined : this.incarnationOf(instance);
  }

  private findSole(): void {
    const online = this.shared ? [] : this.onlineInstances();
    this.soleId = online.length === 1 ? online[0] : undefined;
    this.soleKnown = true;
  }

  /**
   * Resolves once retained announcements had their chance to arrive: when
   * one says online, 50 ms after the last one, or `settleMs` after the
   * subscription was granted when none came.
   */
  settle(): Promise<void> {
    return this.settledAt ?? SETTLED;
  }

  /** Resolves when some instance is online; rejects with the reason when `signal` aborts first. */
  online(signal: AbortSignal): Promise<void> {
    if (this.availability === "online") return SETTLED;
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
    if (this.disposed) return noop;
    this.listeners ??= new Set();
    const listeners = this.listeners;
    listeners.add(listener);
    return () => {
      // The set is made when needed and let go when empty: most watches
      // have nobody listening most of the time.
      if (this.listeners !== listeners) return;
      listeners.delete(listener);
      if (listeners.size === 0) this.listeners = undefined;
    };
  }

  /**
   * Whether `presence` speaks of an earlier run of `instance` than the one
   * known: a retained announcement and a live one may arrive in either
   * order (NATS delivers retained messages late), and a restarted server
   * keeps its instance id. The departure (OFFLINE, DISCONNECTED) of another
   * incarnation than the one online, and the ONLINE of an incarnation that
   * closed on purpose, are both about the past.
   */
  private isStale(instance: string, presence: Presence | Announced): boolean {
    const current = this.instances.get(instance);
    const incarnation = presence.incarnation;
    if (incarnation === 0) return false;
    let closed = this.closedRuns?.get(instance);
    if (presence.state === Presence_State.ONLINE) return closed?.includes(incarnation) ?? false;
    if (presence.state === Presence_State.OFFLINE) {
      closed ??= [];
      if (!closed.includes(incarnation)) closed.push(incarnation);
      // A few are enough to tell late announcements of recent runs apart.
      if (closed.length > 8) closed.shift();
      this.closedRuns ??= new Map();
      this.closedRuns.set(instance, closed);
    }
    return (
      current?.state === Presence_State.ONLINE &&
      current.incarnation !== 0 &&
      current.incarnation !== incarnation
    );
  }

  /** Incarnations of each instance that closed on purpose (never to return); made at the first. */
  private closedRuns: Map<string, number[]> | undefined;

  /**
   * A message on one of this server id's presence topics (routed by the
   * board), whose last level is `instanceLevel`.
   */
  onMessage(instanceLevel: string, payload: Uint8Array): void {
    if (this.disposed) return;
    let instance: string;
    try {
      instance = decodeTopicSegment(instanceLevel);
    } catch {
      return;
    }
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
      // Only what is read later is kept, not the message; and the instance
      // id, a slice of the topic, is copied rather than keep the topic.
      const { state, shared, incarnation, maxCallsPerCaller } = presence;
      this.instances.set(this.instances.has(instance) ? instance : flatString(instance), {
        state,
        shared,
        incarnation,
        maxCallsPerCaller,
      });
    }
    this.soleKnown = false;
    this.soleId = undefined;
    const online = this.availability === "online";
    // Only a dropped link (the last will) earns a grace period; an instance
    // that closed on purpose is offline at once.
    const dropped = this.instances.get(instance)?.state === Presence_State.DISCONNECTED;
    if (wasOnline && !online && dropped) this.offlineSince = Date.now();
    if (online || !dropped) this.offlineSince = undefined;
    // While none is online the limit stays: calls wait for the server anyway.
    if (online) this.gate.limit = this.instances.callLimit();
    if (this.listeners !== undefined) for (const listener of [...this.listeners]) listener();
  }
}

/** What an instance announced last, as a watch keeps it. */
interface Announced {
  readonly state: Presence_State;
  readonly shared: boolean;
  readonly incarnation: number;
  /** 0: none announced. */
  readonly maxCallsPerCaller: number;
}

const isOnline = (p: Announced): boolean => p.state === Presence_State.ONLINE;
const isOnlineShared = (p: Announced): boolean => p.state === Presence_State.ONLINE && p.shared;

/**
 * What each instance of a server announced last, by instance id, in the
 * order they first announced themselves (as a Map keeps them). Most servers
 * have one instance, a fleet caller watches thousands of them: the first
 * instance is kept in two fields, a map is made at the second.
 */
class Announcements {
  private firstId: string | undefined;
  private first: Announced | undefined;
  private others: Map<string, Announced> | undefined;

  get size(): number {
    return (this.firstId === undefined ? 0 : 1) + (this.others?.size ?? 0);
  }

  get(id: string): Announced | undefined {
    return id === this.firstId ? this.first : this.others?.get(id);
  }

  has(id: string): boolean {
    return id === this.firstId || (this.others?.has(id) ?? false);
  }

  set(id: string, announced: Announced): void {
    if (this.firstId === undefined || id === this.firstId) {
      this.firstId = id;
      this.first = announced;
      return;
    }
    this.others ??= new Map();
    this.others.set(id, announced);
  }

  delete(id: string): void {
    if (id !== this.firstId) {
      this.others?.delete(id);
      return;
    }
    // The next oldest takes the first place, as in a Map.
    this.firstId = undefined;
    this.first = undefined;
    const others = this.others;
    if (others === undefined) return;
    for (const [next, announced] of others) {
      others.delete(next);
      this.firstId = next;
      this.first = announced;
      break;
    }
    if (others.size === 0) this.others = undefined;
  }

  /** Whether any instance's announcement passes `test`. */
  some(test: (announced: Announced) => boolean): boolean {
    if (this.first !== undefined && test(this.first)) return true;
    if (this.others !== undefined) for (const a of this.others.values()) if (test(a)) return true;
    return false;
  }

  /**
   * The calls a caller may have open to the online instances: the sum of
   * what each announces, or 0 (no limit) when one announces none.
   */
  callLimit(): number {
    let sum = 0;
    let unlimited = false;
    const add = (a: Announced) => {
      if (a.state !== Presence_State.ONLINE) return;
      if (a.maxCallsPerCaller === 0) unlimited = true;
      sum += a.maxCallsPerCaller;
    };
    if (this.first !== undefined) add(this.first);
    if (this.others !== undefined) for (const a of this.others.values()) add(a);
    return unlimited ? 0 : sum;
  }

  /** The ids of the instances whose announcement passes `test`, oldest first. */
  ids(test: (announced: Announced) => boolean): string[] {
    const ids: string[] = [];
    if (this.firstId !== undefined && this.first !== undefined && test(this.first)) {
      ids.push(this.firstId);
    }
    if (this.others !== undefined) {
      for (const [id, a] of this.others) if (test(a)) ids.push(id);
    }
    return ids;
  }
}

/**
 * `text` as one flat string. Strings built by concatenation are trees of
 * their parts until something flattens them; a string kept for as long as
 * a watch or transport lives is worth flattening once (a JSON round trip
 * copies it into one piece), rather than keeping the tree.
 */
export function flatString(text: string): string {
  return JSON.parse(JSON.stringify(text)) as string;
}
