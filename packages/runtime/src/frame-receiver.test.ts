import { create } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { splitIntoChunks } from "./chunk-assembler.js";
import { type CallFrame, decodeFrame, encodeFrame, type FrameInit } from "./frame-codec.js";

import { FrameReceiver, type ReceivedEvent } from "./frame-receiver.js";
import { ChunkSchema } from "./gen/mqrpc/v1/wire_pb.js";

const decodeCallFrame = (bytes: Uint8Array): CallFrame => decodeFrame(bytes) as CallFrame;

/** Frames of one server->client direction carrying `messages`, then End. */
function framesFor(messages: Uint8Array[], chunkSize: number, batchEvery: number): Uint8Array[] {
  const frames: FrameInit[] = [];
  let seq = 0;
  let pending: Uint8Array[] = [];
  const flush = () => {
    if (pending.length > 0)
      frames.push({ callId: 7, seq: seq++, kind: { case: "batch", value: { messages: pending } } });
    pending = [];
  };
  for (const m of messages) {
    if (m.byteLength > chunkSize) {
      flush();
      for (const p of splitIntoChunks(m, chunkSize))
        frames.push({ callId: 7, seq: seq++, kind: { case: "chunk", value: p } });
    } else if (batchEvery > 1) {
      pending.push(m);
      if (pending.length >= batchEvery) flush();
    } else {
      frames.push({ callId: 7, seq: seq++, kind: { case: "message", value: m } });
    }
  }
  flush();
  frames.push({ callId: 7, seq: seq++, kind: { case: "end", value: { status: { code: 0 } } } });
  return frames.map(encodeFrame);
}

function collect(window: number, maxMessageBytes: number) {
  const events: ReceivedEvent[] = [];
  const violations: ConnectError[] = [];
  const grants: number[] = [];
  const receiver = new FrameReceiver(
    window,
    { bytes: maxMessageBytes, name: "maxMessageBytes" },
    {
      event: (e) => {
        events.push(e);
        if (e.type === "message") receiver.took();
      },
      violation: (e) => violations.push(e),
      grant: (l) => grants.push(l),
    },
  );
  return { receiver, events, violations, grants };
}

describe("FrameReceiver", () => {
  it("yields exactly the original messages in order under any in-window shuffle and duplication", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 40 }),
        fc.integer({ min: 50, max: 400 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 0, max: 2 ** 31 }),
        fc.array(fc.nat(), { maxLength: 15 }),
        (messages, chunkSize, batchEvery, seed, dupPicks) => {
          const frames = framesFor(messages, chunkSize, batchEvery);
          const window = frames.length + 2;
          const shuffled = fc.sample(
            fc.shuffledSubarray(frames, { minLength: frames.length, maxLength: frames.length }),
            {
              seed,
              numRuns: 1,
            },
          )[0] as Uint8Array[];
          const dups = dupPicks.map((i) => frames[i % frames.length] as Uint8Array);
          const { receiver, events, violations } = collect(window, 1 << 20);
          for (const bytes of [...shuffled, ...dups]) receiver.accept(decodeCallFrame(bytes));
          expect(violations).toEqual([]);
          const got = events
            .filter((e) => e.type === "message")
            .map((e) => (e as { data: Uint8Array }).data);
          expect(got.map((m) => Array.from(m))).toEqual(messages.map((m) => Array.from(m)));
          expect(events.filter((e) => e.type === "end")).toHaveLength(1);
          expect(events.at(-1)?.type).toBe("end");
        },
      ),
    );
  });

  it("answers RESOURCE_EXHAUSTED for a frame beyond the window (at least the protocol default of 64)", () => {
    const { receiver, violations } = collect(4, 1000);
    receiver.accept(
      decodeCallFrame(
        encodeFrame({ callId: 1, seq: 100, kind: { case: "message", value: new Uint8Array(1) } }),
      ),
    );
    expect(violations.map((v) => v.code)).toEqual([Code.ResourceExhausted]);
  });

  it("answers RESOURCE_EXHAUSTED for an oversize chunked message and ignores the rest", () => {
    const { receiver, violations, events } = collect(8, 100);
    const frames = framesFor([new Uint8Array(500)], 200, 1);
    for (const f of frames) receiver.accept(decodeCallFrame(f));
    expect(violations.map((v) => v.code)).toEqual([Code.ResourceExhausted]);
    expect(events).toEqual([]);
    expect(receiver.bufferedBytes).toBe(0);
  });

  it("grants credit as the consumer takes messages", () => {
    const { receiver, grants } = collect(4, 1000);
    for (let seq = 0; seq < 4; seq++) {
      receiver.accept(
        decodeCallFrame(
          encodeFrame({ callId: 1, seq, kind: { case: "message", value: new Uint8Array(1) } }),
        ),
      );
    }
    expect(grants).toEqual([6, 8]);
  });

  it("never throws on malformed chunk sequences", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            seq: fc.nat({ max: 12 }),
            total: fc.nat({ max: 600 }),
            offset: fc.nat({ max: 600 }),
            len: fc.nat({ max: 300 }),
          }),
          { maxLength: 25 },
        ),
        (steps) => {
          const { receiver } = collect(8, 512);
          for (const s of steps) {
            const chunk = create(ChunkSchema, {
              totalSize: s.total,
              offset: s.offset,
              data: new Uint8Array(s.len),
            });
            receiver.accept(
              decodeCallFrame(
                encodeFrame({ callId: 1, seq: s.seq, kind: { case: "chunk", value: chunk } }),
              ),
            );
            expect(receiver.bufferedBytes).toBeLessThanOrEqual(512);
          }
        },
      ),
    );
  });
});
