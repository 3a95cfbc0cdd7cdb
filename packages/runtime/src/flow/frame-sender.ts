/**
 * The sending half of one call direction: numbers sequenced frames, puts a
 * message inline when it fits in one publish and in chunks when it does not,
 * packs stream messages into Batch frames when the method asks for it, and
 * waits for flow-control credit before each frame that carries messages.
 *
 * A batch goes out when the next message would not fit in it, when the
 * producer stops writing for the current event-loop turn, after the linger
 * time at most, and before any control frame (HalfClose, End). So a fast
 * producer fills publishes and a slow one sees no added latency.
 *
 * Every sequenced frame is kept until the peer acknowledges it, and sent
 * again when the peer asks (docs/PROTOCOL.md section 11.2). A request to
 * send again is a sign of loss (a broker queue overran, a broker
 * restarted), so the sender then keeps fewer frames in flight, halving what
 * was outstanding, and widens again as acknowledgements come: resends never
 * re-flood the queue that dropped them.
 */

import type { MetadataEntry, Status } from "../gen/mqrpc/v1/wire_pb.js";
import { encodeFrame, type FrameInit } from "../wire/frame-codec.js";
import { splitIntoChunks } from "./chunk-assembler.js";
import { afterThisTurn } from "./event-loop-turn.js";
import { SendCredit } from "./flow-credit.js";
import { MessageBatcher } from "./message-batcher.js";

/** Room left in a publish for frame fields around a message or chunk. */
const FRAME_HEADROOM = 64;

/**
 * The most frames a sender keeps unacknowledged, whatever window the peer
 * announces: what it retains for resending is bounded by this, not by the
 * peer's word (docs/PROTOCOL.md section 11.1).
 */
export const MAX_UNACKNOWLEDGED_FRAMES = 1024;

/** Frames in flight after a loss, at least. */
const MIN_IN_FLIGHT = 4;

/** Requests to send the same frames again closer together than this are ignored. */
const RESEND_INTERVAL_MS = 100;

/** Where a sender's frames go. */
export interface FrameOutput {
  /** Publishes one encoded frame; failures are the owner's to handle. */
  publish(frame: Uint8Array): void;
  /** The largest frame that fits in one publish on the current topic. */
  maxFrameBytes(): number;
}

type FrameKindInit = NonNullable<FrameInit["kind"]>;

/**
 * The signal that ends a wait for credit, asked for only when a wait is
 * needed: most frames never wait, and most calls never need a signal.
 */
export interface SignalSource {
  readonly signal: AbortSignal;
}

/** The fields of an Open frame besides the inline message. */
export interface OpenFields {
  readonly timeoutMs: number;
  readonly headers: MetadataEntry[];
  readonly window: number;
  readonly heartbeatMs: number;
  readonly session: number;
}

/** The fields of an End frame besides the inline message and `ack`. */
export interface EndFields {
  readonly status?: Status | undefined;
  readonly headers: MetadataEntry[];
  readonly trailers: MetadataEntry[];
}

/**
 * End frames up to this size are kept after the call (the completed-call
 * record) and sent again to a caller that missed them; a larger End, or one
 * that follows frames the caller has not acknowledged, asks the caller to
 * acknowledge it instead (End.ack).
 */
export const MAX_KEPT_END_BYTES = 1024;

/** An End frame's fields as the sender builds them. */
interface EndValue {
  status?: Status;
  headers: MetadataEntry[];
  trailers: MetadataEntry[];
  message?: Uint8Array;
  ack?: boolean;
}

/** See the module comment. */
export class FrameSender {
  private nextSeq = 0;
  /** The peer's flow-control limit. */
  readonly credit: SendCredit;
  private batcher: MessageBatcher | undefined;
  private lingerMs = 0;
  private lingerTimer: ReturnType<typeof setTimeout> | undefined;
  private turnScheduled = false;
  private waitingForCredit = false;
  /**
   * Sequenced frames the peer has not acknowledged, in order: frame
   * `retainedFrom + i` is `retained[i]`. Frames from `sentUpTo` on wait
   * for room in flight.
   */
  private retained: Uint8Array[] = [];
  private retainedFrom = 0;
  private sentUpTo = 0;
  /** Frames that may be in flight beyond the acknowledged ones; Infinity until a loss. */
  private inFlightLimit = Number.POSITIVE_INFINITY;
  private lastResend = { at: 0, from: -1 };
  private acknowledgedListener: (() => void) | undefined;
  /** Set by {@link replaceWithEnd}: nothing sequenced goes out any more. */
  private sealed = false;

  /** @param now clock for pacing resends, replaceable in tests */
  constructor(
    private readonly callId: number,
    private readonly output: FrameOutput,
    initialWindow: number,
    private readonly now: () => number = Date.now,
  ) {
    this.credit = new SendCredit(initialWindow);
  }

  /** Packs subsequent stream messages into Batch frames. */
  enableBatching(lingerMs: number): void {
    this.batcher ??= new MessageBatcher();
    this.lingerMs = lingerMs;
  }

  /** Whether any sequenced frame went out (the peer may know of the call). */
  get started(): boolean {
    return this.nextSeq > 0;
  }

  /** Sequenced frames sent (or waiting to be) that the peer has not acknowledged. */
  get unacknowledged(): number {
    return this.retained.length;
  }

  /** Calls `listener` whenever an acknowledgement arrives (once set). */
  onAcknowledged(listener: () => void): void {
    this.acknowledgedListener = listener;
  }

  /**
   * Applies the peer's announced window (Open.window, Headers.window),
   * capped at {@link MAX_UNACKNOWLEDGED_FRAMES}.
   */
  grantWindow(window: number): void {
    this.credit.grant(Math.min(window, this.retainedFrom + MAX_UNACKNOWLEDGED_FRAMES));
  }

  /** Messages waiting in the current batch. */
  get pendingMessages(): number {
    return this.batcher?.size ?? 0;
  }

  /**
   * Sends the waiting batch, waiting for credit if needed. Call before a
   * control frame so that sequence order matches the producer's order.
   */
  async flush(signal: SignalSource): Promise<void> {
    while (this.batcher !== undefined && this.batcher.size > 0) {
      await this.creditFor(signal);
      this.publishBatch();
    }
  }

  /** Sends a sequenced frame that carries no message (Headers, HalfClose; End: see sendEndNow). */
  sendControl(kind: FrameKindInit): void {
    const frame = encodeFrame({ callId: this.callId, seq: this.nextSeq++, kind });
    this.publishSequenced(frame);
  }

  /** Sends an unsequenced frame (Cancel, Credit, Ping, Pong). */
  sendUnsequenced(kind: FrameKindInit): void {
    this.output.publish(encodeFrame({ callId: this.callId, kind }));
  }

  /**
   * Opens the call, with `message` inline when it fits (the unary fast path:
   * one publish per request). A message too large goes in chunks after the
   * Open, followed by the half-close when requested. Returns a promise
   * only when something still has to wait (a chunked message).
   */
  sendOpen(
    open: OpenFields,
    message: Uint8Array | undefined,
    halfClose: boolean,
    signal: SignalSource,
  ): Promise<void> | undefined {
    const maxFrameBytes = this.output.maxFrameBytes();
    if (message !== undefined && message.byteLength <= maxFrameBytes) {
      const frame = encodeFrame({
        callId: this.callId,
        seq: this.nextSeq,
        kind: {
          case: "open",
          value: {
            timeoutMs: open.timeoutMs,
            headers: open.headers,
            message,
            halfClose,
            window: open.window,
            heartbeatMs: open.heartbeatMs,
            session: open.session,
          },
        },
      });
      if (frame.byteLength <= maxFrameBytes) {
        this.nextSeq++;
        this.publishSequenced(frame);
        return undefined;
      }
    }
    this.sendControl({
      case: "open",
      value: { ...open, halfClose: halfClose && message === undefined },
    });
    if (message === undefined) return undefined;
    const sending = this.sendMessage(message, signal);
    const then = () => {
      if (halfClose) this.sendControl({ case: "halfClose", value: {} });
    };
    if (sending === undefined) {
      then();
      return undefined;
    }
    return sending.then(then);
  }

  /**
   * Sends one message, waiting for credit frame by frame. Returns a promise
   * only when it has to wait: a message that joins a batch, or goes out at
   * once with credit to spare, costs the producer no promise.
   */
  sendMessage(message: Uint8Array, signal: SignalSource): Promise<void> | undefined {
    const budget = this.output.maxFrameBytes() - FRAME_HEADROOM;
    const batcher = this.batcher;
    if (batcher !== undefined) {
      if (
        message.byteLength < budget >> 1 &&
        (batcher.size === 0 || batcher.fits(message, budget))
      ) {
        batcher.add(message);
        if (batcher.size === 1) this.scheduleFlush();
        return undefined;
      }
    } else if (message.byteLength <= budget && this.credit.allows(this.nextSeq)) {
      this.publishMessage(message);
      return undefined;
    }
    return this.sendMessageWaiting(message, budget, signal);
  }

  private async sendMessageWaiting(
    message: Uint8Array,
    budget: number,
    signal: SignalSource,
  ): Promise<void> {
    const batcher = this.batcher;
    if (batcher !== undefined) {
      if (message.byteLength < budget >> 1) {
        while (batcher.size > 0 && !batcher.fits(message, budget)) await this.flush(signal);
        batcher.add(message);
        if (batcher.size === 1) this.scheduleFlush();
        return;
      }
      await this.flush(signal);
    }
    if (message.byteLength <= budget) {
      await this.creditFor(signal);
      this.publishMessage(message);
      return;
    }
    for (const piece of splitIntoChunks(message, budget)) {
      await this.creditFor(signal);
      this.publishSequenced(
        encodeFrame({
          callId: this.callId,
          seq: this.nextSeq++,
          kind: { case: "chunk", value: piece },
        }),
      );
    }
  }

  private publishMessage(message: Uint8Array): void {
    this.publishSequenced(
      encodeFrame({
        callId: this.callId,
        seq: this.nextSeq++,
        kind: { case: "message", value: message },
      }),
    );
  }

  /**
   * Ends the call (server side), with the last message inline when it fits:
   * a unary response is then one publish. Sets End.ack when the caller must
   * acknowledge the End (see {@link MAX_KEPT_END_BYTES}).
   */
  async sendEnd(
    end: EndFields,
    message: Uint8Array | undefined,
    signal: SignalSource,
  ): Promise<void> {
    if (this.pendingMessages > 0) await this.flush(signal);
    if (this.sealed) return;
    if (message !== undefined) {
      const maxFrameBytes = this.output.maxFrameBytes();
      if (message.byteLength <= maxFrameBytes) {
        const frame = this.endFrameOf(end, message);
        if (frame.byteLength <= maxFrameBytes) {
          this.nextSeq++;
          this.lastEnd = frame;
          this.publishSequenced(frame);
          return;
        }
      }
      await this.sendMessage(message, signal);
    }
    this.sendEndNow(end);
  }

  /** Sends an End frame without a message now (errors, cancelled handlers). */
  sendEndNow(end: EndFields): void {
    if (this.sealed) return;
    const frame = this.endFrameOf(end, undefined);
    this.nextSeq++;
    this.lastEnd = frame;
    this.publishSequenced(frame);
  }

  /** Whether the End frame sent asked the caller to acknowledge it. */
  get endNeedsAck(): boolean {
    return this.endAck;
  }

  private endAck = false;

  private endFrameOf(end: EndFields, message: Uint8Array | undefined): Uint8Array {
    // Built without object spreads: this runs once per call.
    const value: EndValue = { headers: end.headers, trailers: end.trailers };
    if (end.status !== undefined) value.status = end.status;
    if (message !== undefined) value.message = message;
    const seq = this.nextSeq;
    const frame = encodeFrame({ callId: this.callId, seq, kind: { case: "end", value } });
    this.endAck = this.retained.length > 0 || frame.byteLength > MAX_KEPT_END_BYTES;
    if (!this.endAck) return frame;
    value.ack = true;
    return encodeFrame({ callId: this.callId, seq, kind: { case: "end", value } });
  }

  /**
   * Applies the peer's Credit: raises the limit, forgets frames the peer
   * has, and sends again what it asks for.
   */
  onCredit(limit: number, received: number, resend: boolean): void {
    if (received > this.retainedFrom) {
      const acknowledged = Math.min(received - this.retainedFrom, this.retained.length);
      this.retained.splice(0, acknowledged);
      this.retainedFrom += acknowledged;
      if (this.sentUpTo < this.retainedFrom) this.sentUpTo = this.retainedFrom;
      if (this.inFlightLimit !== Number.POSITIVE_INFINITY) {
        // Widen by what was acknowledged: doubling per round trip.
        this.inFlightLimit += acknowledged;
        if (this.inFlightLimit >= MAX_UNACKNOWLEDGED_FRAMES)
          this.inFlightLimit = Number.POSITIVE_INFINITY;
      }
    }
    this.credit.grant(Math.min(limit, this.retainedFrom + MAX_UNACKNOWLEDGED_FRAMES));
    if (resend && this.retained.length > 0) {
      const now = this.now();
      const from = Math.max(received, this.retainedFrom);
      if (from !== this.lastResend.from || now - this.lastResend.at >= RESEND_INTERVAL_MS) {
        this.lastResend = { at: now, from };
        const outstanding = this.sentUpTo - this.retainedFrom;
        this.inFlightLimit = Math.max(MIN_IN_FLIGHT, outstanding >> 1);
        this.sentUpTo = this.retainedFrom;
      }
    }
    this.pump();
    if (received > 0) this.acknowledgedListener?.();
  }

  /**
   * The first frame kept for the peer (sent, not acknowledged) that is
   * larger than `maxFrameBytes`: one that no publish can carry, so that
   * sending it again can never help. Undefined when every one fits.
   */
  oversizedFrame(maxFrameBytes: number): { seq: number; frame: Uint8Array } | undefined {
    for (let i = 0; i < this.retained.length; i++) {
      const frame = this.retained[i] as Uint8Array;
      if (frame.byteLength > maxFrameBytes) return { seq: this.retainedFrom + i, frame };
    }
    return undefined;
  }

  /**
   * Ends the direction in place of frame `seq` (a kept frame, see
   * {@link oversizedFrame}): that frame and every one after it are dropped
   * (never sent again), `end` goes out at seq `seq`, and nothing sequenced
   * follows it: later sends, a waiting batch and a later End are dropped.
   * The peer, which never got frame `seq`, processes the End in its place,
   * and frames after it that it may hold never count. Server side.
   */
  replaceWithEnd(seq: number, end: EndFields): void {
    const index = seq - this.retainedFrom;
    if (this.sealed || index < 0 || index >= this.retained.length) return;
    this.retained.length = index;
    if (this.sentUpTo > seq) this.sentUpTo = seq;
    this.nextSeq = seq;
    this.clearLinger();
    this.batcher?.take();
    this.sendEndNow(end);
    this.sealed = true;
  }

  /** Whether the peer acknowledged every sequenced frame sent so far. */
  get allAcknowledged(): boolean {
    return this.retained.length === 0;
  }

  /** Publishes the retained frames that have room in flight. */
  private pump(): void {
    const end = this.retainedFrom + this.retained.length;
    while (this.sentUpTo < end && this.sentUpTo - this.retainedFrom < this.inFlightLimit) {
      this.output.publish(this.retained[this.sentUpTo - this.retainedFrom] as Uint8Array);
      this.sentUpTo++;
    }
  }

  /** Resolves when the next sequenced frame may go; at once when it may already. */
  private creditFor(signal: SignalSource): Promise<void> | undefined {
    return this.credit.allows(this.nextSeq)
      ? undefined
      : this.credit.waitFor(this.nextSeq, signal.signal);
  }

  /** The End frame as published, once it was. */
  get endFrame(): Uint8Array | undefined {
    return this.lastEnd;
  }

  private lastEnd: Uint8Array | undefined;

  /**
   * Publishes a sequenced frame and keeps it until the peer acknowledges it
   * (Credit.received), so a frame a broker lost can be sent again. At most
   * a window of frames is kept: credit bounds what is unacknowledged.
   */
  private publishSequenced(frame: Uint8Array): void {
    if (this.sealed) return;
    this.retained.push(frame);
    this.pump();
  }

  private scheduleFlush(): void {
    if (!this.turnScheduled) {
      this.turnScheduled = true;
      afterThisTurn(() => {
        this.turnScheduled = false;
        this.flushIfCredit();
      });
    }
    if (this.lingerTimer === undefined && this.lingerMs > 0) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = undefined;
        this.flushIfCredit();
      }, this.lingerMs);
    }
  }

  /** Sends the waiting batch now if credit allows, else at the next grant. */
  private flushIfCredit(): void {
    if (this.batcher === undefined || this.batcher.size === 0) return;
    if (this.credit.allows(this.nextSeq)) {
      this.publishBatch();
    } else if (!this.waitingForCredit) {
      this.waitingForCredit = true;
      this.credit.onNextGrant(() => {
        this.waitingForCredit = false;
        this.flushIfCredit();
      });
    }
  }

  private publishBatch(): void {
    this.clearLinger();
    const messages = this.batcher?.take() ?? [];
    if (messages.length === 0) return;
    const kind: FrameKindInit =
      messages.length === 1
        ? { case: "message", value: messages[0] as Uint8Array }
        : { case: "batch", value: { messages } };
    this.publishSequenced(encodeFrame({ callId: this.callId, seq: this.nextSeq++, kind }));
  }

  private clearLinger(): void {
    if (this.lingerTimer !== undefined) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
  }
}
