import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ReorderWindow } from "./reorder-window.js";

describe("ReorderWindow", () => {
  it("delivers in order, holding early arrivals", () => {
    const w = new ReorderWindow<string>(4);
    expect(w.accept(1, "b")).toEqual([]);
    expect(w.accept(2, "c")).toEqual([]);
    expect(w.accept(0, "a")).toEqual(["a", "b", "c"]);
    expect(w.expected).toBe(3);
    expect(w.buffered).toBe(0);
  });

  it("drops duplicates, delivered or held", () => {
    const w = new ReorderWindow<string>(4);
    w.accept(0, "a");
    expect(w.accept(0, "a")).toBe("duplicate");
    w.accept(2, "c");
    expect(w.accept(2, "c")).toBe("duplicate");
  });

  it("refuses frames beyond its capacity", () => {
    const w = new ReorderWindow<number>(3);
    expect(w.accept(3, 3)).toBe("overflow");
    expect(w.accept(2, 2)).toEqual([]);
  });

  it("holds early frames only up to its byte cap: beyond it a frame is refused as full, and counted bytes leave with delivery", () => {
    const w = new ReorderWindow<string>(8, 100);
    expect(w.accept(1, "b", 60)).toEqual([]);
    expect(w.accept(2, "c", 41)).toBe("full");
    expect(w.accept(2, "c", 40)).toEqual([]);
    expect(w.bufferedBytes).toBe(100);
    // The frame the window waits for is never refused for its size.
    expect(w.accept(0, "a", 500)).toEqual(["a", "b", "c"]);
    expect(w.bufferedBytes).toBe(0);
    expect(w.accept(4, "e", 10)).toEqual([]);
    w.rewind(3);
    expect(w.bufferedBytes).toBe(0);
    expect(w.buffered).toBe(0);
  });

  it("says whether a frame would be held", () => {
    const w = new ReorderWindow<string>(3);
    expect(w.wouldHold(0)).toBe(false);
    expect(w.wouldHold(1)).toBe(true);
    expect(w.wouldHold(3)).toBe(false);
    w.accept(1, "b");
    expect(w.wouldHold(1)).toBe(false);
  });

  it("rejects a non-positive capacity", () => {
    expect(() => new ReorderWindow(0)).toThrow(/capacity/);
  });

  it("turns any in-window shuffle with duplicates into the original order", () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 60 })
          .chain((n) =>
            fc.tuple(
              fc.constant(n),
              fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n }),
              fc.array(fc.integer({ min: 0, max: n - 1 }), { maxLength: 20 }),
            ),
          ),
        ([n, order, dups]) => {
          const w = new ReorderWindow<number>(n);
          const out: number[] = [];
          for (const seq of [...order, ...dups]) {
            const r = w.accept(seq, seq);
            if (Array.isArray(r)) out.push(...r);
            else expect(r).toBe("duplicate");
          }
          expect(out).toEqual([...Array(n).keys()]);
          expect(w.buffered).toBe(0);
        },
      ),
    );
  });
});
