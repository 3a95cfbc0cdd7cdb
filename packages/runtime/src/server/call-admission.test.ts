import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AdmissionDecision,
  CallAdmission,
  type CallAdmissionLimits,
} from "./call-admission.js";

const limits = (overrides: Partial<CallAdmissionLimits>): CallAdmissionLimits => ({
  maxRunning: 10,
  maxRunningPerCaller: 10,
  reservedSlots: 0,
  maxWaiting: 10,
  maxWaitingPerCaller: 10,
  reservedWaiting: 0,
  ...overrides,
});

const kinds = (decisions: AdmissionDecision[]) => decisions.map((d) => d.kind);

describe("CallAdmission", () => {
  it("starts calls while slots are free, then queues them, then refuses naming the option", () => {
    const admission = new CallAdmission<number>(limits({ maxRunning: 2, maxWaiting: 1 }));
    expect(kinds([1, 2, 3].map((id) => admission.offer("a", id)))).toEqual([
      "start",
      "start",
      "wait",
    ]);
    const refused = admission.offer("a", 4);
    expect(refused.kind).toBe("refuse");
    expect(refused.kind === "refuse" && refused.reason).toMatch(/maxConcurrentCalls/);
    expect(refused.kind === "refuse" && refused.reason).toMatch(/maxQueuedCalls/);
    expect(admission.end(1)).toEqual([3]);
    expect(admission.running).toBe(2);
    expect(admission.waiting).toBe(0);
  });

  it("bounds each caller's running and waiting calls", () => {
    const admission = new CallAdmission<string>(
      limits({ maxRunningPerCaller: 2, maxWaitingPerCaller: 1 }),
    );
    expect(kinds(["a1", "a2", "a3"].map((id) => admission.offer("a", id)))).toEqual([
      "start",
      "start",
      "wait",
    ]);
    const refused = admission.offer("a", "a4");
    expect(refused.kind === "refuse" && refused.reason).toMatch(
      /maxCallsPerClient 2.*maxQueuedCallsPerClient 1/,
    );
    // Another caller is not held back by a's limits.
    expect(admission.offer("b", "b1").kind).toBe("start");
    expect(admission.end("a1")).toEqual(["a3"]);
    expect(admission.runningOf("a")).toBe(2);
  });

  it("keeps the reserved slots for callers below their fair share", () => {
    // 10 slots, the last 2 reserved: a lone caller's share is 10 / (1 + 1) = 5.
    const admission = new CallAdmission<string>(limits({ reservedSlots: 2, maxWaiting: 100 }));
    const flood = Array.from({ length: 12 }, (_, i) => admission.offer("a", `a${i}`).kind);
    expect(flood.filter((k) => k === "start")).toHaveLength(8);
    expect(flood.filter((k) => k === "wait")).toHaveLength(4);
    // A newcomer starts in the reserve (its share: 10 / (a, b and one more) = 3).
    expect(admission.offer("b", "b0").kind).toBe("start");
    expect(admission.offer("b", "b1").kind).toBe("start");
    // Full now: b waits, but ahead of a's backlog once a slot frees, since a is over its share.
    expect(admission.offer("b", "b2").kind).toBe("wait");
    expect(admission.end("a0")).toEqual(["b2"]);
  });

  it("a caller with no call running may always take a free slot, so one slot serves one caller after another", () => {
    const admission = new CallAdmission<string>(limits({ maxRunning: 1, reservedSlots: 1 }));
    expect(admission.offer("a", "a1").kind).toBe("start");
    expect(admission.offer("a", "a2").kind).toBe("wait");
    expect(admission.offer("b", "b1").kind).toBe("wait");
    expect(admission.end("a1")).toEqual(["a2"]);
    expect(admission.end("a2")).toEqual(["b1"]);
    expect(admission.end("b1")).toEqual([]);
    expect(admission.running).toBe(0);
  });

  it("starts waiting calls round-robin across callers, oldest first per caller", () => {
    const admission = new CallAdmission<string>(limits({ maxRunning: 1, maxWaiting: 100 }));
    admission.offer("a", "running");
    for (let i = 0; i < 5; i++) admission.offer("a", `a${i}`);
    admission.offer("b", "b0");
    admission.offer("b", "b1");
    admission.offer("c", "c0");
    const order: string[] = [];
    let next = admission.end("running");
    while (next.length > 0) {
      order.push(...next);
      next = admission.end(next[0] as string);
    }
    expect(order).toEqual(["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]);
  });

  it("gives a freed slot to the caller that waited first, then to the next in the round", () => {
    const admission = new CallAdmission<string>(limits({ maxRunning: 1, maxRunningPerCaller: 1 }));
    admission.offer("a", "a0");
    admission.offer("a", "a1");
    admission.offer("b", "b0");
    expect(admission.end("a0")).toEqual(["a1"]);
    expect(admission.offer("a", "a2").kind).toBe("wait");
    expect(admission.end("a1")).toEqual(["b0"]);
    expect(admission.end("b0")).toEqual(["a2"]);
  });

  it("forgets a call that ends while waiting, and ignores unknown calls", () => {
    const admission = new CallAdmission<string>(limits({ maxRunning: 1 }));
    admission.offer("a", "a0");
    admission.offer("a", "a1");
    admission.offer("a", "a2");
    expect(admission.end("a1")).toEqual([]);
    expect(admission.waiting).toBe(1);
    expect(admission.end("nope")).toEqual([]);
    expect(admission.end("a0")).toEqual(["a2"]);
    expect(admission.end("a0")).toEqual([]);
    expect(admission.end("a2")).toEqual([]);
    expect([admission.running, admission.waiting, admission.runningOf("a")]).toEqual([0, 0, 0]);
  });

  it("keeps the last places of the queue for callers below their share of it", () => {
    const admission = new CallAdmission<string>(
      limits({ maxRunning: 1, maxWaiting: 10, reservedWaiting: 2 }),
    );
    admission.offer("x", "x-running");
    const flood = Array.from({ length: 10 }, (_, i) => admission.offer("a", `a${i}`));
    expect(kinds(flood).filter((k) => k === "wait")).toHaveLength(8);
    const refused = flood[9];
    expect(refused?.kind === "refuse" && refused.reason).toMatch(
      /fair share.*maxQueuedCalls|maxQueuedCalls.*fair share/,
    );
    expect(admission.offer("b", "b0").kind).toBe("wait");
  });

  it("takeWaiting empties the queue and leaves running calls", () => {
    const admission = new CallAdmission<string>(limits({ maxRunning: 1 }));
    admission.offer("a", "a0");
    admission.offer("a", "a1");
    admission.offer("b", "b0");
    expect(admission.takeWaiting().sort()).toEqual(["a1", "b0"]);
    expect([admission.running, admission.waiting]).toEqual([1, 0]);
    expect(admission.end("a1")).toEqual([]);
    expect(admission.end("a0")).toEqual([]);
    expect(admission.running).toBe(0);
  });

  it("refuses to take the same call twice", () => {
    const admission = new CallAdmission<string>(limits({}));
    admission.offer("a", "a0");
    expect(() => admission.offer("a", "a0")).toThrow(/offered already/);
  });
});

type Op =
  | { readonly op: "offer"; readonly caller: number }
  | { readonly op: "endRunning"; readonly pick: number }
  | { readonly op: "endWaiting"; readonly pick: number };

const opArbitrary = (callers: number): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.nat(callers - 1).map((caller) => ({ op: "offer" as const, caller })),
    },
    { weight: 3, arbitrary: fc.nat().map((pick) => ({ op: "endRunning" as const, pick })) },
    { weight: 1, arbitrary: fc.nat().map((pick) => ({ op: "endWaiting" as const, pick })) },
  );

const limitsArbitrary: fc.Arbitrary<CallAdmissionLimits> = fc
  .record({
    maxRunning: fc.integer({ min: 1, max: 8 }),
    maxRunningPerCaller: fc.integer({ min: 1, max: 8 }),
    reservedSlots: fc.integer({ min: 0, max: 3 }),
    maxWaiting: fc.integer({ min: 0, max: 12 }),
    maxWaitingPerCaller: fc.integer({ min: 0, max: 12 }),
    reservedWaiting: fc.integer({ min: 0, max: 3 }),
  })
  .map((l) => ({
    ...l,
    reservedSlots: Math.min(l.reservedSlots, l.maxRunning),
    reservedWaiting: Math.min(l.reservedWaiting, l.maxWaiting),
  }));

/** A model of the calls the admission holds, checked after every step. */
class Model {
  readonly running: Array<{ id: number; caller: number }> = [];
  readonly waiting: Array<{ id: number; caller: number }> = [];
  /** Per caller, the ids of its calls in the order they started. */
  readonly startOrder = new Map<number, number[]>();
  /** Per caller, the ids of its calls in the order they were offered. */
  readonly offerOrder = new Map<number, number[]>();
  /** Per waiting caller: other callers' starts since it started one or began waiting. */
  readonly passedOver = new Map<number, number>();
  private nextId = 0;

  constructor(
    readonly admission: CallAdmission<number>,
    readonly limits: CallAdmissionLimits,
  ) {}

  apply(op: Op): void {
    if (op.op === "offer") {
      const id = this.nextId++;
      const decision = this.admission.offer(String(op.caller), id);
      if (decision.kind !== "refuse") push(this.offerOrder, op.caller, id);
      if (decision.kind === "start") this.started({ id, caller: op.caller });
      if (decision.kind === "wait") {
        if (!this.waiting.some((w) => w.caller === op.caller)) this.passedOver.set(op.caller, 0);
        this.waiting.push({ id, caller: op.caller });
      }
      return;
    }
    const from = op.op === "endRunning" ? this.running : this.waiting;
    if (from.length === 0) return;
    const [ended] = from.splice(op.pick % from.length, 1);
    if (ended === undefined) return;
    if (op.op === "endWaiting") {
      // A call that left the queue never starts: drop it from the expected order.
      const offered = this.offerOrder.get(ended.caller) ?? [];
      offered.splice(offered.indexOf(ended.id), 1);
    }
    for (const id of this.admission.end(ended.id)) {
      const index = this.waiting.findIndex((w) => w.id === id);
      expect(index).toBeGreaterThanOrEqual(0);
      const [call] = this.waiting.splice(index, 1);
      if (call !== undefined) this.started(call);
    }
  }

  private started(call: { id: number; caller: number }): void {
    this.running.push(call);
    push(this.startOrder, call.caller, call.id);
    for (const w of new Set(this.waiting.map((c) => c.caller))) {
      if (w !== call.caller) this.passedOver.set(w, (this.passedOver.get(w) ?? 0) + 1);
    }
    this.passedOver.set(call.caller, 0);
  }

  check(): void {
    const a = this.admission;
    expect(a.running).toBe(this.running.length);
    expect(a.waiting).toBe(this.waiting.length);
    expect(a.running).toBeLessThanOrEqual(this.limits.maxRunning);
    expect(a.waiting).toBeLessThanOrEqual(this.limits.maxWaiting);
    const waitingCallers = new Set(this.waiting.map((c) => c.caller));
    for (const caller of new Set([...this.running, ...this.waiting].map((c) => c.caller))) {
      const key = String(caller);
      expect(a.runningOf(key)).toBe(this.running.filter((c) => c.caller === caller).length);
      expect(a.waitingOf(key)).toBe(this.waiting.filter((c) => c.caller === caller).length);
      expect(a.runningOf(key)).toBeLessThanOrEqual(this.limits.maxRunningPerCaller);
      expect(a.waitingOf(key)).toBeLessThanOrEqual(this.limits.maxWaitingPerCaller);
    }
    // Work-conserving: with a slot free, a caller still waits only because
    // it runs calls already: at its limit, or at its fair share in the reserve.
    const present = new Set([...this.running, ...this.waiting].map((c) => c.caller)).size;
    const share = Math.max(1, Math.floor(this.limits.maxRunning / (present + 1)));
    const inReserve = a.running >= this.limits.maxRunning - this.limits.reservedSlots;
    if (a.running < this.limits.maxRunning) {
      for (const caller of waitingCallers) {
        const mine = a.runningOf(String(caller));
        const mayNotStart =
          mine >= this.limits.maxRunningPerCaller ||
          (this.limits.reservedSlots > 0 && inReserve && mine >= share);
        expect(mayNotStart).toBe(true);
      }
    }
    // First in, first out per caller.
    for (const [caller, started] of this.startOrder) {
      expect(started).toEqual((this.offerOrder.get(caller) ?? []).slice(0, started.length));
    }
  }

  /** Ends running calls until none is left; every waiting call must have started by then. */
  drain(): void {
    while (this.running.length > 0) {
      this.apply({ op: "endRunning", pick: 0 });
      this.check();
    }
    expect(this.waiting).toEqual([]);
  }
}

function push(map: Map<number, number[]>, key: number, value: number): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

describe("CallAdmission properties", () => {
  it("respects every bound, keeps each caller's calls in order, leaves no slot idle that a waiting call may take, and starves no call", () => {
    fc.assert(
      fc.property(
        limitsArbitrary,
        fc.array(opArbitrary(4), { minLength: 20, maxLength: 200 }),
        (l, ops) => {
          const model = new Model(new CallAdmission<number>(l), l);
          for (const op of ops) {
            model.apply(op);
            model.check();
          }
          model.drain();
          expect([model.admission.running, model.admission.waiting]).toEqual([0, 0]);
        },
      ),
      { seed: 20_240_610, numRuns: 150 },
    );
  });

  it("a waiting caller starts a call before the others have started (number of callers) calls", () => {
    const callers = 5;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.array(opArbitrary(callers), { minLength: 50, maxLength: 300 }),
        (slots, ops) => {
          // No reserve and no per-caller cap: a free slot goes to the next caller in the round.
          const l = limits({ maxRunning: slots, maxRunningPerCaller: slots, maxWaiting: 40 });
          const model = new Model(new CallAdmission<number>(l), l);
          for (const op of ops) {
            model.apply(op);
            for (const caller of new Set(model.waiting.map((c) => c.caller))) {
              expect(model.passedOver.get(caller) ?? 0).toBeLessThan(callers);
            }
          }
        },
      ),
      { seed: 20_240_611, numRuns: 200 },
    );
  });
});
