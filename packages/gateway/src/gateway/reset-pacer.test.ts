import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type PacerClock, ResetPacer, type ResettableStream } from "./reset-pacer.js";

/** A clock the test moves, with its timers. */
class FakeClock implements PacerClock {
  time = 0;
  private timers: Array<{ at: number; run: () => void }> = [];
  now(): number {
    return this.time;
  }
  setTimeout(run: () => void, ms: number): undefined {
    this.timers.push({ at: this.time + ms, run });
  }
  advance(ms: number): void {
    const until = this.time + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (next === undefined || next.at > until) break;
      this.timers.shift();
      this.time = next.at;
      next.run();
    }
    this.time = until;
  }
}

/** A stream that records when it was reset, and can end by itself. */
class FakeStream implements ResettableStream {
  closed = false;
  destroyed = false;
  resetAt: number | undefined;
  private onClose: Array<() => void> = [];
  constructor(private readonly clock: FakeClock) {}
  close(): void {
    this.resetAt = this.clock.time;
    this.end();
  }
  end(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.onClose.splice(0)) f();
  }
  once(_event: "close", listener: () => void): void {
    this.onClose.push(listener);
  }
}

describe("ResetPacer", () => {
  it("resets a burst at once, the rest in order as the budget refills", () => {
    const clock = new FakeClock();
    const pacer = new ResetPacer(8, { burst: 3, perSecond: 10 }, clock);
    const streams = Array.from({ length: 6 }, () => new FakeStream(clock));
    for (const s of streams) pacer.reset(s);
    expect(streams.map((s) => s.resetAt)).toEqual([0, 0, 0, undefined, undefined, undefined]);
    expect(pacer.queued).toBe(3);
    clock.advance(1_000);
    expect(streams.map((s) => s.resetAt)).toEqual([0, 0, 0, 100, 200, 300]);
    expect(pacer.queued).toBe(0);
  });

  it("a waiting stream that ends by itself needs no reset and gives its turn on", () => {
    const clock = new FakeClock();
    const pacer = new ResetPacer(8, { burst: 1, perSecond: 10 }, clock);
    const [a, b, c] = [new FakeStream(clock), new FakeStream(clock), new FakeStream(clock)];
    for (const s of [a, b, c]) pacer.reset(s);
    b.end();
    expect(pacer.queued).toBe(1);
    clock.advance(100);
    expect([a.resetAt, b.resetAt, c.resetAt]).toEqual([0, undefined, 100]);
  });

  it("never resets more than the budget allows in any window, and resets every stream still open", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(
          fc.tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 30 }), fc.boolean()),
          {
            maxLength: 30,
          },
        ),
        (burst, perSecond, steps) => {
          const clock = new FakeClock();
          const pacer = new ResetPacer(8, { burst, perSecond }, clock);
          const all: FakeStream[] = [];
          for (const [wait, count, endOne] of steps) {
            clock.advance(wait);
            for (let i = 0; i < count; i++) {
              const s = new FakeStream(clock);
              all.push(s);
              pacer.reset(s);
            }
            if (endOne) all.find((s) => !s.closed)?.end();
          }
          clock.advance(10_000_000);
          const resets = all
            .flatMap((s) => (s.resetAt === undefined ? [] : [s.resetAt]))
            .sort((a, b) => a - b);
          // A token bucket: in any window of t ms, at most burst + t * perSecond / 1000.
          let worst = Number.NEGATIVE_INFINITY;
          for (let from = 0; from < resets.length; from++) {
            for (let to = from; to < resets.length; to++) {
              const span = (resets[to] as number) - (resets[from] as number);
              worst = Math.max(worst, to - from + 1 - (burst + (span * perSecond) / 1000));
            }
          }
          expect(worst).toBeLessThanOrEqual(1e-9);
          expect(all.every((s) => s.closed)).toBe(true);
          expect(pacer.queued).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });
});
