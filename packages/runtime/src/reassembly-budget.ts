/**
 * The bytes that partly received (chunked) messages may hold across the
 * calls of one server or transport, with a share per peer (docs/PROTOCOL.md
 * section 9). A receiver that finds no room for a message does not fail the
 * call: it drops the chunk and waits its turn here; when room is set aside
 * for it, it asks the sender to send the message again. So a memory bound
 * turns into backpressure, and one peer cannot take every byte.
 */

/** A place in the budget's queue; cancel it when the call ends first. */
export interface BudgetWait {
  cancel(): void;
}

interface Waiter {
  readonly bytes: number;
  readonly owner: string | undefined;
  readonly granted: () => void;
  cancelled: boolean;
}

/** See the module comment. */
export class ReassemblyBudget {
  private used = 0;
  private readonly byOwner = new Map<string, number>();
  private waiters: Waiter[] = [];

  /**
   * @param limit bytes all reassemblies may hold together
   * @param ownerShare bytes the reassemblies of one owner (a caller's client
   *   key on a server) may hold; at least the largest message, or that
   *   message could never be admitted
   */
  constructor(
    readonly limit: number,
    readonly ownerShare: number = limit,
  ) {}

  /** Bytes held now. */
  get inUse(): number {
    return this.used;
  }

  /** Bytes held for `owner`. */
  heldBy(owner: string): number {
    return this.byOwner.get(owner) ?? 0;
  }

  /**
   * Takes `bytes` for `owner` if they fit in the budget and the owner's
   * share, and nobody queued earlier is waiting for the same room.
   */
  reserve(bytes: number, owner?: string): boolean {
    if (this.waiters.length > 0) {
      this.wake();
      if (this.blockedGlobally()) return false;
    }
    if (!this.fits(bytes, owner)) return false;
    this.take(bytes, owner);
    return true;
  }

  /** Gives back `bytes` held for `owner`, and lets waiters in. */
  release(bytes: number, owner?: string): void {
    if (bytes <= 0) return;
    this.used = Math.max(0, this.used - bytes);
    if (owner !== undefined) {
      const left = (this.byOwner.get(owner) ?? 0) - bytes;
      if (left > 0) this.byOwner.set(owner, left);
      else this.byOwner.delete(owner);
    }
    if (this.waiters.length > 0) this.wake();
  }

  /**
   * Queues for `bytes`: once they fit, they are reserved for `owner` and
   * `granted` is called (in a microtask). Waiters are served in order,
   * except that one held back only by its owner's share does not block
   * other owners.
   */
  wait(bytes: number, owner: string | undefined, granted: () => void): BudgetWait {
    const waiter: Waiter = { bytes, owner, granted, cancelled: false };
    this.waiters.push(waiter);
    this.wake();
    return {
      cancel: () => {
        waiter.cancelled = true;
      },
    };
  }

  private fits(bytes: number, owner: string | undefined): boolean {
    if (this.used + bytes > this.limit) return false;
    return owner === undefined || (this.byOwner.get(owner) ?? 0) + bytes <= this.ownerShare;
  }

  private take(bytes: number, owner: string | undefined): void {
    this.used += bytes;
    if (owner !== undefined) this.byOwner.set(owner, (this.byOwner.get(owner) ?? 0) + bytes);
  }

  /** Whether a live waiter is held back by the budget itself (not only its share). */
  private blockedGlobally(): boolean {
    for (const w of this.waiters) {
      if (!w.cancelled && this.used + w.bytes > this.limit) return true;
    }
    return false;
  }

  private wake(): void {
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.cancelled) continue;
      // Strict order against the budget: a waiter that does not fit stops
      // later ones from jumping ahead of it, unless only its share holds it.
      if (this.used + w.bytes > this.limit) {
        still.push(w);
        continue;
      }
      if (!this.fits(w.bytes, w.owner) || this.blockedBy(still)) {
        still.push(w);
        continue;
      }
      this.take(w.bytes, w.owner);
      queueMicrotask(w.granted);
    }
    this.waiters = still;
  }

  private blockedBy(earlier: readonly Waiter[]): boolean {
    for (const w of earlier) if (this.used + w.bytes > this.limit) return true;
    return false;
  }
}
