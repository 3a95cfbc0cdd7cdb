/**
 * Packs frames of different calls that are due on the same topic in the same
 * event-loop turn into one publish (a `Coalesced` frame), the way HTTP/2
 * writes frames of many streams in one TCP segment. Under load, a burst of
 * replies starts a burst of calls in one turn, and the broker then carries
 * one publish and one PUBACK for all of them instead of one each.
 *
 * Latency does not suffer: the first frame on a topic in a turn is published
 * at once; only frames that follow it in the same turn wait, and only until
 * the turn ends. A publish holds at most one frame per call, so a stream's
 * frames keep their own publishes unless its method batches messages, and
 * a frame too big to share a publish goes alone, after what waits before it.
 */

import { afterThisTurn } from "../flow/event-loop-turn.js";
import { MAX_COALESCED_FRAMES } from "../wire/frame-decoder.js";
import { writeCoalesced } from "../wire/frame-encoder.js";

/**
 * Publishes one payload and calls `done` once MQTT acknowledged it, with an
 * error if it could not be sent. (A callback, not a promise: this runs for
 * every publish.)
 */
export type RawPublish = (
  topic: string,
  payload: Uint8Array,
  done: (error?: unknown) => void,
) => void;

/** Told when the publish that carried a frame failed. */
export interface PublishFailureListener {
  publishFailed(error: unknown, topic: string): void;
}

/** Bytes a frame adds inside a coalesced publish beyond its own: tag and length. */
const ENTRY_OVERHEAD = 6;
/** The coalesced frame's own version field, tag and length. */
const ENVELOPE_OVERHEAD = 8;

interface Pending {
  readonly topic: string;
  readonly frames: Uint8Array[];
  readonly onErrors: PublishFailureListener[];
  /** The call of the first frame; `calls` exists once a second call joins. */
  readonly firstCall: number;
  calls: Set<number> | undefined;
  bytes: number;
}

/** See the module comment. */
export class PublishCoalescer {
  private readonly pending = new Map<string, Pending>();
  /** Topics that got a publish in the current turn. */
  private readonly busy = new Set<string>();
  private turnEndScheduled = false;

  /**
   * @param publish sends one payload (MQTT publish at QoS 1)
   * @param afterTurn runs a function once the current turn is over
   * @param explain turns the error a publish failed with into the one the
   *   senders are told, at once (while the failure's context still holds)
   */
  constructor(
    private readonly publish: RawPublish,
    private readonly afterTurn: (fn: () => void) => void = afterThisTurn,
    private readonly explain: (error: unknown) => unknown = (error) => error,
  ) {}

  /**
   * Sends `frame` of call `callId` on `topic`, now or at the end of the
   * turn. `maxBytes` is the largest payload the topic may carry. `alone`
   * sends it in a publish of its own, at once (after what waits on the topic).
   */
  send(
    topic: string,
    callId: number,
    frame: Uint8Array,
    maxBytes: number,
    onError: PublishFailureListener,
    alone = false,
  ): void {
    const pending = this.pending.get(topic);
    if (alone) {
      if (pending !== undefined) this.flush(pending);
      this.sendNow(topic, frame, onError);
      return;
    }
    if (pending === undefined) {
      if (!this.busy.has(topic) || !this.canShare(frame, maxBytes)) {
        this.sendNow(topic, frame, onError);
        return;
      }
      this.pending.set(topic, this.start(topic, callId, frame, onError));
      return;
    }
    if (!this.canShare(frame, maxBytes)) {
      this.flush(pending);
      this.sendNow(topic, frame, onError);
      return;
    }
    const sameCall = pending.firstCall === callId || pending.calls?.has(callId);
    if (
      sameCall ||
      pending.frames.length >= MAX_COALESCED_FRAMES ||
      pending.bytes + frame.byteLength + ENTRY_OVERHEAD > maxBytes
    ) {
      this.flush(pending);
      this.pending.set(topic, this.start(topic, callId, frame, onError));
      return;
    }
    pending.frames.push(frame);
    pending.onErrors.push(onError);
    pending.bytes += frame.byteLength + ENTRY_OVERHEAD;
    pending.calls ??= new Set([pending.firstCall]);
    pending.calls.add(callId);
  }

  /** Frames waiting for the end of the turn, across topics. */
  get waiting(): number {
    let n = 0;
    for (const p of this.pending.values()) n += p.frames.length;
    return n;
  }

  /** Publishes everything waiting now. */
  flushAll(): void {
    for (const pending of this.pending.values()) this.flush(pending);
  }

  private canShare(frame: Uint8Array, maxBytes: number): boolean {
    return frame.byteLength + ENTRY_OVERHEAD + ENVELOPE_OVERHEAD <= maxBytes >> 1;
  }

  private start(
    topic: string,
    callId: number,
    frame: Uint8Array,
    onError: PublishFailureListener,
  ): Pending {
    return {
      topic,
      frames: [frame],
      onErrors: [onError],
      firstCall: callId,
      calls: undefined,
      bytes: ENVELOPE_OVERHEAD + frame.byteLength + ENTRY_OVERHEAD,
    };
  }

  private sendNow(topic: string, frame: Uint8Array, onError: PublishFailureListener): void {
    this.markBusy(topic);
    this.publish(topic, frame, (e) => {
      if (e !== undefined && e !== null) failLater([onError], this.explain(e), topic);
    });
  }

  private flush(pending: Pending): void {
    this.pending.delete(pending.topic);
    this.markBusy(pending.topic);
    const { topic, frames, onErrors } = pending;
    if (frames.length === 1) {
      const onError = onErrors[0] as PublishFailureListener;
      this.publish(topic, frames[0] as Uint8Array, (e) => {
        if (e !== undefined && e !== null) failLater([onError], this.explain(e), topic);
      });
      return;
    }
    this.publish(topic, writeCoalesced(frames), (e) => {
      if (e !== undefined && e !== null) failLater(onErrors, this.explain(e), topic);
    });
  }

  private markBusy(topic: string): void {
    this.busy.add(topic);
    if (!this.turnEndScheduled) {
      this.turnEndScheduled = true;
      this.afterTurn(this.endTurn);
    }
  }

  private readonly endTurn = (): void => {
    this.turnEndScheduled = false;
    // Clear first: what flushes now starts the next turn's bookkeeping.
    this.busy.clear();
    this.flushAll();
  };
}

/**
 * Reports a failed publish after the current call stack: MQTT.js may fail a
 * publish synchronously (a client that is disconnecting), and a sender must
 * not see its own frame fail while it is still sending it.
 */
function failLater(listeners: readonly PublishFailureListener[], error: unknown, topic: string) {
  queueMicrotask(() => {
    for (const listener of listeners) listener.publishFailed(error, topic);
  });
}
