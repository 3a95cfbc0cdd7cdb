import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { ChunkAssembler, FIRST_BUFFER_BYTES, NO_ROOM, splitIntoChunks } from "./chunk-assembler.js";
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

/** Byte equality without a deep compare per element (slow on megabytes). */
const same = (a: unknown, b: Uint8Array) =>
  a instanceof Uint8Array && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

describe("ChunkAssembler with a ReassemblyBudget", () => {
  const piece = (n: number, fill = 0) => new Uint8Array(n).fill(fill);

  it("reserves as bytes arrive: a first chunk costs twice its size (at least the first step), not the announced size", () => {
    const budget = new ReassemblyBudget(64 << 20);
    const a = new ChunkAssembler(4 << 20, budget);
    expect(a.push(chunk(4 << 20, 0, piece(1400)))).toBeUndefined();
    expect(budget.inUse).toBe(FIRST_BUFFER_BYTES);
    expect(a.bufferedBytes).toBe(FIRST_BUFFER_BYTES);
    const b = new ChunkAssembler(4 << 20, budget);
    expect(b.push(chunk(4 << 20, 0, piece(128 << 10)))).toBeUndefined();
    expect(b.reservedBytes).toBe(256 << 10);
    a.reset();
    b.reset();
    expect(budget.inUse).toBe(0);
  });

  it("grows the buffer by doubling up to the announced size, never holding more than twice what arrived past the first step", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 300_000 }),
        fc.integer({ min: 1, max: 100 }),
        (total, pieces) => {
          const step = Math.max(1, Math.ceil(total / pieces));
          const budget = new ReassemblyBudget(1 << 20);
          const asm = new ChunkAssembler(1 << 20, budget);
          const message = new Uint8Array(total).map((_, i) => i * 7);
          let out: Uint8Array | undefined | typeof NO_ROOM;
          for (const p of splitIntoChunks(message, Math.min(step, total - 1))) {
            out = asm.push(chunk(p.totalSize, p.offset, p.data));
            if (out === undefined) {
              const bound = Math.max(FIRST_BUFFER_BYTES, 2 * asm.receivedBytes);
              expect(asm.reservedBytes).toBeLessThanOrEqual(Math.min(total, bound));
              expect(asm.bufferedBytes).toBe(asm.reservedBytes);
            }
          }
          expect(same(out, message)).toBe(true);
          expect(budget.inUse).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("refuses a chunk with NO_ROOM when its step does not fit, keeps what arrived, and takes it again once room is granted", async () => {
    const budget = new ReassemblyBudget(100);
    const other = budget.open(60);
    expect(other.grow(60)).toBe(true);
    const asm = new ChunkAssembler(100, budget);
    // First step: min(total 80, max(64 KiB, 2 x 10)) = 80 does not fit the 40 left.
    expect(asm.push(chunk(80, 0, piece(10, 1)))).toBe(NO_ROOM);
    expect(asm.inProgress).toBe(false);
    let granted = false;
    asm.waitForRoom(() => {
      granted = true;
    });
    expect(granted).toBe(false);
    other.close();
    await Promise.resolve();
    expect(granted).toBe(true);
    expect(budget.inUse).toBe(80);
    expect(asm.push(chunk(80, 0, piece(10, 1)))).toBeUndefined();
    const whole = asm.push(chunk(80, 10, piece(70, 2)));
    expect(whole).toEqual(new Uint8Array([...piece(10, 1), ...piece(70, 2)]));
    expect(budget.inUse).toBe(0);
  });

  it("refuses a later chunk whose step does not fit, and goes on from there once granted", async () => {
    const budget = new ReassemblyBudget(300_000);
    const older = budget.open(150_000);
    expect(older.grow(150_000)).toBe(true);
    const asm = new ChunkAssembler(300_000, budget);
    expect(asm.push(chunk(200_000, 0, piece(50_000, 1)))).toBeUndefined();
    expect(budget.inUse).toBe(250_000);
    // The next step (to 200,000) needs 100,000 more; 50,000 are free.
    expect(asm.push(chunk(200_000, 50_000, piece(60_000, 2)))).toBe(NO_ROOM);
    expect(asm.receivedBytes).toBe(50_000);
    let granted = false;
    asm.waitForRoom(() => {
      granted = true;
    });
    older.close();
    await Promise.resolve();
    expect(granted).toBe(true);
    expect(asm.push(chunk(200_000, 50_000, piece(60_000, 2)))).toBeUndefined();
    expect(asm.push(chunk(200_000, 110_000, piece(90_000, 3)))).toBeInstanceOf(Uint8Array);
    expect(budget.inUse).toBe(0);
  });

  it("gives the room back on reset, also while waiting for it", () => {
    const budget = new ReassemblyBudget(100);
    const a = new ChunkAssembler(100, budget);
    expect(a.push(chunk(90, 0, piece(10)))).toBeUndefined();
    const b = new ChunkAssembler(100, budget);
    expect(b.push(chunk(90, 0, piece(10)))).toBe(NO_ROOM);
    b.waitForRoom(() => {});
    b.reset();
    a.reset();
    expect(budget.inUse).toBe(0);
  });

  it("seventeen first chunks announcing the largest message leave room for another message", () => {
    const budget = new ReassemblyBudget(64 << 20, 16 << 20);
    const attackers = Array.from({ length: 17 }, (_, i) => {
      const asm = new ChunkAssembler(4 << 20, budget, `mallory-${i % 5}`);
      expect(asm.push(chunk(4 << 20, 0, piece(1400)))).toBeUndefined();
      return asm;
    });
    expect(budget.inUse).toBe(17 * FIRST_BUFFER_BYTES);
    const honest = new ChunkAssembler(4 << 20, budget, "alice");
    const message = piece(2 << 20, 9);
    let out: Uint8Array | undefined | typeof NO_ROOM;
    for (const p of splitIntoChunks(message, 128 << 10)) {
      out = honest.push(chunk(p.totalSize, p.offset, p.data));
      expect(out).not.toBe(NO_ROOM);
    }
    expect(same(out, message)).toBe(true);
    for (const a of attackers) a.reset();
    expect(budget.inUse).toBe(0);
  });
});
