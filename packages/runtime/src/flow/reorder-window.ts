/**
 * Puts the sequenced frames of one call direction back in order and drops
 * duplicates, holding at most `capacity` early arrivals and at most
 * `maxBytes` of them.
 *
 * QoS 1 may deliver a frame twice (redelivery after a reconnect), and frames
 * may overtake each other when a session is resumed; the receiver processes
 * each sequence number exactly once, in order.
 */
export class ReorderWindow<T> {
  private next = 0;
  /** Frames that arrived ahead of a gap, with their sizes; made at the first one (most calls never have any). */
  private early: Map<number, { readonly item: T; readonly bytes: number }> | undefined;
  private earlyBytes = 0;

  /**
   * @param capacity the most frames held while waiting for a gap to fill
   * @param maxBytes the most bytes (as the caller counts them) those frames may hold
   */
  constructor(
    private readonly capacity: number,
    private readonly maxBytes: number = Number.POSITIVE_INFINITY,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new Error(`ReorderWindow capacity must be a positive integer, got ${capacity}`);
    }
    if (!(maxBytes >= 0)) {
      throw new Error(`ReorderWindow maxBytes must be at least 0, got ${maxBytes}`);
    }
  }

  /** The sequence number the window waits for. */
  get expected(): number {
    return this.next;
  }

  /** How many early frames are held. */
  get buffered(): number {
    return this.early?.size ?? 0;
  }

  /** Bytes the early frames held count for. */
  get bufferedBytes(): number {
    return this.earlyBytes;
  }

  /**
   * Forgets everything from `seq` on, as if it had never arrived: the frame
   * at `seq` could not be taken, and it and what followed will come again.
   */
  rewind(seq: number): void {
    if (seq < this.next) this.next = seq;
    this.early?.clear();
    this.earlyBytes = 0;
  }

  /**
   * Whether a frame with sequence number `seq` would be held as an early
   * arrival (rather than delivered, or refused as a duplicate or beyond the
   * window) if offered now; its size is not considered.
   */
  wouldHold(seq: number): boolean {
    return (
      seq > this.next &&
      seq < this.next + this.capacity &&
      !(this.early?.has(seq) ?? false) &&
      (this.early?.size ?? 0) < this.capacity
    );
  }

  /**
   * Offers the frame with sequence number `seq`, which counts for `bytes`
   * while held. Returns the frames now deliverable in order (possibly
   * none), `"duplicate"` for a sequence number seen before, `"overflow"`
   * when the frame lies beyond the window, or `"full"` when it lies within
   * the window but would take the early frames past `maxBytes`: it was not
   * kept, and must come again.
   */
  accept(seq: number, item: T, bytes = 0): T[] | "duplicate" | "overflow" | "full" {
    const early = this.early;
    if (seq < this.next || early?.has(seq)) {
      return "duplicate";
    }
    if (seq !== this.next) {
      if (seq >= this.next + this.capacity || (early?.size ?? 0) >= this.capacity) {
        return "overflow";
      }
      if (this.earlyBytes + bytes > this.maxBytes) return "full";
      this.early ??= new Map();
      this.early.set(seq, { item, bytes });
      this.earlyBytes += bytes;
      return [];
    }
    const ready = [item];
    this.next++;
    if (early !== undefined && early.size > 0) {
      for (let held = early.get(this.next); held !== undefined; held = early.get(this.next)) {
        early.delete(this.next);
        this.earlyBytes -= held.bytes;
        ready.push(held.item);
        this.next++;
      }
    }
    return ready;
  }
}
