/**
 * soleCallerCapacity against CallAdmission itself: one caller offers calls
 * until one is refused, for any limits.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CallAdmission, type CallAdmissionLimits, soleCallerCapacity } from "./call-admission.js";

function offeredUntilRefused(limits: CallAdmissionLimits): number {
  const admission = new CallAdmission<number>(limits);
  let call = 0;
  while (admission.offer("alone", call).kind !== "refuse") call++;
  return call;
}

const limitsArbitrary = fc
  .record({
    maxRunning: fc.integer({ min: 1, max: 400 }),
    maxRunningPerCaller: fc.integer({ min: 1, max: 400 }),
    reservedSlots: fc.integer({ min: 0, max: 400 }),
    maxWaiting: fc.integer({ min: 0, max: 400 }),
    maxWaitingPerCaller: fc.integer({ min: 0, max: 400 }),
    reservedWaiting: fc.integer({ min: 0, max: 400 }),
  })
  .map((l) => ({
    ...l,
    reservedSlots: Math.min(l.reservedSlots, l.maxRunning),
    reservedWaiting: Math.min(l.reservedWaiting, l.maxWaiting),
  }));

describe("soleCallerCapacity", () => {
  it("is what one caller alone gets before a refusal", () => {
    fc.assert(
      fc.property(limitsArbitrary, (limits) => {
        expect(soleCallerCapacity(limits)).toBe(offeredUntilRefused(limits));
      }),
      { numRuns: 500 },
    );
  });

  it("is 900 running + 250 waiting with the server's defaults", () => {
    const defaults: CallAdmissionLimits = {
      maxRunning: 1000,
      maxRunningPerCaller: 1000,
      reservedSlots: 100,
      maxWaiting: 1000,
      maxWaitingPerCaller: 250,
      reservedWaiting: 100,
    };
    expect(soleCallerCapacity(defaults)).toBe(1150);
    expect(offeredUntilRefused(defaults)).toBe(1150);
  });
});
