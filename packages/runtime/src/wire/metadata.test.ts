import { encodeBinaryHeader } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { entriesToHeaders, headersToEntries, responseHeadersToEntries } from "./metadata.js";

describe("headersToEntries", () => {
  it("a -bin key's values, however many, travel as one entry each and come back the same", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 6 }),
        (values) => {
          const headers = new Headers();
          for (const v of values) headers.append("x-v-bin", encodeBinaryHeader(v));
          const entries = headersToEntries(headers);
          expect(
            entries.map((e) => (e.value.case === "binary" ? [...e.value.value] : e.value)),
          ).toEqual(values.map((v) => [...v]));
          // And back: Headers joins them again, which encodes to the same entries.
          expect(headersToEntries(entriesToHeaders(entries))).toEqual(entries);
        },
      ),
    );
  });

  it("a -bin value that is not base64 is INVALID_ARGUMENT from a caller, INTERNAL from a handler", () => {
    const headers = new Headers({ "x-bad-bin": "AA==, %%%" });
    expect(() => headersToEntries(headers)).toThrow('header "x-bad-bin" is not valid base64');
    expect(() => headersToEntries(headers)).toThrow(expect.objectContaining({ code: 3 }));
    expect(() => responseHeadersToEntries(headers)).toThrow(
      expect.objectContaining({
        code: 13,
        rawMessage: 'response metadata "x-bad-bin" is not valid base64',
      }),
    );
  });
});
