/**
 * Flow control in frames (docs/PROTOCOL.md, "Flow control"). Credit counts
 * sequenced frames, because what overflows is a broker's per-client queue of
 * publishes (Mosquitto drops QoS 1 messages past `max_queued_messages`) and
 * the receiver's buffers, both measured in publishes. A Credit frame carries a
 * cumulative limit: the peer may send frames whose seq is below it.
 */

/** Frames a side may send before it hears from its peer. */
export const DEFAULT_WINDOW = 64;

/** The sending side: waits while the peer's limit is reached. */
export class SendCredit {
  private limit: number;
  private waiters: Array<() => void> = [];

  constructor(initialWindow: number) {
    this.limit = initialWindow;
  }

  /** The highest limit granted so far. */
  get current(): number {
    return this.limit;
  }

  /** Whether a frame with sequence number `seq` may go now. */
  allows(seq: number): boolean {
    return seq < this.limit;
  }

  /** Applies a Credit frame; duplicates and stale limits change nothing. */
  grant(limit: number): void {
    if (limit <= this.limit) return;
    this.limit = limit;
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Calls `wake` once, at the next grant that raises the limit. */
  onNextGrant(wake: () => void): void {
    this.waiters.push(wake);
  }

  /** Resolves once `seq` may be sent; rejects when `signal` aborts. */
  async waitFor(seq: number, signal: AbortSignal): Promise<void> {
    while (!this.allows(seq)) {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        this.waiters.push(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        });
      });
    }
  }
}

/**
 * The receiving side: tracks which frames the consumer has released and says
 * when to send more credit. A frame carrying messages is released when the
 * consumer takes its last message; other frames (chunks, control) when they
 * are processed, so a message larger than the window still flows.
 */
export class ReceiveCredit {
  private processed = 0;
  private readonly untaken: number[] = [];
  private untakenHead = 0;
  private granted: number;

  constructor(readonly window: number) {
    // The peer starts at the protocol's default window, whatever ours is.
    this.granted = Math.min(window, DEFAULT_WINDOW);
  }

  /** Frame `seq` was processed in order; `messages` of them await the consumer. */
  processedFrame(seq: number, messages: number): void {
    this.processed = seq + 1;
    for (let i = 0; i < messages; i++) this.untaken.push(seq);
  }

  /** The consumer took the oldest waiting message. */
  took(): void {
    if (this.untakenHead < this.untaken.length) this.untakenHead++;
    if (this.untakenHead > 256 && this.untakenHead * 2 > this.untaken.length) {
      this.untaken.splice(0, this.untakenHead);
      this.untakenHead = 0;
    }
  }

  /** Frames below this are released. */
  get released(): number {
    return this.untakenHead < this.untaken.length
      ? (this.untaken[this.untakenHead] as number)
      : this.processed;
  }

  /** The last limit announced (or the initial window). */
  get announced(): number {
    return this.granted;
  }

  /**
   * The new limit to announce, or undefined while the last announcement is
   * still good for at least half a window.
   */
  nextGrant(): number | undefined {
    const limit = this.released + this.window;
    if (limit - this.granted < Math.max(1, this.window >> 1)) return undefined;
    this.granted = limit;
    return limit;
  }
}
