import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CallGate } from "./call-gate.js";

describe("CallGate", () => {
  it("lets calls in up to its limit, then in order as calls leave", async () => {
    const gate = new CallGate();
    gate.limit = 2;
    expect([gate.tryEnter(), gate.tryEnter(), gate.tryEnter()]).toEqual([true, true, false]);
    const order: number[] = [];
    const never = new AbortController().signal;
    const waits = [1, 2, 3].map((n) => gate.enter(never).then(() => order.push(n)));
    // A call that comes later waits behind those waiting, even with room.
    gate.leave();
    expect(gate.tryEnter()).toBe(false);
    await waits[0];
    expect(order).toEqual([1]);
    gate.leave();
    gate.leave();
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
    expect({ open: gate.open, waiting: gate.waiting }).toEqual({ open: 2, waiting: 0 });
  });

  it("without a limit lets every call in", () => {
    const gate = new CallGate();
    for (let i = 0; i < 10_000; i++) expect(gate.tryEnter()).toBe(true);
    expect(gate.open).toBe(10_000);
  });

  it("lets waiting calls in when the limit rises or goes", async () => {
    const gate = new CallGate();
    gate.limit = 1;
    gate.tryEnter();
    const never = new AbortController().signal;
    const waits = [gate.enter(never), gate.enter(never), gate.enter(never)];
    gate.limit = 3;
    await Promise.all(waits.slice(0, 2));
    expect(gate.waiting).toBe(1);
    gate.limit = 0;
    await waits[2];
    expect(gate.open).toBe(4);
  });

  it("a wait aborted leaves no entry and rejects with the signal's reason", async () => {
    const gate = new CallGate();
    gate.limit = 1;
    gate.tryEnter();
    const aborter = new AbortController();
    const waiting = gate.enter(aborter.signal);
    const behind = gate.enter(new AbortController().signal);
    aborter.abort(new Error("deadline"));
    await expect(waiting).rejects.toThrow("deadline");
    gate.leave();
    await behind;
    expect({ open: gate.open, waiting: gate.waiting }).toEqual({ open: 1, waiting: 0 });
    const aborted = AbortSignal.abort(new Error("already"));
    await expect(gate.enter(aborted)).rejects.toThrow("already");
  });

  it("never has more open than its limit, and every call not aborted gets in", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.constantFrom("enter", "leave", "abort"), { maxLength: 200 }),
        async (limit, steps) => {
          const gate = new CallGate();
          gate.limit = limit;
          let entered = 0;
          let maxOpen = 0;
          const aborters: AbortController[] = [];
          const pending: Promise<void>[] = [];
          for (const step of steps) {
            if (step === "enter") {
              const aborter = new AbortController();
              aborters.push(aborter);
              pending.push(
                gate.enter(aborter.signal).then(
                  () => {
                    entered++;
                  },
                  () => {},
                ),
              );
            } else if (step === "leave" && entered > 0) {
              entered--;
              gate.leave();
            } else if (step === "abort") {
              aborters.shift()?.abort(new Error("gone"));
            }
            await Promise.resolve();
            maxOpen = Math.max(maxOpen, gate.open);
            expect(gate.open).toBeLessThanOrEqual(limit);
          }
          // Everyone leaves: every wait not aborted gets in and leaves.
          while (gate.open > 0 || gate.waiting > 0) {
            gate.leave();
            await new Promise((resolve) => setImmediate(resolve));
          }
          await Promise.all(pending);
          expect(maxOpen).toBeLessThanOrEqual(limit);
        },
      ),
      { numRuns: 200 },
    );
  });
});
