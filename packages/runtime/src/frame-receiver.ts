/**
 * The receiving half of one call direction: drops duplicate frames, restores
 * order, reassembles chunks, and turns frames into an ordered stream of
 * events for the call. Holds at most one window of early frames and one
 * message in reassembly; a peer that exceeds either gets a status, never an
 * exception or unbounded memory. When the shared reassembly budget has no
 * room for a message, the receiver drops its frames and asks for them again
 * once room is set aside for it (docs/PROTOCOL.md sections 9 and 11.2).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ChunkAssembler, NO_ROOM } from "./chunk-assembler.js";
import { afterThisTurn } from "./event-loop-turn.js";
import { DEFAULT_WINDOW, ReceiveCredit } from "./flow-credit.js";
import type { FrameKind } from "./frame-codec.js";
import type { End, Frame, Headers as HeadersFrame, Open } from "./gen/mqrpc/v1/wire_pb.js";
import type { BudgetWait, ReassemblyBudget } from "./reassembly-budget.js";
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

/** Where a receiver draws reassembly memory from. */
export interface ReassemblyShare {
  readonly budget: ReassemblyBudget;
  /** The peer whose share is drawn on; undefined draws on the whole budget. */
  readonly owner: string | undefined;
}

/** The cap on one received message, and how errors name it. */
export interface MessageLimit {
  readonly bytes: number;
  /** e.g. "the server's maxMessageBytes" */
  readonly name: string;
}

/** See the module comment. */
export class FrameReceiver {
  private readonly order: ReorderWindow<SequencedFrame>;
  /** Made at the first chunk: most calls never chunk. */
  private assembler: ChunkAssembler | undefined;
  private readonly credit: ReceiveCredit;
  private failed = false;
  private lastCheckedExpected = -1;
  /** Waiting for reassembly room: every frame is dropped until it is granted. */
  private budgetWait: BudgetWait | undefined;
  /**
   * After asking for frames again, how many more in-order frames to
   * acknowledge as they come (one Credit per event-loop turn), so a sender
   * that slowed down after a loss hears of progress at once.
   */
  private recovering = 0;
  private ackScheduled = false;

  /**
   * @param window frames the peer may send beyond what the consumer released
   * @param limit cap on one message, inline or reassembled
   */
  constructor(
    private readonly window: number,
    private readonly limit: MessageLimit,
    private readonly sink: ReceiverSink,
    private readonly reassembly?: ReassemblyShare,
  ) {
    // End and HalfClose may travel without credit: room for them on top.
    this.order = new ReorderWindow(Math.max(window, DEFAULT_WINDOW) + 2);
    this.credit = new ReceiveCredit(window);
  }

  /** Bytes held for a message in reassembly. */
  get bufferedBytes(): number {
    return this.assembler?.bufferedBytes ?? 0;
  }

  /** The next seq awaited: every frame below it was processed. */
  get expected(): number {
    return this.order.expected;
  }

  /** The last flow-control limit announced to the peer. */
  get announced(): number {
    return this.credit.announced;
  }

  /** Releases what a partly received message holds; the call is over. */
  dispose(): void {
    this.failed = true;
    this.budgetWait?.cancel();
    this.budgetWait = undefined;
    this.assembler?.reset();
  }

  /**
   * Offers a sequenced frame of this call and direction. Returns whether it
   * was new (not a duplicate, nor dropped for want of room).
   */
  accept(frame: SequencedFrame): boolean {
    if (this.failed || this.budgetWait !== undefined) return false;
    const before = this.order.expected;
    const ready = this.order.accept(frame.seq, frame);
    if (ready === "duplicate") return false;
    if (ready === "overflow") {
      this.fail(
        new ConnectError(
          `frame ${frame.seq} is beyond the flow-control window (expected ${this.order.expected})`,
          Code.ResourceExhausted,
        ),
      );
      return false;
    }
    for (const next of ready) {
      if (this.failed) return true;
      if (!this.process(next)) {
        // No room to reassemble: this frame and the ones after it come again.
        this.order.rewind(next.seq);
        return false;
      }
    }
    if (this.recovering > 0 && this.order.expected > before) {
      this.recovering = Math.max(0, this.recovering - (this.order.expected - before));
      this.scheduleAck();
    }
    return true;
  }

  /**
   * Called at intervals while the call lasts. When nothing arrived in order
   * since the last check although more is due (a gap, or a stream that went
   * silent), asks the peer to send again from the first missing frame: a
   * broker may have lost (or, past its queue limit, dropped) a frame.
   */
  checkProgress(moreExpected: boolean): void {
    if (this.failed || this.budgetWait !== undefined) return;
    const expected = this.order.expected;
    const stalled = expected === this.lastCheckedExpected;
    this.lastCheckedExpected = expected;
    if (stalled && (this.order.buffered > 0 || moreExpected)) {
      this.requestResend();
    }
  }

  /**
   * Asks the peer to send again everything from the first missing frame,
   * at once: after a reconnect, or when reassembly room was set aside.
   */
  requestResend(): void {
    if (this.failed) return;
    // Counts as a progress check: the next one asks again only if stalled.
    this.lastCheckedExpected = this.order.expected;
    this.recovering = Math.max(this.window, DEFAULT_WINDOW);
    this.sink.grant(this.credit.announced, this.order.expected, true);
  }

  /** The consumer took one message: release its frame and maybe grant credit. */
  took(): void {
    this.credit.took();
    const limit = this.credit.nextGrant();
    if (limit !== undefined) this.sink.grant(limit, this.order.expected, false);
  }

  /** Processes one in-order frame; false when it could not be taken (no room). */
  private process(frame: SequencedFrame): boolean {
    const kind = frame.kind;
    if (this.oversizeInline(frame)) return true;
    switch (kind.case) {
      case "open":
        this.credit.processedFrame(frame.seq, kind.value.message !== undefined ? 1 : 0);
        this.sink.event({ type: "open", open: kind.value });
        if (kind.value.message !== undefined)
          this.sink.event({ type: "message", data: kind.value.message });
        if (kind.value.halfClose) this.sink.event({ type: "halfClose" });
        return true;
      case "headers":
        this.credit.processedFrame(frame.seq, 0);
        this.sink.event({ type: "headers", headers: kind.value });
        return true;
      case "message":
        this.credit.processedFrame(frame.seq, 1);
        this.sink.event({ type: "message", data: kind.value });
        return true;
      case "batch":
        this.credit.processedFrame(frame.seq, kind.value.messages.length);
        for (const data of kind.value.messages) this.sink.event({ type: "message", data });
        return true;
      case "chunk": {
        let message: Uint8Array | undefined | typeof NO_ROOM;
        try {
          this.assembler ??= new ChunkAssembler(
            this.limit.bytes,
            this.reassembly?.budget,
            this.reassembly?.owner,
            this.limit.name,
          );
          message = this.assembler.push(kind.value);
        } catch (e) {
          this.fail(ConnectError.from(e, Code.InvalidArgument));
          return true;
        }
        if (message === NO_ROOM) {
          this.waitForRoom(kind.value.totalSize);
          return false;
        }
        this.credit.processedFrame(frame.seq, message === undefined ? 0 : 1);
        if (message !== undefined) this.sink.event({ type: "message", data: message });
        else this.took0();
        return true;
      }
      case "halfClose":
        this.credit.processedFrame(frame.seq, 0);
        this.sink.event({ type: "halfClose" });
        return true;
      case "end":
        this.credit.processedFrame(frame.seq, kind.value.message !== undefined ? 1 : 0);
        if (kind.value.message !== undefined)
          this.sink.event({ type: "message", data: kind.value.message });
        this.sink.event({ type: "end", end: kind.value });
        return true;
      default:
        // Unsequenced kinds never reach the receiver; the call routes them.
        return true;
    }
  }

  /** Fails the call when a message carried inline is above the limit. */
  private oversizeInline(frame: SequencedFrame): boolean {
    const kind = frame.kind;
    let largest = 0;
    if (kind.case === "message") largest = kind.value.byteLength;
    else if (kind.case === "open" || kind.case === "end")
      largest = kind.value.message?.byteLength ?? 0;
    else if (kind.case === "batch")
      for (const m of kind.value.messages) largest = Math.max(largest, m.byteLength);
    if (largest <= this.limit.bytes) return false;
    this.fail(
      new ConnectError(
        `a message of ${largest} bytes exceeds ${this.limit.name} (${this.limit.bytes} bytes)`,
        Code.ResourceExhausted,
      ),
    );
    return true;
  }

  /**
   * Queues for room for a message of `bytes`; meanwhile every frame is
   * dropped (the sender keeps them), and once room is reserved the sender
   * is asked to send them again.
   */
  private waitForRoom(bytes: number): void {
    const share = this.reassembly;
    if (share === undefined) return;
    const assembler = this.assembler;
    this.budgetWait = share.budget.wait(bytes, share.owner, () => {
      if (this.failed || this.budgetWait === undefined) {
        share.budget.release(bytes, share.owner);
        return;
      }
      this.budgetWait = undefined;
      assembler?.hold(bytes);
      this.requestResend();
    });
  }

  /** Acknowledges in-order progress once this turn is over (see `recovering`). */
  private scheduleAck(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    afterThisTurn(() => {
      this.ackScheduled = false;
      if (!this.failed) this.sink.grant(this.credit.announced, this.order.expected, false);
    });
  }

  /** A chunk that completes nothing is released at once; maybe grant. */
  private took0(): void {
    const limit = this.credit.nextGrant();
    if (limit !== undefined) this.sink.grant(limit, this.order.expected, false);
  }

  private fail(error: ConnectError): void {
    this.failed = true;
    this.budgetWait?.cancel();
    this.budgetWait = undefined;
    this.assembler?.reset();
    this.sink.violation(error);
  }
}
