import { describe, expect, it } from "vitest";
import { grpcTimeout } from "./upstream-call.js";

describe("grpcTimeout", () => {
  it("gives whole milliseconds while they fit in 8 digits", () => {
    expect(grpcTimeout(100)).toBe("100m");
    expect(grpcTimeout(1)).toBe("1m");
    expect(grpcTimeout(0)).toBe("0m");
    expect(grpcTimeout(99_999_999)).toBe("99999999m");
  });

  it("rounds a fraction up, so the upstream never gets less time than the caller has", () => {
    expect(grpcTimeout(0.2)).toBe("1m");
    expect(grpcTimeout(99.01)).toBe("100m");
    // Rounding up can carry it past 8 digits of milliseconds.
    expect(grpcTimeout(99_999_999.5)).toBe("100000S");
  });

  it("switches to seconds past 8 digits of milliseconds, rounding up", () => {
    expect(grpcTimeout(100_000_000)).toBe("100000S");
    expect(grpcTimeout(100_000_001)).toBe("100001S");
    expect(grpcTimeout(99_999_999_000)).toBe("99999999S");
    // 99999999.001 s rounds up to 9 digits of seconds: hours.
    expect(grpcTimeout(99_999_999_001)).toBe("27778H");
  });

  it("switches to hours past 8 digits of seconds, rounding up", () => {
    expect(grpcTimeout(100_000_000_000)).toBe("27778H");
    expect(grpcTimeout(3_600_000 * 50_000_000)).toBe("50000000H");
    expect(grpcTimeout(3_600_000 * 50_000_000 + 1)).toBe("50000001H");
  });

  it("never gives more than 8 digits, even for the largest numbers", () => {
    expect(grpcTimeout(Number.MAX_SAFE_INTEGER)).toBe("99999999H");
    expect(grpcTimeout(Number.MAX_VALUE)).toBe("99999999H");
    expect(grpcTimeout(Number.POSITIVE_INFINITY)).toBe("99999999H");
    for (let exponent = 0; exponent <= 20; exponent++) {
      for (const ms of [10 ** exponent - 1, 10 ** exponent, 10 ** exponent + 0.5]) {
        expect(grpcTimeout(ms), String(ms)).toMatch(/^\d{1,8}[mSH]$/);
      }
    }
  });

  it("gives 0 for a deadline already past", () => {
    expect(grpcTimeout(-1)).toBe("0m");
    expect(grpcTimeout(-0.5)).toBe("0m");
    expect(grpcTimeout(-1e12)).toBe("0m");
  });
});
