/**
 * Remembers recently finished calls so that a request redelivered after its
 * call completed (QoS 1 after a reconnect) is recognised and not run again.
 * Bounded in both entries and age: the oldest entry goes first.
 */
/** End frames up to this size are kept; with 10,000 entries at most 10 MiB. */
const MAX_KEPT_END_BYTES = 1024;

/** Finished calls by key (client key and call id), bounded in count and age. */
export class CompletedCallRecord {
  private readonly entries = new Map<string, { expiry: number; end: Uint8Array | undefined }>();

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

  /**
   * Records that the call `key` finished, with its End frame when it is
   * small enough to keep (a caller that missed it can ask again).
   */
  add(key: string, end?: Uint8Array): void {
    this.entries.delete(key);
    this.entries.set(key, {
      expiry: this.now() + this.ttlMs,
      end: end !== undefined && end.byteLength <= MAX_KEPT_END_BYTES ? end : undefined,
    });
    this.evict();
  }

  /** Whether the call `key` finished recently. */
  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** The record of the call `key`, if it finished recently. */
  get(key: string): { readonly end: Uint8Array | undefined } | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) {
      return undefined;
    }
    if (entry.expiry <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  private evict(): void {
    const now = this.now();
    for (const [key, { expiry }] of this.entries) {
      if (this.entries.size <= this.maxEntries && expiry > now) {
        break;
      }
      this.entries.delete(key);
    }
  }
}
