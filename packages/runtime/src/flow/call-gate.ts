/**
 * How many calls one caller keeps open to one server, as the server
 * announces it (Presence `max_calls_per_caller`, docs/PROTOCOL.md section
 * 17.1): calls beyond it wait here, in the caller, first in first out,
 * until one of the open calls finishes — as an HTTP/2 client holds streams
 * beyond the peer's SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §5.1.2)
 * rather than have them refused. Pure bookkeeping: the transport enters a
 * call before its Open goes out and leaves when the call is over.
 */

/** A call waiting for its turn. */
interface Waiter {
  readonly admit: () => void;
}

/** See the module comment: the calls open to one server, and those waiting for a turn. */
export class CallGate {
  private limitValue = 0;
  private openCount = 0;
  /** Waiting calls, oldest first (a Set keeps insertion order and removes in O(1)); made at the first. */
  private waiters: Set<Waiter> | undefined;

  /** Calls open (entered and not left). */
  get open(): number {
    return this.openCount;
  }

  /** Calls waiting for their turn. */
  get waiting(): number {
    return this.waiters?.size ?? 0;
  }

  /** Calls that may be open at once; 0: no limit (a server that announces none). */
  get limit(): number {
    return this.limitValue;
  }

  /** Sets {@link limit}; a higher one lets waiting calls in at once. */
  set limit(calls: number) {
    this.limitValue = Number.isSafeInteger(calls) && calls > 0 ? calls : 0;
    this.admitWaiting();
  }

  /** Enters a call when it may open now and none waits before it; false otherwise. */
  tryEnter(): boolean {
    if (this.waiters !== undefined || !this.hasRoom()) return false;
    this.openCount++;
    return true;
  }

  /**
   * Enters a call: at once when {@link tryEnter} would, else once the calls
   * before it entered and one left. Rejects with `signal`'s reason when it
   * aborts first (then nothing was entered).
   */
  enter(signal: AbortSignal): Promise<void> {
    if (this.tryEnter()) return Promise.resolve();
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.drop(waiter);
        reject(signal.reason);
      };
      const waiter: Waiter = {
        admit: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.waiters ??= new Set();
      this.waiters.add(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** A call entered before is over: the next waiting one may enter. */
  leave(): void {
    if (this.openCount > 0) this.openCount--;
    this.admitWaiting();
  }

  private hasRoom(): boolean {
    return this.limitValue === 0 || this.openCount < this.limitValue;
  }

  private drop(waiter: Waiter): void {
    const waiters = this.waiters;
    if (waiters === undefined) return;
    waiters.delete(waiter);
    if (waiters.size === 0) this.waiters = undefined;
  }

  private admitWaiting(): void {
    const waiters = this.waiters;
    if (waiters === undefined) return;
    for (const waiter of waiters) {
      if (!this.hasRoom()) break;
      waiters.delete(waiter);
      this.openCount++;
      waiter.admit();
    }
    if (waiters.size === 0) this.waiters = undefined;
  }
}
