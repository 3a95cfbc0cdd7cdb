import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FrameSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { encodeGroup, MessageGroupEncoder } from "./message-group-encoder.js";

const stamp = (seconds: number, nanos: number) =>
  create(TimestampSchema, { seconds: BigInt(seconds), nanos });

describe("encodeGroup", () => {
  it("cuts out exactly the bytes toBinary gives each message (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            callId: fc.integer({ min: 0, max: 0xffff_ffff }),
            body: fc.uint8Array({ maxLength: 300 }),
          }),
          { maxLength: 40 },
        ),
        (inits) => {
          // A message type with a oneof, a nested message and bytes fields.
          const frames = inits.map((i) =>
            create(FrameSchema, { callId: i.callId, kind: { case: "message", value: i.body } }),
          );
          const views = encodeGroup(FrameSchema, frames);
          expect(views.map((v) => [...v])).toEqual(
            frames.map((f) => [...toBinary(FrameSchema, f)]),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it("works for a type from another file (well-known types)", () => {
    const views = encodeGroup(TimestampSchema, [stamp(1, 2), stamp(0, 0), stamp(3, 0)]);
    expect(views.map((v) => fromBinary(TimestampSchema, v))).toEqual([
      stamp(1, 2),
      stamp(0, 0),
      stamp(3, 0),
    ]);
  });
});

describe("MessageGroupEncoder", () => {
  it("hands on messages in order, a group at a time, and at the end of the turn", async () => {
    const out: Timestamp[] = [];
    const encoder = new MessageGroupEncoder(
      TimestampSchema,
      (bytes) => {
        out.push(fromBinary(TimestampSchema, bytes));
        return undefined;
      },
      (e) => {
        throw e;
      },
    );
    for (let i = 0; i < 100; i++) expect(encoder.add(stamp(i, 0))).toBeUndefined();
    // 64 went out as a full group; the rest wait for the end of the turn.
    expect(out).toHaveLength(64);
    await new Promise((r) => setImmediate(r));
    expect(out.map((t) => Number(t.seconds))).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it("passes the sink's back-pressure on and keeps order while it waits", async () => {
    const out: number[] = [];
    let release: () => void = () => {};
    let blocked = true;
    const encoder = new MessageGroupEncoder(
      TimestampSchema,
      (bytes) => {
        out.push(Number(fromBinary(TimestampSchema, bytes).seconds));
        if (out.length === 10 && blocked) {
          return new Promise<void>((r) => {
            release = () => {
              blocked = false;
              r();
            };
          });
        }
        return undefined;
      },
      (e) => {
        throw e;
      },
    );
    let waited: Promise<void> | undefined;
    for (let i = 0; i < 64; i++) waited = encoder.add(stamp(i, 0)) ?? waited;
    expect(waited).toBeInstanceOf(Promise);
    expect(out).toHaveLength(10);
    // A flush while the sink waits goes after what is under way.
    const flushed = encoder.flush();
    release();
    await waited;
    await flushed;
    expect(out).toEqual(Array.from({ length: 64 }, (_, i) => i));
  });
});
