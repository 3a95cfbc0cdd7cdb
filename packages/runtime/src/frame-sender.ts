/**
 * The sending half of one call direction: numbers sequenced frames, puts a
 * message inline when it fits in one publish and in chunks when it does not,
 * and waits for flow-control credit before each message frame.
 */
import { splitIntoChunks } from "./chunk-assembler.js";
import { SendCredit } from "./flow-credit.js";
import { encodeFrame, type FrameInit } from "./frame-codec.js";
import type { MetadataEntry, Status } from "./gen/mqrpc/v1/wire_pb.js";

/** Room left in a publish for frame fields around a message or chunk. */
const FRAME_HEADROOM = 64;

/** Where a sender's frames go. */
export interface FrameOutput {
  /** Publishes one encoded frame; failures are the owner's to handle. */
  publish(frame: Uint8Array): void;
  /** The largest frame that fits in one publish on the current topic. */
  maxFrameBytes(): number;
}

type FrameKindInit = NonNullable<FrameInit["kind"]>;

/** The fields of an Open frame besides the inline message. */
export interface OpenFields {
  readonly timeoutMs: number;
  readonly headers: MetadataEntry[];
  readonly window: number;
}

/** The fields of an End frame besides the inline message. */
export interface EndFields {
  readonly status: Status;
  readonly headers: MetadataEntry[];
  readonly trailers: MetadataEntry[];
}

/** See the module comment. */
export class FrameSender {
  private nextSeq = 0;
  /** The peer's flow-control limit. */
  readonly credit: SendCredit;

  constructor(
    private readonly callId: number,
    private readonly output: FrameOutput,
    initialWindow: number,
  ) {
    this.credit = new SendCredit(initialWindow);
  }

  /** Sends a sequenced frame that carries no message (Headers, HalfClose). */
  sendControl(kind: FrameKindInit): void {
    this.output.publish(encodeFrame({ callId: this.callId, seq: this.nextSeq++, kind }));
  }

  /** Sends an unsequenced frame (Cancel, Credit, Ping, Pong). */
  sendUnsequenced(kind: FrameKindInit): void {
    this.output.publish(encodeFrame({ callId: this.callId, kind }));
  }

  /**
   * Opens the call, with `message` inline when it fits (the unary fast path:
   * one publish per request). A message too large goes in chunks after the
   * Open, followed by the half-close when requested.
   */
  async sendOpen(
    open: OpenFields,
    message: Uint8Array | undefined,
    halfClose: boolean,
    signal: AbortSignal,
  ): Promise<void> {
    if (message !== undefined && message.byteLength <= this.output.maxFrameBytes()) {
      const frame = encodeFrame({
        callId: this.callId,
        seq: this.nextSeq,
        kind: { case: "open", value: { ...open, message, halfClose } },
      });
      if (frame.byteLength <= this.output.maxFrameBytes()) {
        this.nextSeq++;
        this.output.publish(frame);
        return;
      }
    }
    this.sendControl({ case: "open", value: { ...open, halfClose: halfClose && message === undefined } });
    if (message !== undefined) {
      await this.sendMessage(message, signal);
      if (halfClose) this.sendControl({ case: "halfClose", value: {} });
    }
  }

  /** Sends one message, waiting for credit frame by frame. */
  async sendMessage(message: Uint8Array, signal: AbortSignal): Promise<void> {
    const budget = this.output.maxFrameBytes() - FRAME_HEADROOM;
    if (message.byteLength <= budget) {
      await this.credit.waitFor(this.nextSeq, signal);
      this.output.publish(
        encodeFrame({ callId: this.callId, seq: this.nextSeq++, kind: { case: "message", value: message } }),
      );
      return;
    }
    for (const piece of splitIntoChunks(message, budget)) {
      await this.credit.waitFor(this.nextSeq, signal);
      this.output.publish(
        encodeFrame({ callId: this.callId, seq: this.nextSeq++, kind: { case: "chunk", value: piece } }),
      );
    }
  }

  /**
   * Ends the call (server side), with the last message inline when it fits:
   * a unary response is then one publish.
   */
  async sendEnd(
    end: EndFields,
    message: Uint8Array | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    if (message !== undefined) {
      if (message.byteLength <= this.output.maxFrameBytes()) {
        const frame = encodeFrame({
          callId: this.callId,
          seq: this.nextSeq,
          kind: { case: "end", value: { ...end, message } },
        });
        if (frame.byteLength <= this.output.maxFrameBytes()) {
          this.nextSeq++;
          this.output.publish(frame);
          return;
        }
      }
      await this.sendMessage(message, signal);
    }
    this.sendControl({ case: "end", value: end });
  }
}
