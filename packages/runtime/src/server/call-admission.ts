/**
 * Which new calls of a server start now, which wait for a slot, and which
 * are refused (docs/PROTOCOL.md section 17.1). Pure bookkeeping: the server
 * asks {@link CallAdmission.offer} for every new call, tells
 * {@link CallAdmission.end} when a call stops holding its slot or its place
 * in the queue, and starts the calls `end` hands back.
 *
 * - A call starts at once when a slot is free for its caller: fewer than
 *   `maxRunning` calls run, fewer than `maxRunningPerCaller` of its caller,
 *   and, in the last `reservedSlots` slots, its caller runs fewer calls than
 *   its fair share (`maxRunning` divided among the callers with calls here
 *   plus one that may come, at least 1). So one caller flooding a server
 *   leaves the reserved slots to the others.
 * - Otherwise it waits in its caller's queue (first in, first out), within
 *   `maxWaiting` in all and `maxWaitingPerCaller` per caller, the last
 *   `reservedWaiting` places again only for callers below their fair share
 *   of the queue. A call that fits in neither is refused.
 * - When a slot frees, waiting calls start round-robin across callers, each
 *   the oldest of its caller, skipping callers that may not start now; a
 *   caller that started one goes to the back of the round. A caller with k
 *   waiting calls therefore starts one within (number of callers waiting)
 *   freed slots it may take, however long the others' queues are; and a
 *   caller with no call running may always take a free slot, so no waiting
 *   call is stuck while calls end.
 */

/** The bounds of a {@link CallAdmission}, all counts of calls. */
export interface CallAdmissionLimits {
  /** Calls running at once (the server's `maxConcurrentCalls`); at least 1. */
  readonly maxRunning: number;
  /** Calls of one caller running at once (`maxCallsPerClient`); at least 1. */
  readonly maxRunningPerCaller: number;
  /** Of `maxRunning`, how many only callers below their fair share may take (0 for none). */
  readonly reservedSlots: number;
  /** Calls waiting for a slot, in all (`maxQueuedCalls`); 0 refuses instead of waiting. */
  readonly maxWaiting: number;
  /** Calls of one caller waiting for a slot (`maxQueuedCallsPerClient`). */
  readonly maxWaitingPerCaller: number;
  /** Of `maxWaiting`, how many places only callers below their fair share of the queue may take. */
  readonly reservedWaiting: number;
}

/**
 * What to do with a new call: start it, let it wait (it is handed back by
 * {@link CallAdmission.end} when it may start), or refuse it; `reason` says
 * why it could neither start nor wait, naming the options.
 */
export type AdmissionDecision =
  | { readonly kind: "start" }
  | { readonly kind: "wait" }
  | { readonly kind: "refuse"; readonly reason: string };

interface Caller<T> {
  readonly key: string;
  running: number;
  /** Waiting calls, oldest first (a Set keeps insertion order and removes in O(1)). */
  readonly waiting: Set<T>;
}

interface Entry<T> {
  readonly caller: Caller<T>;
  running: boolean;
}

/** See the module comment. `T` is the server's call object. */
export class CallAdmission<T> {
  /** Callers with calls running or waiting. */
  private readonly callers = new Map<string, Caller<T>>();
  /** Callers with waiting calls, in round-robin order: the next to start is the first that may. */
  private readonly round = new Map<string, Caller<T>>();
  private readonly entries = new Map<T, Entry<T>>();
  private runningCount = 0;
  private waitingCount = 0;

  constructor(private readonly limits: CallAdmissionLimits) {}

  /** Calls running (holding a slot). */
  get running(): number {
    return this.runningCount;
  }

  /** Calls waiting for a slot. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Calls of `caller` running. */
  runningOf(caller: string): number {
    return this.callers.get(caller)?.running ?? 0;
  }

  /** Calls of `caller` waiting. */
  waitingOf(caller: string): number {
    return this.callers.get(caller)?.waiting.size ?? 0;
  }

  /**
   * Decides about a new call of `caller`. On "start" the call holds a slot,
   * on "wait" a place in the queue, until {@link end}; on "refuse" nothing.
   *
   * @throws Error when `call` was offered before and has not ended.
   */
  offer(caller: string, call: T): AdmissionDecision {
    if (this.entries.has(call)) throw new Error("this call was offered already");
    const known = this.callers.get(caller);
    // A caller with calls waiting already waits behind them (first in, first out).
    const cannotStart =
      this.startBlock(caller, known?.running ?? 0) ??
      (known !== undefined && known.waiting.size > 0
        ? `${known.waiting.size} earlier calls of this caller wait for a slot`
        : undefined);
    if (cannotStart === undefined) {
      const entry = this.enter(caller, call, known);
      entry.running = true;
      entry.caller.running++;
      this.runningCount++;
      return { kind: "start" };
    }
    const cannotWait = this.waitBlock(caller, known?.waiting.size ?? 0);
    if (cannotWait !== undefined) {
      return { kind: "refuse", reason: `${cannotStart}, and ${cannotWait}` };
    }
    const entry = this.enter(caller, call, known);
    entry.caller.waiting.add(call);
    this.waitingCount++;
    if (!this.round.has(caller)) this.round.set(caller, entry.caller);
    return { kind: "wait" };
  }

  /**
   * `call` no longer holds its slot (its handler is over) or its place in
   * the queue (it ended while waiting). Returns the waiting calls that start
   * now, oldest of each caller, in round-robin order; they hold slots from
   * now on. A call not offered, refused or ended before is ignored.
   */
  end(call: T): T[] {
    const entry = this.entries.get(call);
    if (entry === undefined) return [];
    this.entries.delete(call);
    const caller = entry.caller;
    if (entry.running) {
      caller.running--;
      this.runningCount--;
    } else {
      caller.waiting.delete(call);
      this.waitingCount--;
      if (caller.waiting.size === 0) this.round.delete(caller.key);
    }
    if (caller.running === 0 && caller.waiting.size === 0) this.callers.delete(caller.key);
    return this.startWaiting();
  }

  /**
   * Empties the queue (the server shuts down): returns the waiting calls,
   * which no longer wait. Calls running are not affected.
   */
  takeWaiting(): T[] {
    const taken: T[] = [];
    for (const caller of this.round.values()) {
      for (const call of caller.waiting) {
        this.entries.delete(call);
        taken.push(call);
      }
      caller.waiting.clear();
      if (caller.running === 0) this.callers.delete(caller.key);
    }
    this.round.clear();
    this.waitingCount = 0;
    return taken;
  }

  private enter(key: string, call: T, known: Caller<T> | undefined): Entry<T> {
    let caller = known;
    if (caller === undefined) {
      caller = { key, running: 0, waiting: new Set() };
      this.callers.set(key, caller);
    }
    const entry: Entry<T> = { caller, running: false };
    this.entries.set(call, entry);
    return entry;
  }

  /** Starts waiting calls while slots are free and some caller may take one. */
  private startWaiting(): T[] {
    const started: T[] = [];
    while (this.runningCount < this.limits.maxRunning && this.round.size > 0) {
      let next: Caller<T> | undefined;
      for (const caller of this.round.values()) {
        if (this.startBlock(caller.key, caller.running) === undefined) {
          next = caller;
          break;
        }
      }
      if (next === undefined) break;
      const call = next.waiting.values().next().value as T;
      next.waiting.delete(call);
      this.waitingCount--;
      next.running++;
      this.runningCount++;
      const entry = this.entries.get(call);
      if (entry !== undefined) entry.running = true;
      // To the back of the round, if it still waits.
      this.round.delete(next.key);
      if (next.waiting.size > 0) this.round.set(next.key, next);
      started.push(call);
    }
    return started;
  }

  /** Why a call of `caller` (running `mine`) may not take a slot now, if it may not. */
  private startBlock(caller: string, mine: number): string | undefined {
    const { maxRunning, maxRunningPerCaller, reservedSlots } = this.limits;
    if (this.runningCount >= maxRunning) {
      return `all ${maxRunning} call slots are taken (maxConcurrentCalls)`;
    }
    if (mine >= maxRunningPerCaller) {
      return `this caller runs ${mine} calls (maxCallsPerClient ${maxRunningPerCaller})`;
    }
    const share = this.fairShare(maxRunning, reservedSlots, this.runningCount, caller);
    if (share !== undefined && mine >= share) {
      return `the last ${reservedSlots} of ${maxRunning} slots (maxConcurrentCalls) are kept for callers below their fair share, and this caller runs ${mine} calls (its share ${share})`;
    }
    return undefined;
  }

  /** Why a call of `caller` (with `mine` waiting) may not wait now, if it may not. */
  private waitBlock(caller: string, mine: number): string | undefined {
    const { maxWaiting, maxWaitingPerCaller, reservedWaiting } = this.limits;
    if (this.waitingCount >= maxWaiting) {
      return `the ${maxWaiting} places for calls waiting for a slot are taken (maxQueuedCalls)`;
    }
    if (mine >= maxWaitingPerCaller) {
      return `${mine} calls of this caller wait already (maxQueuedCallsPerClient ${maxWaitingPerCaller})`;
    }
    const share = this.fairShare(maxWaiting, reservedWaiting, this.waitingCount, caller);
    if (share !== undefined && mine >= share) {
      return `the last ${reservedWaiting} of ${maxWaiting} places to wait (maxQueuedCalls) are kept for callers below their fair share, and ${mine} calls of this caller wait (its share ${share})`;
    }
    return undefined;
  }

  /**
   * In the reserved part of `capacity` (when `used` reaches it), a caller's
   * fair share: `capacity` divided among the callers with calls here, the
   * asking caller and one more that may come, and at least 1. Outside it,
   * undefined (no share applies).
   */
  private fairShare(
    capacity: number,
    reserved: number,
    used: number,
    caller: string,
  ): number | undefined {
    if (reserved <= 0 || used < capacity - reserved) return undefined;
    const callers = this.callers.size + (this.callers.has(caller) ? 0 : 1) + 1;
    return Math.max(1, Math.floor(capacity / callers));
  }
}

/**
 * How many calls one caller may have at a server whose other callers have
 * none, before the next is refused: the slots it may take and the places it
 * may wait in, by the rules of {@link CallAdmission} (with the defaults
 * 900 + 250). The server announces it (Presence `max_calls_per_caller`) so
 * that callers hold further calls themselves rather than have them refused.
 */
export function soleCallerCapacity(limits: CallAdmissionLimits): number {
  const takes = (capacity: number, reserved: number, perCaller: number): number => {
    if (capacity <= 0) return 0;
    // In the reserved part, the caller alone has half the capacity as its share.
    const share =
      reserved > 0
        ? Math.max(capacity - reserved, Math.max(1, Math.floor(capacity / 2)))
        : capacity;
    return Math.min(perCaller, capacity, share);
  };
  return (
    takes(limits.maxRunning, limits.reservedSlots, limits.maxRunningPerCaller) +
    takes(limits.maxWaiting, limits.reservedWaiting, limits.maxWaitingPerCaller)
  );
}
