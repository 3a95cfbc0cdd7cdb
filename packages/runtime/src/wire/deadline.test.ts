/**
 * A call's deadline from `timeoutMs` to the Open frame's uint32 `timeout_ms`
 * and to timers: no value overflows the field or wraps a timer (Node and
 * browsers run delays of 2³¹ ms and more after 1 ms; vitest's fake timers
 * do the same).
 */
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  DeadlineTimer,
  deadlineOf,
  MAX_OPEN_TIMEOUT_MS,
  openTimeoutMs,
  timerDelay,
  timerSafeTimeout,
} from "./deadline.js";
import { decodeFrame, encodeFrame } from "./frame-codec.js";
import { MAX_TIMER_MS } from "./limits.js";

const NOW = 1_700_000_000_000;
const DAY = 86_400_000;
const YEAR = 365 * DAY;
/** grpc-timeout's largest value, 99999999H, in ms. */
const GRPC_MAX = 99_999_999 * 3_600_000;

describe("deadlineOf", () => {
  it("undefined and +Infinity mean no deadline", () => {
    expect(deadlineOf(undefined, NOW)).toBeUndefined();
    expect(deadlineOf(Number.POSITIVE_INFINITY, NOW)).toBeUndefined();
  });

  it("0, negative, -Infinity and NaN mean a deadline already passed", () => {
    for (const ms of [0, -0, -1, -YEAR, Number.NEGATIVE_INFINITY, Number.NaN]) {
      expect(deadlineOf(ms, NOW)).toBe(NOW);
    }
  });

  it("a positive timeout, fractional or huge, is added to now", () => {
    expect(deadlineOf(0.001, NOW)).toBe(NOW + 0.001);
    expect(deadlineOf(1, NOW)).toBe(NOW + 1);
    expect(deadlineOf(YEAR, NOW)).toBe(NOW + YEAR);
    expect(deadlineOf(GRPC_MAX, NOW)).toBe(NOW + GRPC_MAX);
    expect(deadlineOf(Number.MAX_VALUE, NOW)).toBe(Number.MAX_VALUE);
  });
});

describe("openTimeoutMs", () => {
  it("is 0 without a deadline", () => {
    expect(openTimeoutMs(undefined, NOW)).toBe(0);
  });

  it("is the remaining time, rounded up, at least 1", () => {
    expect(openTimeoutMs(NOW + 5000, NOW)).toBe(5000);
    expect(openTimeoutMs(NOW + 0.001, NOW)).toBe(1);
    expect(openTimeoutMs(NOW + 2500.2, NOW)).toBe(2501);
    expect(openTimeoutMs(NOW, NOW)).toBe(1);
    expect(openTimeoutMs(NOW - 10, NOW)).toBe(1);
  });

  it("carries up to 2^31-1 ms and sends a longer remaining time as 0 (none)", () => {
    expect(MAX_OPEN_TIMEOUT_MS).toBe(2 ** 31 - 1);
    expect(openTimeoutMs(NOW + 2 ** 31 - 1, NOW)).toBe(2 ** 31 - 1);
    expect(openTimeoutMs(NOW + 2 ** 31 - 1.5, NOW)).toBe(2 ** 31 - 1);
    expect(openTimeoutMs(NOW + 2 ** 31 - 0.5, NOW)).toBe(0);
    expect(openTimeoutMs(NOW + 2 ** 31, NOW)).toBe(0);
    expect(openTimeoutMs(NOW + 2 ** 32, NOW)).toBe(0);
    expect(openTimeoutMs(NOW + YEAR, NOW)).toBe(0);
    expect(openTimeoutMs(NOW + GRPC_MAX, NOW)).toBe(0);
    expect(openTimeoutMs(Number.MAX_VALUE, NOW)).toBe(0);
  });

  it("always fits the Open frame's uint32 and round-trips through the codec", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.constant(undefined),
          fc.double({ noNaN: true }),
          fc.integer({ min: -10, max: 2 ** 33 }),
          fc.constantFrom(0, 2 ** 31, 2 ** 32, YEAR, GRPC_MAX, Number.POSITIVE_INFINITY),
        ),
        (timeoutMs) => {
          const deadline = deadlineOf(timeoutMs, NOW);
          const field = openTimeoutMs(deadline, NOW);
          expect(Number.isInteger(field) && field >= 0 && field <= MAX_OPEN_TIMEOUT_MS).toBe(true);
          // The server never ends the call before the client's deadline.
          if (field > 0) expect(NOW + field).toBeGreaterThanOrEqual(deadline ?? 0);
          const bytes = encodeFrame({
            callId: 1,
            kind: { case: "open", value: { timeoutMs: field } },
          });
          const back = decodeFrame(bytes);
          expect(back.kind.case === "open" && back.kind.value.timeoutMs).toBe(field);
        },
      ),
    );
  });
});

describe("timerSafeTimeout", () => {
  it("passes what one plain timer enforces and leaves out what would wrap", () => {
    for (const ms of [-1, 0, 1, 1.5, 5000, MAX_TIMER_MS, Number.NEGATIVE_INFINITY]) {
      expect(timerSafeTimeout(ms)).toBe(ms);
    }
    for (const ms of [undefined, MAX_TIMER_MS + 1, 2 ** 32, YEAR, Number.POSITIVE_INFINITY, NaN]) {
      expect(timerSafeTimeout(ms)).toBeUndefined();
    }
  });
});

describe("timerDelay", () => {
  it("is whole ms, rounded up, never past MAX_TIMER_MS, 0 for nothing left", () => {
    expect(timerDelay(0)).toBe(0);
    expect(timerDelay(-5)).toBe(0);
    expect(timerDelay(Number.NaN)).toBe(0);
    expect(timerDelay(0.2)).toBe(1);
    expect(timerDelay(1000)).toBe(1000);
    expect(timerDelay(MAX_TIMER_MS)).toBe(MAX_TIMER_MS);
    expect(timerDelay(MAX_TIMER_MS + 0.5)).toBe(MAX_TIMER_MS);
    expect(timerDelay(YEAR)).toBe(MAX_TIMER_MS);
    expect(timerDelay(Number.POSITIVE_INFINITY)).toBe(MAX_TIMER_MS);
  });
});

describe("DeadlineTimer", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: NOW });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("(a plain timer of 2^32 ms fires after 1 ms, which is what it avoids)", () => {
    const fired = vi.fn();
    setTimeout(fired, 2 ** 32);
    vi.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  for (const [label, ms] of [
    ["1 s", 1000],
    ["2^31-1 ms", 2 ** 31 - 1],
    ["2^31 ms", 2 ** 31],
    ["2^32 ms", 2 ** 32],
    ["1 year", YEAR],
    ["a fraction past 2^31", 2 ** 31 + 0.25],
  ] as const) {
    it(`fires once at a deadline ${label} away, not before`, () => {
      const fired = vi.fn();
      new DeadlineTimer(NOW + ms, fired);
      vi.advanceTimersByTime(Math.ceil(ms) - 1);
      expect(fired).not.toHaveBeenCalled();
      vi.advanceTimersByTime(1);
      expect(fired).toHaveBeenCalledTimes(1);
      vi.advanceTimersByTime(YEAR);
      expect(fired).toHaveBeenCalledTimes(1);
      expect(vi.getTimerCount()).toBe(0);
    });
  }

  it("fires at once (next turn) for a deadline already passed", () => {
    const fired = vi.fn();
    new DeadlineTimer(NOW - 5, fired);
    vi.advanceTimersByTime(0);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  it("clear stops it, also after it re-armed", () => {
    const fired = vi.fn();
    const timer = new DeadlineTimer(NOW + YEAR, fired);
    vi.advanceTimersByTime(3 * MAX_TIMER_MS);
    timer.clear();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(YEAR);
    expect(fired).not.toHaveBeenCalled();
  });
});
