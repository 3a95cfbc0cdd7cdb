/**
 * The client end of a connection: one reply subscription, made once, and the
 * dispatch of reply frames to calls by call id. Every transport on the
 * connection shares it, so calls never subscribe or unsubscribe.
 */
import { type CallFrame, decodeCallFrames } from "./frame-codec.js";
import type { MqttLink } from "./mqtt-link.js";
import type { TopicScheme } from "./topic-scheme.js";

/** A call as the router sees it. */
export interface RoutedCall {
  onFrame(frame: CallFrame): void;
  /** Sends a Ping if the call has lasted at least `intervalMs` by `now`. */
  heartbeat(now: number, intervalMs: number): void;
}

/** See the module comment. */
export class ReplyRouter {
  /** The caller's identity in request topics; replies come to its topic. */
  readonly clientKey: string;
  /** Resolves once the reply subscription is granted. */
  readonly ready: Promise<void>;
  private readonly calls = new Map<number, RoutedCall>();
  private nextId: number;
  private heartbeatMs = 0;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;

  constructor(link: MqttLink, scheme: TopicScheme) {
    this.clientKey = link.clientId;
    if (this.clientKey === "") {
      throw new Error(
        "mqtt option: the MQTT client id is empty; mqrpc needs it to address replies",
      );
    }
    const topic = scheme.replyTopic(this.clientKey);
    link.routeExact(topic, (_topic, payload) => this.dispatch(payload));
    this.ready = link.subscribe(topic);
    // Ids start at random so that a restarted client reusing its MQTT client
    // id does not collide with calls the server still remembers.
    this.nextId = 1 + Math.floor(Math.random() * 0x7fff_ffff);
  }

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
      const now = Date.now();
      for (const call of this.calls.values()) call.heartbeat(now, intervalMs);
    }, intervalMs);
    // Heartbeats alone never keep a process alive.
    (this.heartbeatTimer as { unref?: () => void }).unref?.();
  }

  private dispatch(payload: Uint8Array): void {
    let frames: readonly CallFrame[];
    try {
      frames = decodeCallFrames(payload);
    } catch {
      // Garbage on the reply topic (ACLs should prevent it) cannot belong to
      // any call; dropping it keeps every real call intact.
      return;
    }
    for (const frame of frames) this.calls.get(frame.callId)?.onFrame(frame);
  }
}
