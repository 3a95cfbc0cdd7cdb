/**
 * Remembers recently finished calls so that a request redelivered after its
 * call completed (QoS 1 after a reconnect) is recognised and not run again.
 * Bounded in both entries and age: the oldest entry goes first.
 */
export class CompletedCallRecord {
  private readonly entries = new Map<string, number>();

  /**
   * @param maxEntries most calls remembered at once
   * @param ttlMs how long a finished call is remembered
   * @param now clock, replaceable in tests
   */
  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Number of calls remembered. */
  get size(): number {
    return this.entries.size;
  }

  /** Records that the call `key` finished. */
  add(key: string): void {
    this.entries.delete(key);
    this.entries.set(key, this.now() + this.ttlMs);
    this.evict();
  }

  /** Whether the call `key` finished recently. */
  has(key: string): boolean {
    const expiry = this.entries.get(key);
    if (expiry === undefined) {
      return false;
    }
    if (expiry <= this.now()) {
      this.entries.delete(key);
      return false;
    }
    return true;
  }

  private evict(): void {
    const now = this.now();
    for (const [key, expiry] of this.entries) {
      if (this.entries.size <= this.maxEntries && expiry > now) {
        break;
      }
      this.entries.delete(key);
    }
  }
}
