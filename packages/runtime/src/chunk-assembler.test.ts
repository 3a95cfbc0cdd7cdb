import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkAssembler, NO_ROOM, splitIntoChunks } from "./chunk-assembler.js";
import { ChunkSchema } from "./gen/mqrpc/v1/wire_pb.js";
import { ReassemblyBudget } from "./reassembly-budget.js";

const chunk = (totalSize: number, offset: number, data: Uint8Array) =>
  create(ChunkSchema, { totalSize, offset, data });

function codeOf(fn: () => unknown): Code | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConnectError);
    return (e as ConnectError).code;
  }
  return undefined;
}

describe("splitIntoChunks and ChunkAssembler", () => {
  it("round-trips any message at any chunk size", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 3000 }),
        fc.integer({ min: 1, max: 700 }),
        (msg, size) => {
          const pieces = splitIntoChunks(msg, size);
          expect(pieces.every((p) => p.data.byteLength <= size)).toBe(true);
          const asm = new ChunkAssembler(msg.byteLength);
          let out: Uint8Array | undefined | typeof NO_ROOM;
          pieces.forEach((p, i) => {
            out = asm.push(chunk(p.totalSize, p.offset, p.data));
            expect(out === undefined).toBe(i < pieces.length - 1);
          });
          expect(out).toEqual(msg);
          expect(asm.inProgress).toBe(false);
        },
      ),
    );
  });

  it("refuses an oversize message at its first chunk, before buffering", () => {
    const asm = new ChunkAssembler(100);
    expect(codeOf(() => asm.push(chunk(101, 0, new Uint8Array(10))))).toBe(Code.ResourceExhausted);
    expect(asm.bufferedBytes).toBe(0);
  });

  it("refuses inconsistent sequences with INVALID_ARGUMENT and forgets the partial message", () => {
    const cases: Array<Array<[number, number, number]>> = [
      [[10, 5, 5]],
      [
        [10, 0, 5],
        [12, 5, 5],
      ],
      [
        [10, 0, 5],
        [10, 6, 4],
      ],
      [
        [10, 0, 5],
        [10, 5, 6],
      ],
      [[10, 0, 0]],
    ];
    for (const steps of cases) {
      const asm = new ChunkAssembler(100);
      const codes = steps.map(([t, o, n]) =>
        codeOf(() => asm.push(chunk(t, o, new Uint8Array(n)))),
      );
      expect(codes.at(-1)).toBe(Code.InvalidArgument);
      expect(asm.bufferedBytes).toBe(0);
    }
  });

  it("never throws anything but ConnectError and never holds more than the cap", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            total: fc.integer({ min: 0, max: 400 }),
            offset: fc.integer({ min: 0, max: 400 }),
            len: fc.integer({ min: 0, max: 200 }),
          }),
          { maxLength: 30 },
        ),
        (steps) => {
          const asm = new ChunkAssembler(256);
          for (const s of steps) {
            codeOf(() => asm.push(chunk(s.total, s.offset, new Uint8Array(s.len))));
            expect(asm.bufferedBytes).toBeLessThanOrEqual(256);
          }
        },
      ),
    );
  });

  it("rejects a non-positive chunk size", () => {
    expect(() => splitIntoChunks(new Uint8Array(3), 0)).toThrow(/maxChunkBytes/);
  });
});

describe("ReassemblyBudget across assemblers", () => {
  it("reserves a message's announced size at its first chunk, refuses it with NO_ROOM when full, and returns it on completion and reset", () => {
    const budget = new ReassemblyBudget(100);
    const a = new ChunkAssembler(1000, budget);
    const b = new ChunkAssembler(1000, budget);
    expect(a.push(chunk(200, 0, new Uint8Array(10)))).toBe(NO_ROOM);
    expect(budget.inUse).toBe(0);
    expect(a.push(chunk(60, 0, new Uint8Array(20)))).toBeUndefined();
    expect(budget.inUse).toBe(60);
    expect(a.bufferedBytes).toBe(60);
    expect(b.push(chunk(60, 0, new Uint8Array(20)))).toBe(NO_ROOM);
    expect(budget.inUse).toBe(60);
    a.reset();
    expect(budget.inUse).toBe(0);
    expect(b.push(chunk(80, 0, new Uint8Array(50).fill(1)))).toBeUndefined();
    const whole = b.push(chunk(80, 50, new Uint8Array(30).fill(2)));
    expect(whole).toEqual(new Uint8Array([...new Array(50).fill(1), ...new Array(30).fill(2)]));
    expect(budget.inUse).toBe(0);
  });

  it("serves waiters in order once room frees, reserving for them, and a held reservation is used by the next message", async () => {
    const budget = new ReassemblyBudget(100);
    const a = new ChunkAssembler(1000, budget);
    const b = new ChunkAssembler(1000, budget);
    expect(a.push(chunk(70, 0, new Uint8Array(10)))).toBeUndefined();
    expect(b.push(chunk(50, 0, new Uint8Array(10)))).toBe(NO_ROOM);
    let granted = false;
    budget.wait(50, undefined, () => {
      granted = true;
    });
    // A newcomer does not jump the queue.
    expect(budget.reserve(40)).toBe(false);
    a.reset();
    expect(budget.inUse).toBe(50);
    await Promise.resolve();
    expect(granted).toBe(true);
    b.hold(50);
    expect(b.push(chunk(50, 0, new Uint8Array(10)))).toBeUndefined();
    expect(budget.inUse).toBe(50);
    b.reset();
    expect(budget.inUse).toBe(0);
  });

  it("bounds each owner by its share, without holding back other owners", async () => {
    const budget = new ReassemblyBudget(100, 40);
    expect(budget.reserve(40, "alice")).toBe(true);
    expect(budget.reserve(10, "alice")).toBe(false);
    let aliceGranted = false;
    budget.wait(10, "alice", () => {
      aliceGranted = true;
    });
    expect(budget.reserve(40, "bob")).toBe(true);
    budget.release(40, "alice");
    await Promise.resolve();
    expect(aliceGranted).toBe(true);
    expect(budget.heldBy("alice")).toBe(10);
    expect(budget.inUse).toBe(50);
  });

  it("skips cancelled waiters", async () => {
    const budget = new ReassemblyBudget(10);
    expect(budget.reserve(10)).toBe(true);
    let first = false;
    let second = false;
    budget
      .wait(5, undefined, () => {
        first = true;
      })
      .cancel();
    budget.wait(5, undefined, () => {
      second = true;
    });
    budget.release(10);
    await Promise.resolve();
    expect(first).toBe(false);
    expect(second).toBe(true);
  });
});
