import { create } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { type CallFrame, decodeFrame, encodeFrame, type FrameInit } from "../wire/frame-codec.js";
import { splitIntoChunks } from "./chunk-assembler.js";
import { FrameReceiver, maxFrameContentBytes, type ReceivedEvent } from "./frame-receiver.js";
import { ReassemblyBudget } from "./reassembly-budget.js";

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

function collect(window: number, maxMessageBytes: number, budget?: ReassemblyBudget) {
  const events: ReceivedEvent[] = [];
  const violations: ConnectError[] = [];
  const grants: number[] = [];
  const acknowledged: number[] = [];
  const resends: number[] = [];
  const receiver = new FrameReceiver(
    window,
    { bytes: maxMessageBytes, name: "maxMessageBytes" },
    {
      event: (e) => {
        events.push(e);
        if (e.type === "message") receiver.took();
      },
      violation: (e) => violations.push(e),
      grant: (l, received, resend) => {
        grants.push(l);
        acknowledged.push(received);
        if (resend) resends.push(received);
      },
    },
    budget === undefined ? undefined : { budget, owner: "peer" },
  );
  const messages = () => events.flatMap((e) => (e.type === "message" ? [e.data] : []));
  return { receiver, events, violations, grants, acknowledged, resends, messages };
}

const messageFrame = (seq: number, data: Uint8Array) =>
  decodeCallFrame(encodeFrame({ callId: 1, seq, kind: { case: "message", value: data } }));
const chunkFrame = (seq: number, totalSize: number, offset: number, data: Uint8Array) =>
  decodeCallFrame(
    encodeFrame({ callId: 1, seq, kind: { case: "chunk", value: { totalSize, offset, data } } }),
  );

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

  it("refuses a frame larger than any a peer may send as it arrives, even ahead of a gap, before holding it", () => {
    const { receiver, violations } = collect(64, 1000);
    const limit = maxFrameContentBytes(1000);
    receiver.accept(messageFrame(5, new Uint8Array(limit + 1)));
    expect(violations.map((v) => v.code)).toEqual([Code.ResourceExhausted]);
    expect(violations[0]?.rawMessage).toContain(`exceeds the ${limit} bytes a peer may send`);
    expect(receiver.earlyBytes).toBe(0);
  });

  it("holds at most maxMessageBytes of early frames per call; the rest are dropped and come again", () => {
    const { receiver, violations, messages } = collect(64, 10_000);
    const data = Array.from({ length: 21 }, (_, i) => new Uint8Array(1000).fill(i));
    const taken = data.slice(1).map((d, i) => receiver.accept(messageFrame(i + 1, d)));
    expect(taken.filter(Boolean).length).toBeGreaterThan(3);
    expect(taken.filter((t) => !t).length).toBeGreaterThan(3);
    expect(receiver.earlyBytes).toBeLessThanOrEqual(10_000);
    receiver.accept(messageFrame(0, data[0]!));
    // The sender is asked again from the first frame not taken (a resend).
    const from = receiver.expected;
    expect(from).toBe(taken.indexOf(false) + 1);
    for (let seq = from; seq < data.length; seq++) receiver.accept(messageFrame(seq, data[seq]!));
    expect(violations).toEqual([]);
    expect(messages().map((m) => m[0])).toEqual(data.map((_, i) => i));
    expect(receiver.earlyBytes).toBe(0);
  });

  it("early frames draw on the shared budget as their bytes arrive and give it back, and hold only their own bytes", () => {
    const budget = new ReassemblyBudget(1 << 20);
    const { receiver, messages } = collect(64, 100_000, budget);
    // One publish, coalesced: the early frame inside must not keep all of it.
    const publish = encodeFrame({
      callId: 0,
      kind: {
        case: "coalesced",
        value: {
          frames: [
            {
              version: 2,
              callId: 1,
              seq: 2,
              kind: { case: "message", value: new Uint8Array(100).fill(2) },
            },
            {
              version: 2,
              callId: 2,
              seq: 0,
              kind: { case: "message", value: new Uint8Array(50_000) },
            },
          ],
        },
      },
    });
    const decoded = decodeFrame(publish);
    if (decoded.kind.case !== "coalesced") throw new Error("not coalesced");
    receiver.accept(decoded.kind.value.frames[0] as CallFrame);
    expect(budget.heldBy("peer")).toBe(receiver.earlyBytes);
    expect(receiver.earlyBytes).toBeGreaterThan(100);
    receiver.accept(messageFrame(0, new Uint8Array([0])));
    receiver.accept(messageFrame(1, new Uint8Array([1])));
    const early = messages()[2]!;
    expect(early[0]).toBe(2);
    expect(early.buffer.byteLength).toBe(100);
    expect(budget.inUse).toBe(0);
    receiver.accept(messageFrame(5, new Uint8Array(10)));
    expect(budget.inUse).toBeGreaterThan(0);
    receiver.dispose();
    expect(budget.inUse).toBe(0);
  });

  it("reserves a chunked message as its bytes arrive, and when a step finds no room waits, then asks for the chunk again", async () => {
    const budget = new ReassemblyBudget(300_000);
    const { receiver, violations, messages, resends } = collect(64, 300_000, budget);
    const announced = 250_000;
    // Another call's message holds half the budget.
    const other = budget.open(150_000);
    expect(other.grow(150_000)).toBe(true);
    expect(receiver.accept(chunkFrame(0, announced, 0, new Uint8Array(40_000).fill(1)))).toBe(true);
    // Announcing 250,000 bytes reserved 80,000: twice what arrived.
    expect(budget.inUse).toBe(230_000);
    // The next step (to 160,000) does not fit: dropped, and so is what follows.
    expect(receiver.accept(chunkFrame(1, announced, 40_000, new Uint8Array(60_000).fill(2)))).toBe(
      false,
    );
    expect(receiver.accept(chunkFrame(2, announced, 100_000, new Uint8Array(150_000)))).toBe(false);
    expect(resends).toEqual([]);
    other.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(resends).toEqual([1]);
    receiver.accept(chunkFrame(1, announced, 40_000, new Uint8Array(60_000).fill(2)));
    receiver.accept(chunkFrame(2, announced, 100_000, new Uint8Array(150_000).fill(3)));
    expect(violations).toEqual([]);
    expect(messages().map((m) => [m.byteLength, m[0], m[40_000], m[100_000]])).toEqual([
      [announced, 1, 2, 3],
    ]);
    expect(budget.inUse).toBe(0);
  });

  it("never acknowledges a frame it then refuses for want of room, even when frames before it are taken in the same step", async () => {
    const budget = new ReassemblyBudget(1500);
    const other = budget.open(1000);
    expect(other.grow(1000)).toBe(true);
    // Window 2: every message taken grants credit at once.
    const { receiver, acknowledged, resends, messages } = collect(2, 1000, budget);
    expect(receiver.accept(chunkFrame(1, 500, 0, new Uint8Array(100)))).toBe(true);
    receiver.accept(messageFrame(0, new Uint8Array([7])));
    expect(messages()).toHaveLength(1);
    expect(acknowledged.length).toBeGreaterThan(0);
    expect(Math.max(...acknowledged)).toBe(1);
    expect(receiver.expected).toBe(1);
    other.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(resends).toEqual([1]);
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
