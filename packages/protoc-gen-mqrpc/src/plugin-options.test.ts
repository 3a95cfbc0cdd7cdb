import { describe, expect, it } from "vitest";
import { parsePluginOptions } from "./plugin-options.js";

const parse = (parameter: string) =>
  parsePluginOptions(
    parameter.split(",").map((raw) => {
      const i = raw.indexOf("=");
      return i < 0 ? { key: raw, value: "" } : { key: raw.slice(0, i), value: raw.slice(i + 1) };
    }),
  );

describe("parsePluginOptions", () => {
  it("returns nothing when no parameter of the plugin is given", () => {
    expect(parsePluginOptions([])).toEqual({});
  });

  it("reads batched_stream and batch_linger_ms", () => {
    expect(parse("batched_stream=true,batch_linger_ms=0")).toEqual({
      batchedStream: true,
      batchLingerMs: 0,
    });
    expect(parse("batched_stream=false")).toEqual({ batchedStream: false });
    expect(parse("batch_linger_ms=4294967295")).toEqual({ batchLingerMs: 4294967295 });
  });

  it("rejects values that are not true or false for batched_stream", () => {
    for (const bad of ["batched_stream=maybe", "batched_stream", "batched_stream=1"]) {
      expect(() => parse(bad)).toThrow(/plugin parameter batched_stream: use true or false/);
    }
  });

  it("rejects values that are not non-negative uint32 integers for batch_linger_ms", () => {
    for (const bad of ["-1", "1.5", "", "5ms", "4294967296", "1e3"]) {
      expect(() => parse(`batch_linger_ms=${bad}`)).toThrow(
        `invalid value "${bad}" for plugin parameter batch_linger_ms`,
      );
    }
  });

  it("rejects an unknown parameter, naming it and listing the accepted ones", () => {
    expect(() => parse("batching=yes")).toThrow(
      'unknown plugin parameter "batching": protoc-gen-mqrpc accepts batched_stream, ' +
        "batch_linger_ms, and the standard parameters target, import_extension, " +
        "js_import_style, rewrite_imports, map_imports, keep_empty_files, ts_nocheck, " +
        "elide_plugin_version, bootstrap_wkt",
    );
  });

  it("rejects a parameter given twice", () => {
    expect(() => parse("batch_linger_ms=1,batch_linger_ms=2")).toThrow(
      "plugin parameter batch_linger_ms is given more than once",
    );
  });
});
