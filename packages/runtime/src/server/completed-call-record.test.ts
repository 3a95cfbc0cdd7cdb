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

describe("CompletedCallRecord under churn", () => {
  it("stays bounded when the same keys are finished again and again", () => {
    let now = 0;
    const record = new CompletedCallRecord(50, 1_000_000, () => now);
    for (let i = 0; i < 100_000; i++) {
      now++;
      record.add(`k${i % 10}`);
    }
    expect(record.size).toBe(10);
    expect((record as unknown as { queue: unknown[] }).queue.length).toBeLessThan(2100);
    for (let i = 0; i < 10; i++) expect(record.has(`k${i}`)).toBe(true);
  });

  it("keeps the newest maxEntries of many distinct calls, oldest out first", () => {
    const record = new CompletedCallRecord(1000, 1_000_000, () => 0);
    for (let i = 0; i < 50_000; i++) record.add(`c${i}`, new Uint8Array(1));
    expect(record.size).toBe(1000);
    expect(record.has("c48999")).toBe(false);
    expect(record.get("c49000")?.end).toEqual(new Uint8Array(1));
    expect(record.has("c49999")).toBe(true);
  });
});
