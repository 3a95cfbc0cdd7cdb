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
  private readonly early = new Map<number, T>();

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
    return this.early.size;
  }

  /**
   * Offers the frame with sequence number `seq`. Returns the frames now
   * deliverable in order (possibly none), `"duplicate"` for a sequence number
   * seen before, or `"overflow"` when the frame lies beyond the window.
   */
  accept(seq: number, item: T): T[] | "duplicate" | "overflow" {
    if (seq < this.next || this.early.has(seq)) {
      return "duplicate";
    }
    if (seq !== this.next) {
      if (seq >= this.next + this.capacity || this.early.size >= this.capacity) {
        return "overflow";
      }
      this.early.set(seq, item);
      return [];
    }
    const ready = [item];
    this.next++;
    for (
      let held = this.early.get(this.next);
      held !== undefined;
      held = this.early.get(this.next)
    ) {
      this.early.delete(this.next);
      ready.push(held);
      this.next++;
    }
    return ready;
  }
}
