/**
 * Puts the sequenced frames of one call direction back in order and drops
 * duplicates, holding at most `capacity` early arrivals.
 *
 * QoS 1 may deliver a frame twice (redelivery after a reconnect), and frames
 * may overtake each other when a session is resumed; the receiver processes
 * each sequence number exactly once, in order.
 */
export class ReorderWindow<T> {
  private next = 0;
  /** Frames that arrived ahead of a gap; made at the first one (most calls never have any). */
  private early: Map<number, T> | undefined;

  /** @param capacity the most frames held while waiting for a gap to fill. */
  constructor(private readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new Error(`ReorderWindow capacity must be a positive integer, got ${capacity}`);
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

  /**
   * Forgets everything from `seq` on, as if it had never arrived: the frame
   * at `seq` could not be taken, and it and what followed will come again.
   */
  rewind(seq: number): void {
    if (seq < this.next) this.next = seq;
    this.early?.clear();
  }

  /**
   * Offers the frame with sequence number `seq`. Returns the frames now
   * deliverable in order (possibly none), `"duplicate"` for a sequence number
   * seen before, or `"overflow"` when the frame lies beyond the window.
   */
  accept(seq: number, item: T): T[] | "duplicate" | "overflow" {
    const early = this.early;
    if (seq < this.next || early?.has(seq)) {
      return "duplicate";
    }
    if (seq !== this.next) {
      if (seq >= this.next + this.capacity || (early?.size ?? 0) >= this.capacity) {
        return "overflow";
      }
      this.early ??= new Map();
      this.early.set(seq, item);
      return [];
    }
    const ready = [item];
    this.next++;
    if (early !== undefined && early.size > 0) {
      for (let held = early.get(this.next); held !== undefined; held = early.get(this.next)) {
        early.delete(this.next);
        ready.push(held);
        this.next++;
      }
    }
    return ready;
  }
}
