/**
 * The hand-written frame codec must agree with protobuf-es, the reference
 * implementation of the schema: the same bytes out for any frame, the same
 * frame back from any encoding, and only FrameDecodeError for garbage.
 */
import { create, equals, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FrameSchema } from "../gen/mqrpc/v1/wire_pb.js";
import {
  decodeCallFrames,
  decodeFrame,
  encodeFrame,
  FrameDecodeError,
  PROTOCOL_VERSION,
} from "./frame-codec.js";
import {
  MAX_BATCH_MESSAGES,
  MAX_COALESCED_FRAMES,
  MAX_METADATA_BYTES,
  MAX_METADATA_ENTRIES,
} from "./frame-decoder.js";
import { writeCoalesced } from "./frame-encoder.js";

const u32 = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 1, max: 300 }),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
const bytes = fc.oneof(fc.uint8Array({ maxLength: 4 }), fc.uint8Array({ maxLength: 300 }));
const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.string({ unit: "binary", maxLength: 20 }),
);
const entry = fc.record({
  key: text,
  value: fc.oneof(
    fc.record({ case: fc.constant("text" as const), value: text }),
    fc.record({ case: fc.constant("binary" as const), value: bytes }),
    fc.constant({ case: undefined }),
  ),
});
const entries = fc.array(entry, { maxLength: 3 });
const status = fc.record({
  code: u32,
  message: text,
  details: fc.array(fc.record({ type: text, value: bytes }), { maxLength: 2 }),
});

const kind = fc.oneof(
  fc.record({
    case: fc.constant("open" as const),
    value: fc.record(
      {
        timeoutMs: u32,
        headers: entries,
        message: bytes,
        halfClose: fc.boolean(),
        window: u32,
        heartbeatMs: u32,
        session: u32,
      },
      { requiredKeys: ["timeoutMs", "headers", "halfClose", "window", "heartbeatMs", "session"] },
    ),
  }),
  fc.record({
    case: fc.constant("headers" as const),
    value: fc.record({ headers: entries, instance: text, window: u32, incarnation: u32 }),
  }),
  fc.record({ case: fc.constant("message" as const), value: bytes }),
  fc.record({
    case: fc.constant("batch" as const),
    value: fc.record({ messages: fc.array(bytes, { maxLength: 5 }) }),
  }),
  fc.record({
    case: fc.constant("chunk" as const),
    value: fc.record({ totalSize: u32, offset: u32, data: bytes }),
  }),
  fc.record({ case: fc.constant("halfClose" as const), value: fc.constant({}) }),
  fc.record({
    case: fc.constant("end" as const),
    value: fc.record(
      { status, trailers: entries, headers: entries, message: bytes, ack: fc.boolean() },
      { requiredKeys: ["trailers", "headers", "ack"] },
    ),
  }),
  fc.record({ case: fc.constant("cancel" as const), value: fc.record({ code: u32 }) }),
  fc.record({
    case: fc.constant("credit" as const),
    value: fc.record({ limit: u32, received: u32, resend: fc.boolean() }),
  }),
  fc.record({ case: fc.constant("ping" as const), value: fc.constant({}) }),
  fc.record({
    case: fc.constant("pong" as const),
    value: fc.record({ incarnation: u32, unknown: fc.boolean() }),
  }),
);

const callFrameInit = fc.record({
  callId: fc.integer({ min: 1, max: 0xffff_ffff }),
  seq: u32,
  kind,
});
const coalescedInit = fc.record({
  callId: fc.constant(0),
  seq: fc.constant(0),
  kind: fc.record({
    case: fc.constant("coalesced" as const),
    value: fc.record({
      frames: fc.array(
        callFrameInit.map((f) => ({ ...f, version: PROTOCOL_VERSION })),
        { minLength: 1, maxLength: 4 },
      ),
    }),
  }),
});
const frameInit = fc.oneof(
  { arbitrary: callFrameInit, weight: 8 },
  { arbitrary: coalescedInit, weight: 1 },
);

type Init = MessageInitShape<typeof FrameSchema>;

describe("frame codec", () => {
  it("encodes every frame exactly as protobuf-es does", () => {
    fc.assert(
      fc.property(frameInit, (init) => {
        const reference = toBinary(
          FrameSchema,
          create(FrameSchema, { ...init, version: PROTOCOL_VERSION } as Init),
        );
        expect(new Uint8Array(encodeFrame(init as Init))).toEqual(reference);
      }),
      { numRuns: 2000 },
    );
  });

  it("decodes every encoding to the frame protobuf-es decodes", () => {
    fc.assert(
      fc.property(frameInit, (init) => {
        const encoded = toBinary(
          FrameSchema,
          create(FrameSchema, { ...init, version: PROTOCOL_VERSION } as Init),
        );
        const ours = decodeFrame(encoded);
        expect(equals(FrameSchema, ours, fromBinary(FrameSchema, encoded))).toBe(true);
        // And the decoded objects are complete messages protobuf-es can encode again.
        expect(toBinary(FrameSchema, ours)).toEqual(encoded);
      }),
      { numRuns: 2000 },
    );
  });

  it("skips unknown fields of every wire type, as protobuf requires", () => {
    const known = encodeFrame({
      callId: 7,
      seq: 1,
      kind: { case: "message", value: new Uint8Array([1, 2]) },
    });
    // field 99 varint, field 98 fixed64, field 97 bytes, field 96 fixed32
    const unknown = [
      0x98, 0x06, 0x2a, 0x91, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x8a, 0x06, 2, 9, 9, 0x85, 0x06, 1, 2,
      3, 4,
    ];
    const frame = decodeFrame(new Uint8Array([...unknown, ...known]));
    expect(frame.callId).toBe(7);
    expect(frame.kind).toEqual({ case: "message", value: new Uint8Array([1, 2]) });
  });

  it("accepts a uint32 sent as a ten-byte varint, keeping its low 32 bits", () => {
    // version 2, call_id = 2^32 + 5 as a 64-bit varint, ping
    const bytes = new Uint8Array([0x08, 0x02, 0x10, 0x85, 0x80, 0x80, 0x80, 0x10, 0x6a, 0x00]);
    expect(decodeFrame(bytes).callId).toBe(5);
    expect(fromBinary(FrameSchema, bytes).callId).toBe(5);
  });

  it("throws only FrameDecodeError for arbitrary or mutated bytes", () => {
    const valid = fc
      .tuple(frameInit, fc.nat(), fc.integer({ min: 0, max: 255 }))
      .map(([init, at, value]) => {
        const b = encodeFrame(init as Init);
        if (b.byteLength > 0) b[at % b.byteLength] = value;
        return b;
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), valid), (input) => {
        try {
          decodeFrame(input);
        } catch (e) {
          expect(e).toBeInstanceOf(FrameDecodeError);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("wraps encoded frames in a Coalesced frame exactly as protobuf-es would", () => {
    fc.assert(
      fc.property(fc.array(callFrameInit, { minLength: 1, maxLength: 5 }), (inits) => {
        const frames = inits.map((init) => encodeFrame(init as Init));
        const reference = toBinary(
          FrameSchema,
          create(FrameSchema, {
            version: PROTOCOL_VERSION,
            kind: {
              case: "coalesced",
              value: { frames: inits.map((i) => ({ ...i, version: PROTOCOL_VERSION }) as Init) },
            },
          }),
        );
        expect(new Uint8Array(writeCoalesced(frames))).toEqual(reference);
        expect(decodeCallFrames(reference).map((f) => f.callId)).toEqual(
          inits.map((i) => i.callId),
        );
      }),
      { numRuns: 500 },
    );
  });

  it("rejects coalesced frames that nest, are empty or carry an invalid frame", () => {
    const ping = {
      callId: 3,
      version: PROTOCOL_VERSION,
      kind: { case: "ping" as const, value: {} },
    };
    const wrap = (frames: Init[]) =>
      toBinary(
        FrameSchema,
        create(FrameSchema, {
          version: PROTOCOL_VERSION,
          kind: { case: "coalesced", value: { frames } },
        }),
      );
    expect(() => decodeFrame(wrap([]))).toThrow(/carries no frames/);
    expect(() => decodeFrame(wrap([{ ...ping, callId: 0 }]))).toThrow(/call id 0/);
    expect(() => decodeFrame(wrap([{ ...ping, version: 1 }]))).toThrow(/version 1/);
    const nested = {
      version: PROTOCOL_VERSION,
      kind: { case: "coalesced" as const, value: { frames: [ping] } },
    };
    expect(() => decodeFrame(wrap([ping, nested]))).toThrow(FrameDecodeError);
    expect(decodeCallFrames(wrap([ping, { ...ping, callId: 4 }])).map((f) => f.callId)).toEqual([
      3, 4,
    ]);
  });

  it("rejects numbers outside uint32 instead of writing them wrapped", () => {
    expect(() => encodeFrame({ callId: 2 ** 32, kind: { case: "ping", value: {} } })).toThrow(
      /invalid uint32/,
    );
    expect(() => encodeFrame({ callId: -1, kind: { case: "ping", value: {} } })).toThrow(
      /invalid uint32/,
    );
  });

  it("refuses what would cost a receiver more than the caps while decoding: metadata, batch messages, coalesced frames", () => {
    const entries = (n: number, valueBytes = 1) =>
      Array.from({ length: n }, (_, i) => ({
        key: `k${i}`,
        value: { case: "text" as const, value: "v".repeat(valueBytes) },
      }));
    const open = (headers: ReturnType<typeof entries>) =>
      encodeFrame({ callId: 1, kind: { case: "open", value: { headers } } });
    expect(decodeFrame(open(entries(MAX_METADATA_ENTRIES))).kind.case).toBe("open");
    expect(() => decodeFrame(open(entries(MAX_METADATA_ENTRIES + 1)))).toThrow(FrameDecodeError);
    expect(() => decodeFrame(open(entries(2, MAX_METADATA_BYTES / 2)))).toThrow(/metadata larger/);
    const end = encodeFrame({
      callId: 1,
      kind: { case: "end", value: { trailers: entries(600), headers: entries(600) } },
    });
    expect(() => decodeFrame(end)).toThrow(/metadata entries/);
    const batch = (n: number) =>
      encodeFrame({
        callId: 1,
        kind: {
          case: "batch",
          value: { messages: Array.from({ length: n }, () => new Uint8Array(0)) },
        },
      });
    expect(decodeFrame(batch(MAX_BATCH_MESSAGES)).kind.case).toBe("batch");
    expect(() => decodeFrame(batch(MAX_BATCH_MESSAGES + 1))).toThrow(/Batch/);
    const pings = (n: number) =>
      writeCoalesced(
        Array.from({ length: n }, (_, i) =>
          encodeFrame({ callId: i + 1, kind: { case: "ping", value: {} } }),
        ),
      );
    expect(decodeCallFrames(pings(MAX_COALESCED_FRAMES)).length).toBe(MAX_COALESCED_FRAMES);
    expect(() => decodeFrame(pings(MAX_COALESCED_FRAMES + 1))).toThrow(/Coalesced/);
  });
});
