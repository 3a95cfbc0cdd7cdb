/**
 * The receiving half of one call direction: drops duplicate frames, restores
 * order, reassembles chunks, and turns frames into an ordered stream of
 * events for the call. Holds at most one window of early frames (and at
 * most `maxMessageBytes` of them) and one message in reassembly; a peer
 * that exceeds the window or sends a frame larger than any it could
 * legitimately send gets a status, never an exception or unbounded memory.
 * Early frames and partly received messages draw on the shared reassembly
 * budget as their bytes arrive; when it has no room, the receiver drops the
 * frame and asks for it again: early frames at the next progress check,
 * a chunk once room is set aside for it (docs/PROTOCOL.md sections 7, 9
 * and 11.2).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  End,
  Frame,
  Headers as HeadersFrame,
  MetadataEntry,
  Open,
} from "../gen/mqrpc/v1/wire_pb.js";
import type { FrameKind } from "../wire/frame-codec.js";
import { MAX_METADATA_BYTES } from "../wire/frame-decoder.js";
import { DEFAULT_MAX_PUBLISH_BYTES } from "../wire/limits.js";
import { ChunkAssembler, NO_ROOM } from "./chunk-assembler.js";
import { afterThisTurn } from "./event-loop-turn.js";
import { DEFAULT_WINDOW, ReceiveCredit } from "./flow-credit.js";
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

/**
 * The most bytes of messages, chunk data and metadata one frame may carry,
 * for a receiver whose message cap is `maxMessageBytes`: one message (or,
 * for a Batch, a default publish's worth when that is more), plus the
 * metadata an Open, Headers or End may carry and as much again for a
 * Status. A peer never needs more, since larger messages are chunked
 * (docs/PROTOCOL.md section 9); a larger frame fails its call with
 * RESOURCE_EXHAUSTED as it arrives, before it is held.
 */
export function maxFrameContentBytes(maxMessageBytes: number): number {
  return Math.max(maxMessageBytes, DEFAULT_MAX_PUBLISH_BYTES) + 2 * MAX_METADATA_BYTES;
}

/** What an early frame costs beyond its content: the objects around it. */
export const EARLY_FRAME_OVERHEAD_BYTES = 256;

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
  /** Bytes early frames hold, reserved in the shared budget. */
  private earlyReserved = 0;
  private readonly maxFrameBytes: number;
  /**
   * The seq after the last frame processed: what the peer is told arrived.
   * The reorder window moves past every frame it hands out at once, but a
   * frame among them may still be refused for want of room, and the peer
   * must not forget it.
   */
  private processed = 0;
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
    // Early frames hold at most one message's worth of bytes.
    this.order = new ReorderWindow(Math.max(window, DEFAULT_WINDOW) + 2, limit.bytes);
    this.credit = new ReceiveCredit(window);
    this.maxFrameBytes = maxFrameContentBytes(limit.bytes);
  }

  /** Bytes allocated for a message in reassembly. */
  get bufferedBytes(): number {
    return this.assembler?.bufferedBytes ?? 0;
  }

  /** Bytes that frames held ahead of a gap count for. */
  get earlyBytes(): number {
    return this.order.bufferedBytes;
  }

  /** The next seq awaited: every frame below it was processed. */
  get expected(): number {
    return this.processed;
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
    this.dropEarly();
  }

  /**
   * Offers a sequenced frame of this call and direction. Returns whether it
   * was new (not a duplicate, nor dropped for want of room).
   */
  accept(frame: SequencedFrame): boolean {
    if (this.failed || this.budgetWait !== undefined) return false;
    const before = this.order.expected;
    if (frame.seq >= before) {
      const bytes = frameContentBytes(frame);
      if (bytes > this.maxFrameBytes) {
        this.fail(
          new ConnectError(
            `a frame carrying ${bytes} bytes exceeds the ${this.maxFrameBytes} bytes a peer may send under ${this.limit.name} (${this.limit.bytes} bytes)`,
            Code.ResourceExhausted,
          ),
        );
        return false;
      }
      if (frame.seq > before && this.order.wouldHold(frame.seq))
        return this.holdEarly(frame, bytes);
    }
    const ready = this.order.accept(frame.seq, frame);
    if (ready === "duplicate" || ready === "full") return false;
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
        this.releaseEarly();
        return false;
      }
    }
    this.processed = this.order.expected;
    if (ready.length > 1) this.releaseEarly();
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
    this.sink.grant(this.credit.announced, this.processed, true);
  }

  /** The consumer took one message: release its frame and maybe grant credit. */
  took(): void {
    this.credit.took();
    const limit = this.credit.nextGrant();
    if (limit !== undefined) this.sink.grant(limit, this.processed, false);
  }

  /** Processes one in-order frame; false when it could not be taken (no room). */
  private process(frame: SequencedFrame): boolean {
    const kind = frame.kind;
    if (this.oversizeInline(frame)) return true;
    // Taken (a chunk only once it found room): credit granted from here on counts it.
    if (kind.case !== "chunk") this.processed = frame.seq + 1;
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
          this.waitForRoom();
          return false;
        }
        this.processed = frame.seq + 1;
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

  /**
   * Keeps a frame that arrived ahead of a gap, when the call's early frames
   * and the shared budget have room for it; otherwise drops it (it comes
   * again when the receiver asks for the frames from the gap on). A kept
   * frame is copied out of its publish, so that it holds only its own bytes.
   */
  private holdEarly(frame: SequencedFrame, content: number): boolean {
    const bytes = content + EARLY_FRAME_OVERHEAD_BYTES;
    if (this.order.bufferedBytes + bytes > this.limit.bytes) return false;
    const share = this.reassembly;
    if (share !== undefined && !share.budget.reserve(bytes, share.owner)) return false;
    const held = this.order.accept(frame.seq, detached(frame), bytes);
    if (!Array.isArray(held)) {
      share?.budget.release(bytes, share.owner);
      return false;
    }
    this.earlyReserved += bytes;
    return true;
  }

  /** Gives back the budget of early frames the window no longer holds. */
  private releaseEarly(): void {
    const freed = this.earlyReserved - this.order.bufferedBytes;
    if (freed <= 0) return;
    this.earlyReserved -= freed;
    this.reassembly?.budget.release(freed, this.reassembly.owner);
  }

  /** Forgets every early frame and gives back its budget. */
  private dropEarly(): void {
    this.order.rewind(this.order.expected);
    this.releaseEarly();
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
   * Queues for the room the refused chunk needs; meanwhile every frame is
   * dropped (the sender keeps them), and once room is reserved the sender
   * is asked to send them again.
   */
  private waitForRoom(): void {
    this.budgetWait = this.assembler?.waitForRoom(() => {
      // A call that ended meanwhile gave the room back when it closed.
      if (this.failed || this.budgetWait === undefined) return;
      this.budgetWait = undefined;
      this.requestResend();
    });
  }

  /** Acknowledges in-order progress once this turn is over (see `recovering`). */
  private scheduleAck(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    afterThisTurn(() => {
      this.ackScheduled = false;
      if (!this.failed) this.sink.grant(this.credit.announced, this.processed, false);
    });
  }

  /** A chunk that completes nothing is released at once; maybe grant. */
  private took0(): void {
    const limit = this.credit.nextGrant();
    if (limit !== undefined) this.sink.grant(limit, this.processed, false);
  }

  private fail(error: ConnectError): void {
    this.failed = true;
    this.budgetWait?.cancel();
    this.budgetWait = undefined;
    this.assembler?.reset();
    this.dropEarly();
    this.sink.violation(error);
  }
}

function metadataBytes(entries: readonly MetadataEntry[]): number {
  let bytes = 0;
  for (const e of entries) {
    bytes += e.key.length;
    if (e.value.case === "binary") bytes += e.value.value.byteLength;
    else if (e.value.case === "text") bytes += e.value.value.length;
  }
  return bytes;
}

/** Bytes of messages, chunk data and metadata a frame carries. */
export function frameContentBytes(frame: SequencedFrame): number {
  const kind = frame.kind;
  switch (kind.case) {
    case "message":
      return kind.value.byteLength;
    case "chunk":
      return kind.value.data.byteLength;
    case "batch": {
      let bytes = 0;
      for (const m of kind.value.messages) bytes += m.byteLength;
      return bytes;
    }
    case "open":
      return (kind.value.message?.byteLength ?? 0) + metadataBytes(kind.value.headers);
    case "headers":
      return metadataBytes(kind.value.headers) + kind.value.instance.length;
    case "end": {
      const status = kind.value.status;
      let bytes =
        (kind.value.message?.byteLength ?? 0) +
        metadataBytes(kind.value.headers) +
        metadataBytes(kind.value.trailers);
      if (status !== undefined) {
        bytes += status.message.length;
        for (const d of status.details) bytes += d.type.length + d.value.byteLength;
      }
      return bytes;
    }
    default:
      return 0;
  }
}

/**
 * A copy of `bytes` in an array of its own. Not `bytes.slice()`: decoded
 * fields are views into the publish, which MQTT.js hands over as a Node
 * Buffer, and Buffer's `slice` makes another view, not a copy.
 */
const own = (bytes: Uint8Array): Uint8Array => new Uint8Array(bytes);

const ownOptional = (bytes: Uint8Array | undefined): Uint8Array | undefined =>
  bytes === undefined ? undefined : own(bytes);

const copyEntries = (entries: readonly MetadataEntry[]): MetadataEntry[] =>
  entries.map((e) =>
    e.value.case === "binary" ? { ...e, value: { case: "binary", value: own(e.value.value) } } : e,
  );

/**
 * A copy of `frame` whose bytes are its own: decoded bytes fields are views
 * into the publish, and one small early frame must not keep a large (or
 * coalesced) publish alive.
 */
function detached(frame: SequencedFrame): SequencedFrame {
  const kind = frame.kind;
  switch (kind.case) {
    case "message":
      return { ...frame, kind: { case: "message", value: own(kind.value) } };
    case "chunk":
      return {
        ...frame,
        kind: { case: "chunk", value: { ...kind.value, data: own(kind.value.data) } },
      };
    case "batch":
      return {
        ...frame,
        kind: {
          case: "batch",
          value: { ...kind.value, messages: kind.value.messages.map(own) },
        },
      };
    case "open":
      return {
        ...frame,
        kind: {
          case: "open",
          value: {
            ...kind.value,
            headers: copyEntries(kind.value.headers),
            message: ownOptional(kind.value.message),
          },
        },
      };
    case "headers":
      return {
        ...frame,
        kind: {
          case: "headers",
          value: { ...kind.value, headers: copyEntries(kind.value.headers) },
        },
      };
    case "end": {
      const status = kind.value.status;
      return {
        ...frame,
        kind: {
          case: "end",
          value: {
            ...kind.value,
            headers: copyEntries(kind.value.headers),
            trailers: copyEntries(kind.value.trailers),
            message: ownOptional(kind.value.message),
            status:
              status === undefined
                ? undefined
                : {
                    ...status,
                    details: status.details.map((d) => ({ ...d, value: own(d.value) })),
                  },
          },
        },
      };
    }
    default:
      return frame;
  }
}
