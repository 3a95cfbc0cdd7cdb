import { describe, expect, it } from "vitest";
import { CompletedCallRecord } from "./completed-call-record.js";

describe("CompletedCallRecord", () => {
  it("remembers calls until they expire", () => {
    let now = 0;
    const record = new CompletedCallRecord(10, 100, () => now);
    record.add("a");
    expect(record.has("a")).toBe(true);
    now = 99;
    expect(record.has("a")).toBe(true);
    now = 100;
    expect(record.has("a")).toBe(false);
    expect(record.size).toBe(0);
  });

  it("keeps at most maxEntries, dropping the oldest", () => {
    const record = new CompletedCallRecord(3, 1000, () => 0);
    for (const k of ["a", "b", "c", "d"]) record.add(k);
    expect(record.size).toBe(3);
    expect(record.has("a")).toBe(false);
    expect(record.has("d")).toBe(true);
  });

  it("evicts expired entries when adding", () => {
    let now = 0;
    const record = new CompletedCallRecord(100, 10, () => now);
    record.add("a");
    record.add("b");
    now = 20;
    record.add("c");
    expect(record.size).toBe(1);
  });
});
