import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type CallFrame, decodeCallFrames, encodeFrame } from "../wire/frame-codec.js";
import { MAX_COALESCED_FRAMES } from "../wire/frame-decoder.js";
import { PublishCoalescer } from "./publish-coalescer.js";

/** A coalescer whose turns end when the test says, recording what it publishes. */
function harness(fail = false) {
  const published: Array<{ topic: string; frames: readonly CallFrame[]; bytes: number }> = [];
  let turnEnd: (() => void) | undefined;
  const coalescer = new PublishCoalescer(
    (topic, payload, done) => {
      published.push({ topic, frames: decodeCallFrames(payload), bytes: payload.byteLength });
      queueMicrotask(() => done(fail ? new Error("broken link") : undefined));
    },
    (fn) => {
      turnEnd = fn;
    },
  );
  const endTurn = () => {
    const fn = turnEnd;
    turnEnd = undefined;
    fn?.();
  };
  return { coalescer, published, endTurn };
}

const frame = (callId: number, seq = 0, size = 8) =>
  encodeFrame({ callId, seq, kind: { case: "message", value: new Uint8Array(size) } });
const ignore = { publishFailed: () => {} };

describe("PublishCoalescer", () => {
  it("publishes a lone frame at once", () => {
    const { coalescer, published } = harness();
    coalescer.send("t", 1, frame(1), 1000, ignore);
    expect(published).toHaveLength(1);
    expect(published[0]?.frames.map((f) => f.callId)).toEqual([1]);
  });

  it("packs frames of other calls due in the same turn into one publish at its end", () => {
    const { coalescer, published, endTurn } = harness();
    for (let id = 1; id <= 10; id++) coalescer.send("t", id, frame(id), 10_000, ignore);
    expect(published).toHaveLength(1);
    expect(coalescer.waiting).toBe(9);
    endTurn();
    expect(published).toHaveLength(2);
    expect(published[1]?.frames.map((f) => f.callId)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("keeps topics apart", () => {
    const { coalescer, published, endTurn } = harness();
    coalescer.send("a", 1, frame(1), 10_000, ignore);
    coalescer.send("b", 2, frame(2), 10_000, ignore);
    coalescer.send("a", 3, frame(3), 10_000, ignore);
    coalescer.send("b", 4, frame(4), 10_000, ignore);
    endTurn();
    expect(published.map((p) => [p.topic, p.frames.map((f) => f.callId)])).toEqual([
      ["a", [1]],
      ["b", [2]],
      ["a", [3]],
      ["b", [4]],
    ]);
  });

  it("never puts two frames of one call in a publish, and keeps their order", () => {
    const { coalescer, published, endTurn } = harness();
    for (let seq = 0; seq < 5; seq++) coalescer.send("t", 7, frame(7, seq), 10_000, ignore);
    endTurn();
    expect(published.map((p) => p.frames.map((f) => f.seq))).toEqual([[0], [1], [2], [3], [4]]);
  });

  it("never puts more frames in one publish than a decoder takes", () => {
    const { coalescer, published, endTurn } = harness();
    const calls = MAX_COALESCED_FRAMES * 2 + 10;
    for (let id = 1; id <= calls; id++) coalescer.send("t", id, frame(id, 0, 0), 1 << 20, ignore);
    endTurn();
    expect(published.every((p) => p.frames.length <= MAX_COALESCED_FRAMES)).toBe(true);
    expect(published.reduce((n, p) => n + p.frames.length, 0)).toBe(calls);
  });

  it("never exceeds the publish size, and sends a big frame alone after what waits", () => {
    const { coalescer, published, endTurn } = harness();
    coalescer.send("t", 1, frame(1, 0, 100), 400, ignore);
    for (let id = 2; id <= 9; id++) coalescer.send("t", id, frame(id, 0, 100), 400, ignore);
    coalescer.send("t", 10, frame(10, 0, 300), 400, ignore);
    endTurn();
    for (const p of published) expect(p.bytes).toBeLessThanOrEqual(400);
    expect(published.flatMap((p) => p.frames.map((f) => f.callId))).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
    ]);
    expect(published.at(-1)?.frames).toHaveLength(1);
  });

  it("tells every frame's sender when the shared publish fails", async () => {
    const { coalescer, endTurn } = harness(true);
    const failed: number[] = [];
    for (let id = 1; id <= 3; id++)
      coalescer.send("t", id, frame(id), 10_000, {
        publishFailed: (e, topic) => {
          expect(topic).toBe("t");
          expect(String(e)).toMatch(/broken link/);
          failed.push(id);
        },
      });
    endTurn();
    await new Promise((r) => setImmediate(r));
    expect(failed.sort()).toEqual([1, 2, 3]);
  });

  it("explains a failure while it happens, and tells the senders after the call stack", async () => {
    let context: string | undefined;
    const failures: unknown[] = [];
    const coalescer = new PublishCoalescer(
      (_topic, _payload, done) => {
        // The explanation depends on state that holds only while MQTT.js
        // reports the failure (the link's refusal of an oversize publish).
        context = "refused";
        done(new Error("Message removed"));
        context = undefined;
      },
      undefined,
      (e) => (context === "refused" ? new Error(`too large (was: ${String(e)})`) : e),
    );
    coalescer.send("t", 1, frame(1), 10_000, { publishFailed: (e) => failures.push(e) });
    expect(failures).toEqual([]);
    await Promise.resolve();
    expect(failures.map(String)).toEqual(["Error: too large (was: Error: Message removed)"]);
  });

  it("delivers every frame once, per call in order, within the size limit (property)", () => {
    const sends = fc.array(
      fc.record({
        topic: fc.constantFrom("a", "b"),
        callId: fc.integer({ min: 1, max: 6 }),
        size: fc.integer({ min: 0, max: 300 }),
        endTurn: fc.boolean(),
      }),
      { maxLength: 80 },
    );
    fc.assert(
      fc.property(sends, fc.integer({ min: 200, max: 2000 }), (steps, maxBytes) => {
        const { coalescer, published, endTurn } = harness();
        const nextSeq = new Map<string, number>();
        const expected: string[] = [];
        for (const step of steps) {
          const key = `${step.topic}/${step.callId}`;
          const seq = nextSeq.get(key) ?? 0;
          nextSeq.set(key, seq + 1);
          const f = frame(step.callId, seq, Math.min(step.size, maxBytes - 40));
          coalescer.send(step.topic, step.callId, f, maxBytes, ignore);
          expected.push(`${key}#${seq}`);
          if (step.endTurn) endTurn();
        }
        endTurn();
        const got = published.flatMap((p) => {
          expect(p.bytes).toBeLessThanOrEqual(maxBytes);
          const ids = p.frames.map((f) => f.callId);
          expect(new Set(ids).size).toBe(ids.length);
          return p.frames.map((f) => `${p.topic}/${f.callId}#${f.seq}`);
        });
        expect([...got].sort()).toEqual([...expected].sort());
        for (const key of nextSeq.keys()) {
          const order = got.filter((g) => g.startsWith(`${key}#`));
          expect(order).toEqual(expected.filter((e) => e.startsWith(`${key}#`)));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe("PublishCoalescer, frames that must go alone", () => {
  it("publishes them at once, after what waits on the topic", () => {
    const { coalescer, published, endTurn } = harness();
    coalescer.send("t", 1, frame(1), 10_000, ignore);
    coalescer.send("t", 2, frame(2), 10_000, ignore);
    coalescer.send("t", 3, frame(3), 10_000, ignore, true);
    coalescer.send("t", 4, frame(4), 10_000, ignore, true);
    endTurn();
    expect(published.map((p) => p.frames.map((f) => f.callId))).toEqual([[1], [2], [3], [4]]);
  });
});
