/**
 * The receiving half of one call direction: drops duplicate frames, restores
 * order, reassembles chunks, and turns frames into an ordered stream of
 * events for the call. Holds at most one window of early frames and one
 * message in reassembly; a peer that exceeds either gets a status, never an
 * exception or unbounded memory.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { type ByteBudget, ChunkAssembler } from "./chunk-assembler.js";
import { DEFAULT_WINDOW, ReceiveCredit } from "./flow-credit.js";
import type { FrameKind } from "./frame-codec.js";
import type { End, Frame, Headers as HeadersFrame, Open } from "./gen/mqrpc/v1/wire_pb.js";
import { ReorderWindow } from "./reorder-window.js";

/** What a call sees of its peer's sequenced frames, in order. */
export type ReceivedEvent =
  | { readonly type: "open"; readonly open: Open }
  | { readonly type: "headers"; readonly headers: HeadersFrame }
  | { readonly type: "message"; readonly data: Uint8Array }
  | { readonly type: "halfClose" }
  | { readonly type: "end"; readonly end: End };

/** Callbacks of a {@link FrameReceiver}. */
export interface ReceiverSink {
  /** The next event in order. */
  event(event: ReceivedEvent): void;
  /** The peer broke the protocol or a limit; the call must end with `error`. */
  violation(error: ConnectError): void;
  /**
   * Send the peer a Credit: the limit, the next seq awaited, and whether to
   * send again what it sent from there on.
   */
  grant(limit: number, received: number, resend: boolean): void;
}

type SequencedFrame = Frame & { kind: { case: FrameKind } };

/** See the module comment. */
export class FrameReceiver {
  private readonly order: ReorderWindow<SequencedFrame>;
  /** Made at the first chunk: most calls never chunk. */
  private assembler: ChunkAssembler | undefined;
  private readonly credit: ReceiveCredit;
  private failed = false;
  private lastCheckedExpected = -1;

  /**
   * @param window frames the peer may send beyond what the consumer released
   * @param maxMessageBytes cap on one reassembled message
   */
  constructor(
    window: number,
    private readonly maxMessageBytes: number,
    private readonly sink: ReceiverSink,
    private readonly reassemblyBudget?: ByteBudget,
  ) {
    // End and HalfClose may travel without credit: room for them on top.
    this.order = new ReorderWindow(Math.max(window, DEFAULT_WINDOW) + 2);
    this.credit = new ReceiveCredit(window);
  }

  /** Bytes held for a message in reassembly. */
  get bufferedBytes(): number {
    return this.assembler?.bufferedBytes ?? 0;
  }

  /** Releases what a partly received message holds; the call is over. */
  dispose(): void {
    this.failed = true;
    this.assembler?.reset();
  }

  /** Offers a sequenced frame of this call and direction. */
  accept(frame: SequencedFrame): void {
    if (this.failed) return;
    const ready = this.order.accept(frame.seq, frame);
    if (ready === "duplicate") return;
    if (ready === "overflow") {
      this.fail(
        new ConnectError(
          `frame ${frame.seq} is beyond the flow-control window (expected ${this.order.expected})`,
          Code.ResourceExhausted,
        ),
      );
      return;
    }
    for (const next of ready) {
      if (this.failed) return;
      this.process(next);
    }
  }

  /**
   * Called at intervals while the call lasts. When nothing arrived in order
   * since the last check although more is due (a gap, or a stream that went
   * silent), asks the peer to send again from the first missing frame: a
   * broker that restarted may have lost a frame it had acknowledged.
   */
  checkProgress(moreExpected: boolean): void {
    if (this.failed) return;
    const expected = this.order.expected;
    const stalled = expected === this.lastCheckedExpected;
    this.lastCheckedExpected = expected;
    if (stalled && (this.order.buffered > 0 || (moreExpected && expected > 0))) {
      this.sink.grant(this.credit.announced, expected, true);
    }
  }

  /** The consumer took one message: release its frame and maybe grant credit. */
  took(): void {
    this.credit.took();
    const limit = this.credit.nextGrant();
    if (limit !== undefined) this.sink.grant(limit, this.order.expected, false);
  }

  private process(frame: SequencedFrame): void {
    const kind = frame.kind;
    switch (kind.case) {
      case "open":
        this.credit.processedFrame(frame.seq, kind.value.message !== undefined ? 1 : 0);
        this.sink.event({ type: "open", open: kind.value });
        if (kind.value.message !== undefined)
          this.sink.event({ type: "message", data: kind.value.message });
        if (kind.value.halfClose) this.sink.event({ type: "halfClose" });
        return;
      case "headers":
        this.credit.processedFrame(frame.seq, 0);
        this.sink.event({ type: "headers", headers: kind.value });
        return;
      case "message":
        this.credit.processedFrame(frame.seq, 1);
        this.sink.event({ type: "message", data: kind.value });
        return;
      case "batch":
        this.credit.processedFrame(frame.seq, kind.value.messages.length);
        for (const data of kind.value.messages) this.sink.event({ type: "message", data });
        return;
      case "chunk": {
        let message: Uint8Array | undefined;
        try {
          this.assembler ??= new ChunkAssembler(this.maxMessageBytes, this.reassemblyBudget);
          message = this.assembler.push(kind.value);
        } catch (e) {
          this.fail(ConnectError.from(e, Code.InvalidArgument));
          return;
        }
        this.credit.processedFrame(frame.seq, message === undefined ? 0 : 1);
        if (message !== undefined) this.sink.event({ type: "message", data: message });
        else this.took0();
        return;
      }
      case "halfClose":
        this.credit.processedFrame(frame.seq, 0);
        this.sink.event({ type: "halfClose" });
        return;
      case "end":
        this.credit.processedFrame(frame.seq, kind.value.message !== undefined ? 1 : 0);
        if (kind.value.message !== undefined)
          this.sink.event({ type: "message", data: kind.value.message });
        this.sink.event({ type: "end", end: kind.value });
        return;
      default:
        // Unsequenced kinds never reach the receiver; the call routes them.
        return;
    }
  }

  /** A chunk that completes nothing is released at once; maybe grant. */
  private took0(): void {
    const limit = this.credit.nextGrant();
    if (limit !== undefined) this.sink.grant(limit, this.order.expected, false);
  }

  private fail(error: ConnectError): void {
    this.failed = true;
    this.assembler?.reset();
    this.sink.violation(error);
  }
}
