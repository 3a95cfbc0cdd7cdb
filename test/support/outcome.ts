/**
 * How a call ended, and bounds on waits, for tests whose subject is that a
 * call ENDS: a call that hangs on today's code must fail the test within a
 * known time instead of running into the vitest timeout, and the failure
 * should say what happened ("still pending after 15000 ms") rather than
 * just "timed out".
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** How one call ended, measured from a start time. */
export interface Outcome<T> {
  /** The call completed with a value. */
  readonly ok: boolean;
  readonly value: T | undefined;
  /** The status code of a call that failed; undefined when it completed. */
  readonly code: Code | undefined;
  /** The error's raw message ("" when it completed). */
  readonly message: string;
  /** Milliseconds from `since` to the end. */
  readonly ms: number;
  readonly error: unknown;
}

/** Awaits `promise` and records how and when it ended. Never rejects. */
export async function outcome<T>(
  promise: Promise<T>,
  since: number = performance.now(),
): Promise<Outcome<T>> {
  try {
    const value = await promise;
    return {
      ok: true,
      value,
      code: undefined,
      message: "",
      ms: performance.now() - since,
      error: undefined,
    };
  } catch (error) {
    const e = ConnectError.from(error);
    return {
      ok: false,
      value: undefined,
      code: e.code,
      message: e.rawMessage,
      ms: performance.now() - since,
      error,
    };
  }
}

/** `OK after 12 ms` or `Unavailable "server x is offline" after 12 ms`, for messages and logs. */
export function describeOutcome(o: Outcome<unknown>): string {
  const after = `after ${Math.round(o.ms)} ms`;
  return o.ok ? `OK ${after}` : `${Code[o.code ?? Code.Unknown]} "${o.message}" ${after}`;
}

/** The name of a status code, e.g. `Unavailable`; `OK` for undefined. */
export function codeName(code: Code | undefined): string {
  return code === undefined ? "OK" : Code[code];
}

/** Thrown by {@link within} when the awaited thing did not happen in time. */
export class TooLate extends Error {
  override readonly name = "TooLate";
}

/**
 * Resolves as `promise` does, or rejects with {@link TooLate} when it has not
 * settled within `ms`. A bound on a wait for an event that must happen, not a
 * way to synchronise: the test fails when it fires.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TooLate(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * Aborts its signal after `ms`: bounds a call that has no deadline (the
 * subject of several tests) without giving it one. `fired` tells the test
 * that the call was still pending when the watchdog gave up on it.
 */
export class Watchdog {
  private readonly controller = new AbortController();
  private readonly timer: ReturnType<typeof setTimeout>;
  fired = false;

  constructor(
    readonly ms: number,
    readonly label = "the call",
  ) {
    this.timer = setTimeout(() => {
      this.fired = true;
      this.controller.abort(new Error(`watchdog: ${label} was still pending after ${ms} ms`));
    }, ms);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}

/**
 * Runs `fn` for every item with at most `concurrency` in progress, in order
 * of the items, and returns the results in that order.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i] as T, i);
      }
    }),
  );
  return results;
}
