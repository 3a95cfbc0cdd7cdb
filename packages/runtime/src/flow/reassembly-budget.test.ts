import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { ChunkAssembler, NO_ROOM, splitIntoChunks } from "./chunk-assembler.js";
import { ReassemblyBudget } from "./reassembly-budget.js";

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("ReassemblyBudget", () => {
  it("grants steps of a message while they fit, and serves queued messages in the order they started", async () => {
    const budget = new ReassemblyBudget(100);
    const a = budget.open(70);
    expect(a.grow(70)).toBe(true);
    const b = budget.open(50);
    expect(b.grow(20)).toBe(true);
    expect(b.grow(20)).toBe(false);
    const granted: string[] = [];
    b.wait(20, () => granted.push("b"));
    const c = budget.open(10);
    // A newcomer does not jump the queue.
    expect(c.grow(10)).toBe(false);
    c.wait(10, () => granted.push("c"));
    a.close();
    await settle();
    expect(granted).toEqual(["b", "c"]);
    expect(budget.inUse).toBe(50);
    b.close();
    c.close();
    expect(budget.inUse).toBe(0);
  });

  it("keeps room for the oldest message to finish: a younger one cannot take it", () => {
    const budget = new ReassemblyBudget(100);
    const oldest = budget.open(80);
    expect(oldest.grow(10)).toBe(true);
    const younger = budget.open(80);
    // Free is 90; the oldest still needs 70, so the younger may take 20.
    expect(younger.grow(21)).toBe(false);
    expect(younger.grow(20)).toBe(true);
    expect(younger.grow(1)).toBe(false);
    // The oldest can always take what it needs.
    expect(oldest.grow(70)).toBe(true);
    oldest.close();
    expect(younger.grow(60)).toBe(true);
    younger.close();
    expect(budget.inUse).toBe(0);
  });

  it("bounds each owner by its share, without holding back other owners", async () => {
    const budget = new ReassemblyBudget(100, 40);
    const a1 = budget.open(40, "alice");
    expect(a1.grow(40)).toBe(true);
    const a2 = budget.open(10, "alice");
    expect(a2.grow(10)).toBe(false);
    let aliceGranted = false;
    a2.wait(10, () => {
      aliceGranted = true;
    });
    const b = budget.open(40, "bob");
    expect(b.grow(40)).toBe(true);
    a1.close();
    await settle();
    expect(aliceGranted).toBe(true);
    expect(budget.heldBy("alice")).toBe(10);
    expect(budget.inUse).toBe(50);
  });

  it("skips cancelled waiters", async () => {
    const budget = new ReassemblyBudget(10);
    const full = budget.open(10);
    expect(full.grow(10)).toBe(true);
    let first = false;
    let second = false;
    budget
      .open(5)
      .wait(5, () => {
        first = true;
      })
      .cancel();
    budget.open(5).wait(5, () => {
      second = true;
    });
    full.close();
    await settle();
    expect(first).toBe(false);
    expect(second).toBe(true);
  });

  it("lets bytes tied to no message (early frames) take at most half, and never room a message needs", () => {
    const budget = new ReassemblyBudget(100, 60);
    expect(budget.reserve(51)).toBe(false);
    expect(budget.reserve(30, "mallory")).toBe(true);
    expect(budget.reserve(1, "mallory")).toBe(false);
    const m = budget.open(60, "alice");
    expect(m.grow(10)).toBe(true);
    // 60 free; alice's message needs 50 of them.
    expect(budget.reserve(11, "bob")).toBe(false);
    expect(budget.reserve(10, "bob")).toBe(true);
    budget.release(30, "mallory");
    budget.release(10, "bob");
    m.close();
    expect(budget.inUse).toBe(0);
  });

  it("never deadlocks: honest messages that reserve as they arrive all finish, whatever the interleaving", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            size: fc.integer({ min: 2, max: 400_000 }),
            chunk: fc.integer({ min: 1000, max: 150_000 }),
            owner: fc.constantFrom("a", "b", "c", undefined),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        fc.integer({ min: 400_000, max: 1_200_000 }),
        fc.integer({ min: 1, max: 0x7fff_ffff }),
        async (messages, limit, seed) => {
          const share = Math.max(400_000, Math.floor(limit / 2));
          const budget = new ReassemblyBudget(limit, share);
          let random = seed;
          const next = (n: number) => {
            random = (random * 48271) % 0x7fff_ffff;
            return random % n;
          };
          const senders = messages.map((m, i) => {
            const payload = new Uint8Array(m.size).fill(i & 0xff);
            return {
              pieces: splitIntoChunks(payload, Math.min(m.chunk, m.size - 1)),
              at: 0,
              waiting: false,
              done: false,
              asm: new ChunkAssembler(400_000, budget, m.owner),
              payload,
            };
          });
          // Room this size first, so the budget starts with some (~10%) held by early frames.
          const loose = Math.floor(limit / 10);
          expect(budget.reserve(loose, undefined)).toBe(true);
          let looseHeld = true;
          for (let steps = 0; senders.some((s) => !s.done); steps++) {
            const ready = senders.filter((s) => !s.done && !s.waiting);
            if (ready.length === 0) {
              await settle();
              if (!senders.some((s) => !s.done && !s.waiting)) {
                if (looseHeld) {
                  budget.release(loose);
                  looseHeld = false;
                  await settle();
                  continue;
                }
                throw new Error(`deadlock after ${steps} steps, ${budget.inUse} bytes held`);
              }
              continue;
            }
            const s = ready[next(ready.length)]!;
            const p = s.pieces[s.at]!;
            const out = s.asm.push(create(ChunkSchema, p));
            if (out === NO_ROOM) {
              s.waiting = true;
              s.asm.waitForRoom(() => {
                s.waiting = false;
              });
            } else {
              s.at++;
              if (out !== undefined) {
                s.done = true;
                expect(Buffer.from(out).equals(Buffer.from(s.payload))).toBe(true);
              }
            }
            expect(budget.inUse).toBeLessThanOrEqual(limit);
            for (const o of ["a", "b", "c"]) expect(budget.heldBy(o)).toBeLessThanOrEqual(share);
          }
          if (looseHeld) budget.release(loose);
          expect(budget.inUse).toBe(0);
          expect(budget.messages).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("a message whose sender stops holds what it received, and costs the others at most its remaining size", () => {
    const budget = new ReassemblyBudget(100);
    const stalled = budget.open(40);
    expect(stalled.grow(5)).toBe(true);
    // 95 free, 35 of them kept for the stalled message: 60 for the rest.
    const others = [budget.open(30), budget.open(30)];
    expect(others[0]!.grow(30)).toBe(true);
    expect(others[1]!.grow(30)).toBe(true);
    expect(budget.open(10).grow(1)).toBe(false);
    for (const o of others) o.close();
    stalled.close();
    expect(budget.inUse).toBe(0);
  });
});
