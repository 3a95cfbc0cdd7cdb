/**
 * Which calls of each caller session a server has started, so that a
 * request redelivered after its call finished is never run again, however
 * many calls ran since (docs/PROTOCOL.md section 8).
 *
 * A client numbers its calls upwards within a session (Open.session), so a
 * session's record is a window of call ids: every id below `low` counts as
 * seen, and a bitmap covers the next {@link WINDOW_IDS}. Its size is fixed
 * per session, whatever the call rate. Ids far behind the newest one are
 * taken as seen (a request that late is refused rather than risked), and a
 * session is forgotten after `ttlMs` without a new call.
 */

/** Call ids a session's bitmap covers above its low-water mark. */
export const WINDOW_IDS = 4096;

/** How far below the first id seen of a session its window starts, for Opens that overtook each other. */
const REORDER_SLACK = WINDOW_IDS >> 1;

interface SessionRecord {
  /** Every id below this was seen. */
  low: number;
  /** Bit i: id low + i was seen (a ring of WINDOW_IDS bits starting at `start`). */
  readonly bits: Uint32Array;
  start: number;
  lastUsed: number;
}

/** See the module comment. */
export class SeenCalls {
  private readonly sessions = new Map<string, SessionRecord>();
  private lastSweep: number;

  /**
   * @param ttlMs how long a session without calls is remembered
   * @param maxSessions most sessions remembered; past it the oldest go first
   * @param now clock, replaceable in tests
   */
  constructor(
    private readonly ttlMs: number,
    private readonly maxSessions: number,
    private readonly now: () => number = Date.now,
  ) {
    this.lastSweep = now();
  }

  /** Sessions remembered. */
  get size(): number {
    return this.sessions.size;
  }

  /**
   * Records that call `callId` of `session` (of caller `clientKey`) starts.
   * Returns false when it started before: a redelivered request.
   */
  admit(clientKey: string, session: number, callId: number): boolean {
    const key = `${clientKey}\n${session}`;
    const now = this.now();
    let record = this.sessions.get(key);
    if (record !== undefined && now - record.lastUsed > this.ttlMs) {
      this.sessions.delete(key);
      record = undefined;
    }
    if (record === undefined) {
      this.makeRoom(now);
      record = {
        low: callId - REORDER_SLACK,
        bits: new Uint32Array(WINDOW_IDS >> 5),
        start: 0,
        lastUsed: now,
      };
      this.sessions.set(key, record);
    }
    record.lastUsed = now;
    if (callId < record.low) return false;
    if (callId >= record.low + WINDOW_IDS) slide(record, callId - WINDOW_IDS + 1);
    const bit = (record.start + (callId - record.low)) % WINDOW_IDS;
    const word = bit >>> 5;
    const mask = 1 << (bit & 31);
    if (((record.bits[word] as number) & mask) !== 0) return false;
    record.bits[word] = (record.bits[word] as number) | mask;
    advance(record);
    return true;
  }

  private makeRoom(now: number): void {
    if (this.sessions.size < this.maxSessions && now - this.lastSweep < this.ttlMs) return;
    this.lastSweep = now;
    for (const [key, record] of this.sessions) {
      if (now - record.lastUsed > this.ttlMs) this.sessions.delete(key);
    }
    // Still full: forget the sessions made first.
    for (const key of this.sessions.keys()) {
      if (this.sessions.size < this.maxSessions) break;
      this.sessions.delete(key);
    }
  }
}

function isSet(record: SessionRecord, offset: number): boolean {
  const bit = (record.start + offset) % WINDOW_IDS;
  return ((record.bits[bit >>> 5] as number) & (1 << (bit & 31))) !== 0;
}

function clearBit(record: SessionRecord, offset: number): void {
  const bit = (record.start + offset) % WINDOW_IDS;
  record.bits[bit >>> 5] = (record.bits[bit >>> 5] as number) & ~(1 << (bit & 31));
}

/** Moves the low-water mark up to `low`; ids passed over count as seen. */
function slide(record: SessionRecord, low: number): void {
  const by = Math.min(low - record.low, WINDOW_IDS);
  for (let i = 0; i < by; i++) clearBit(record, i);
  record.start = (record.start + by) % WINDOW_IDS;
  record.low = low;
}

/** Moves the low-water mark past the ids seen in a row from it. */
function advance(record: SessionRecord): void {
  let n = 0;
  while (n < WINDOW_IDS && isSet(record, n)) n++;
  if (n > 0) slide(record, record.low + n);
}
