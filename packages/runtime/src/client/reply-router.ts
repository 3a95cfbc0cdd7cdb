/**
 * The client end of a connection: one reply subscription, made once, and the
 * dispatch of reply frames to calls by call id. Every transport on the
 * connection shares it, so calls never subscribe or unsubscribe.
 */

import type { MqttLink } from "../link/mqtt-link.js";
import { ReconnectResync } from "../link/reconnect-resync.js";
import { type CallFrame, decodeCallFrames } from "../wire/frame-codec.js";
import { clientIdProblem, type TopicScheme } from "../wire/topic-scheme.js";

/** A call as the router sees it. */
export interface RoutedCall {
  /**
   * The reply topic of the server the call went to: frames for the call's
   * id on any other server's reply topic are not the call's (PROTOCOL.md 3.1).
   */
  readonly replyTopic: string;
  onFrame(frame: CallFrame): void;
  /**
   * Sends a Ping if the call has lasted at least `intervalMs` by `now`;
   * the server's silence counts from no earlier than `hearingSince` (when
   * the caller's link came back).
   */
  heartbeat(now: number, intervalMs: number, hearingSince: number): void;
  /**
   * The link came back: find out what was lost meanwhile, at once
   * (`first`), or again where nothing new arrived since (see ReconnectResync).
   */
  resync(first: boolean): void;
}

/** See the module comment. */
/** The last session this process used per client key (the newest 1024 keys). */
const lastSessions = new Map<string, number>();

/**
 * A session for a new router of `clientKey`: one the server cannot have seen
 * from this process (the one after the last), else a random one. A session
 * the server remembers, reused with call ids below its window, would make
 * new calls look as if they had run (PROTOCOL.md section 8.1); 31 random
 * bits make that as good as impossible for a restarted process too.
 */
export function nextSession(clientKey: string, random: number): number {
  const last = lastSessions.get(clientKey);
  const session = last !== undefined ? (last % 0x7fffffff) + 1 : random >>> 1 || 1;
  lastSessions.delete(clientKey);
  lastSessions.set(clientKey, session);
  if (lastSessions.size > 1024) {
    const oldest = lastSessions.keys().next().value;
    if (oldest !== undefined) lastSessions.delete(oldest);
  }
  return session;
}

export class ReplyRouter {
  /** The caller's identity in request topics; replies come to its topic. */
  readonly clientKey: string;
  /** Resolves once the reply subscription is granted. */
  readonly ready: Promise<void>;
  /** Whether the reply subscription was granted. */
  subscribed = false;
  /**
   * This router's session (Open.session): a random non-zero number below
   * 2^31, or the one after the last session this process used for the same
   * client key. Call ids count up from a random start within it
   * (PROTOCOL.md section 6).
   */
  readonly session: number;
  private readonly calls = new Map<number, RoutedCall>();
  private nextId: number;
  private heartbeatMs = 0;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private readonly link: MqttLink;

  constructor(link: MqttLink, scheme: TopicScheme) {
    this.clientKey = link.clientId;
    const problem = clientIdProblem(this.clientKey);
    if (problem !== undefined) throw new Error(`mqtt option: ${problem}`);
    const unroute = link.routePrefix(scheme.replyBase(this.clientKey), (topic, payload) =>
      this.dispatch(topic, payload),
    );
    this.ready = link.subscribe(scheme.replyFilter(this.clientKey)).then(() => {
      this.subscribed = true;
    });
    // Callers that need it wait for it and see its failure.
    this.ready.catch(() => {});
    const words = new Uint32Array(2);
    globalThis.crypto.getRandomValues(words);
    this.session = nextSession(this.clientKey, words[0] as number);
    // Ids start at random (below 2^31, so they do not wrap for billions of
    // calls) so that a restarted client reusing its MQTT client id does not
    // collide with calls the server still runs.
    this.nextId = 1 + ((words[1] as number) >>> 1);
    // Every reconnect after the first connect: each call asks its peer for
    // what may have been lost, rather than waiting for its next heartbeat.
    const resync = new ReconnectResync((first) => {
      for (const call of [...this.calls.values()]) call.resync(first);
    });
    let connectedBefore = link.client.connected;
    const onConnect = () => {
      if (connectedBefore) resync.reconnected();
      connectedBefore = true;
    };
    link.client.on("connect", onConnect);
    const offResubscribed = link.onResubscribed(() => resync.reconnected());
    this.link = link;
    this.dispose = () => {
      link.client.off("connect", onConnect);
      offResubscribed();
      resync.cancel();
      unroute();
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = undefined;
      return link.unsubscribe(scheme.replyFilter(this.clientKey));
    };
  }

  /** Stops routing, listening and its subscription; the link's last user of this router calls it. */
  readonly dispose: () => Promise<void>;

  /** Calls in flight. */
  get size(): number {
    return this.calls.size;
  }

  /**
   * Assigns a call id and starts routing replies for it. With a heartbeat
   * interval, every call in flight sends a Ping that often, so a server can
   * tell a caller that went away from one that is merely waiting.
   */
  register(call: RoutedCall, heartbeatMs: number): number {
    let id = this.nextId;
    while (id === 0 || this.calls.has(id)) id = (id + 1) >>> 0;
    this.nextId = (id + 1) >>> 0;
    this.calls.set(id, call);
    if (heartbeatMs > 0 && (this.heartbeatTimer === undefined || heartbeatMs < this.heartbeatMs)) {
      this.startHeartbeat(heartbeatMs);
    }
    return id;
  }

  /**
   * Stops routing replies for a finished call. The heartbeat timer stops at
   * its next tick without calls, not here: calls that follow each other would
   * otherwise start and stop it every time.
   */
  unregister(callId: number): void {
    this.calls.delete(callId);
  }

  private startHeartbeat(intervalMs: number): void {
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    this.heartbeatMs = intervalMs;
    this.heartbeatTimer = setInterval(() => {
      if (this.calls.size === 0) {
        clearInterval(this.heartbeatTimer);
        this.heartbeatTimer = undefined;
        return;
      }
      // Nothing can be heard, or sent, while the link is down: the calls
      // are asked again when it is back (resync).
      if (!this.link.subscriptionsCurrent) return;
      const now = Date.now();
      for (const call of this.calls.values())
        call.heartbeat(now, intervalMs, this.link.subscriptionsCurrentSince);
    }, intervalMs);
    // Heartbeats alone never keep a process alive.
    (this.heartbeatTimer as { unref?: () => void }).unref?.();
  }

  private dispatch(topic: string, payload: Uint8Array): void {
    let frames: readonly CallFrame[];
    try {
      frames = decodeCallFrames(payload);
    } catch {
      // Garbage on the reply topic (ACLs should prevent it) cannot belong to
      // any call; dropping it keeps every real call intact.
      return;
    }
    for (const frame of frames) {
      const call = this.calls.get(frame.callId);
      if (call !== undefined && call.replyTopic === topic) call.onFrame(frame);
    }
  }
}
