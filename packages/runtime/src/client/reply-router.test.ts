import { describe, expect, it } from "vitest";
import { nextSession } from "./reply-router.js";

describe("nextSession", () => {
  it("never gives a client key a session this process gave it before", () => {
    const seen = new Set<number>();
    for (let i = 0; i < 20_000; i++) {
      // The same random draw every time: only the sequence keeps them apart.
      const session = nextSession("key-a", 0x1234_5678);
      expect(seen.has(session)).toBe(false);
      seen.add(session);
    }
  });

  it("starts each key at its random draw, non-zero and below 2^31", () => {
    expect(nextSession("key-b", 0xffff_ffff)).toBe(0x7fff_ffff);
    // Wraps past 2^31 - 1 to 1, never 0.
    expect(nextSession("key-b", 0)).toBe(1);
    expect(nextSession("key-c", 0)).toBe(1);
    expect(nextSession("key-d", 1)).toBe(1);
    expect(nextSession("key-e", 6)).toBe(3);
  });

  it("forgets the oldest keys beyond 1024, so random client ids cost nothing lasting", () => {
    nextSession("first", 10);
    for (let i = 0; i < 1024; i++) nextSession(`filler-${i}`, 10);
    // "first" was forgotten: it starts again from its random draw.
    expect(nextSession("first", 10)).toBe(5);
  });
});
