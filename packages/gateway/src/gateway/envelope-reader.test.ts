import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type EnvelopedMessage, EnvelopeReader } from "./envelope-reader.js";

const message = fc.record({
  flags: fc.integer({ min: 0, max: 255 }),
  data: fc.uint8Array({ maxLength: 300 }),
});

/** `bytes` cut at the given points (sorted, deduplicated, inside the range). */
function cut(bytes: Uint8Array, points: number[]): Uint8Array[] {
  const at = [...new Set(points.map((p) => p % (bytes.byteLength + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const p of [...at, bytes.byteLength]) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  return chunks;
}

function drain(reader: EnvelopeReader, into: EnvelopedMessage[]): void {
  for (let m = reader.next(); m !== undefined; m = reader.next()) into.push(m);
}

const plain = (ms: readonly EnvelopedMessage[]) =>
  ms.map((m) => ({ flags: m.flags, data: [...m.data] }));

describe("EnvelopeReader", () => {
  it("gives back every message, whole and in order, however the body is cut", () => {
    fc.assert(
      fc.property(
        fc.array(message, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (messages, points) => {
          const body = new Uint8Array(
            messages.flatMap((m) => [...encodeEnvelope(m.flags, m.data)]),
          );
          const reader = new EnvelopeReader(1024);
          const got: EnvelopedMessage[] = [];
          for (const chunk of cut(body, points)) {
            reader.push(chunk);
            drain(reader, got);
          }
          expect(plain(got)).toEqual(plain(messages));
          expect(reader.byteLength).toBe(0);
        },
      ),
    );
  });

  it("holds a message until its last byte arrives", () => {
    const reader = new EnvelopeReader(1024);
    const body = encodeEnvelope(1, new Uint8Array([7, 8, 9]));
    reader.push(body.subarray(0, 3));
    expect(reader.next()).toBeUndefined();
    reader.push(body.subarray(3, 7));
    expect(reader.next()).toBeUndefined();
    expect(reader.byteLength).toBe(7);
    reader.push(body.subarray(7));
    expect(plain([reader.next() as EnvelopedMessage])).toEqual([{ flags: 1, data: [7, 8, 9] }]);
    expect(reader.next()).toBeUndefined();
  });

  it("refuses a message over the limit from its prefix, RESOURCE_EXHAUSTED", () => {
    for (const [limit, size] of [
      [10, 11],
      [0, 1],
      [4 * 1024 * 1024, 0xffffffff],
    ] as const) {
      const reader = new EnvelopeReader(limit);
      const prefix = new Uint8Array([0, 0, 0, 0, 0]);
      new DataView(prefix.buffer).setUint32(1, size);
      reader.push(prefix);
      let error: unknown;
      try {
        reader.next();
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
      expect((error as ConnectError).rawMessage).toBe(
        `a message of ${size} bytes exceeds maxMessageBytes (${limit} bytes)`,
      );
    }
    const exact = new EnvelopeReader(3);
    exact.push(encodeEnvelope(0, new Uint8Array(3)));
    expect(exact.next()?.data.byteLength).toBe(3);
  });
});
