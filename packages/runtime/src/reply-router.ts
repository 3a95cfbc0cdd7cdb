/**
 * The client end of a connection: one reply subscription, made once, and the
 * dispatch of reply frames to calls by call id. Every transport on the
 * connection shares it, so calls never subscribe or unsubscribe.
 */
import { decodeFrame, type FrameKind } from "./frame-codec.js";
import type { Frame } from "./gen/mqrpc/v1/wire_pb.js";
import type { MqttLink } from "./mqtt-link.js";
import type { TopicScheme } from "./topic-scheme.js";

/** A call as the router sees it. */
export interface RoutedCall {
  onFrame(frame: Frame & { kind: { case: FrameKind } }): void;
}

/** See the module comment. */
export class ReplyRouter {
  /** The caller's identity in request topics; replies come to its topic. */
  readonly clientKey: string;
  /** Resolves once the reply subscription is granted. */
  readonly ready: Promise<void>;
  private readonly calls = new Map<number, RoutedCall>();
  private nextId: number;

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

  /** Assigns a call id and starts routing replies for it. */
  register(call: RoutedCall): number {
    let id = this.nextId;
    while (id === 0 || this.calls.has(id)) id = (id + 1) >>> 0;
    this.nextId = (id + 1) >>> 0;
    this.calls.set(id, call);
    return id;
  }

  /** Stops routing replies for a finished call. */
  unregister(callId: number): void {
    this.calls.delete(callId);
  }

  private dispatch(payload: Uint8Array): void {
    let frame: ReturnType<typeof decodeFrame>;
    try {
      frame = decodeFrame(payload);
    } catch {
      // Garbage on the reply topic (ACLs should prevent it) cannot belong to
      // any call; dropping it keeps every real call intact.
      return;
    }
    this.calls.get(frame.callId)?.onFrame(frame);
  }
}
