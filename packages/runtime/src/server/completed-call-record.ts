/**
 * Remembers recently finished calls so that a request redelivered after its
 * call completed (QoS 1 after a reconnect) is recognised and not run again.
 * Bounded in both entries and age: the oldest entry goes first.
 */
/** End frames up to this size are kept; with 10,000 entries at most 10 MiB. */
const MAX_KEPT_END_BYTES = 1024;

interface Entry {
  readonly key: string;
  readonly expiry: number;
  readonly end: Uint8Array | undefined;
  /** Replaced or removed from the map; the queue skips it. */
  dead: boolean;
}

/**
 * Finished calls by key (client key and call id), bounded in count and age.
 * Entries are looked up in a Map and aged out through an array queue: a Map
 * used as a queue (delete the first key, over and over) makes V8 walk every
 * deleted slot on each iteration, microseconds per call at 10,000 entries.
 */
export class CompletedCallRecord {
  private readonly entries = new Map<string, Entry>();
  /** Entries in insertion (and so expiry) order; replaced ones are skipped. */
  private queue: Entry[] = [];
  private head = 0;

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
    const entry: Entry = {
      key,
      expiry: this.now() + this.ttlMs,
      // A copy: the frame may be a view into a pooled slab that it would pin.
      end:
        end !== undefined && end.byteLength <= MAX_KEPT_END_BYTES ? new Uint8Array(end) : undefined,
      dead: false,
    };
    const replaced = this.entries.get(key);
    if (replaced !== undefined) replaced.dead = true;
    this.entries.set(key, entry);
    this.queue.push(entry);
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
      entry.dead = true;
      return undefined;
    }
    return entry;
  }

  private evict(): void {
    const now = this.now();
    const queue = this.queue;
    while (this.head < queue.length) {
      const entry = queue[this.head] as Entry;
      if (!entry.dead) {
        if (this.entries.size <= this.maxEntries && entry.expiry > now) break;
        this.entries.delete(entry.key);
        entry.dead = true;
      }
      this.head++;
    }
    // Replaced entries wait in the queue until they reach its head; compact
    // when the queue holds twice what the map does, which bounds it.
    if (this.head > 1024 && this.head * 2 > queue.length) {
      this.queue = queue.slice(this.head);
      this.head = 0;
    } else if (queue.length - this.head > 2 * this.entries.size + 1024) {
      this.queue = queue.slice(this.head).filter((e) => !e.dead);
      this.head = 0;
    }
  }
}
