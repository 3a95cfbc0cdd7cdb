import { describe, expect, it } from "vitest";
import { mergeServiceSettings, ownSettings } from "./method-settings.js";

describe("method settings by method name", () => {
  it("read own keys only: inherited names find nothing", () => {
    const settings = { get: { batchedStream: true } };
    expect(ownSettings(settings, "get")).toEqual({ batchedStream: true });
    for (const name of ["__proto__", "toString", "hasOwnProperty", "constructor"]) {
      expect(ownSettings(settings, name)).toBeUndefined();
    }
  });

  it("merge a method named __proto__ as data, keeping the prototype alone", () => {
    const base = JSON.parse('{"__proto__": {"batchLingerMs": 7}, "get": {"batchedStream": true}}');
    const override = JSON.parse(
      '{"__proto__": {"batchedStream": true}, "toString": {"batchLingerMs": 1}}',
    );
    const merged = mergeServiceSettings(base, override) as Record<string, unknown>;
    expect(ownSettings(merged, "__proto__")).toEqual({ batchLingerMs: 7, batchedStream: true });
    expect(ownSettings(merged, "toString")).toEqual({ batchLingerMs: 1 });
    expect(ownSettings(merged, "get")).toEqual({ batchedStream: true });
    expect(Object.keys(merged).sort()).toEqual(["__proto__", "get", "toString"]);
    expect(Object.getPrototypeOf(merged)).toBeNull();
  });
});
