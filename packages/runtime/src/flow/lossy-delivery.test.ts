/**
 * A FrameSender and a FrameReceiver joined by a simulated broker that
 * loses, duplicates and reorders frames in both directions, before and
 * after the End: every message arrives exactly once and in order, the End
 * arrives and is acknowledged, and the sender never keeps more than its
 * window. This is the delivery machinery of PROTOCOL.md sections 7 and 11,
 * without MQTT around it.
 */
import { Code, type ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type CallFrame, decodeFrame } from "../wire/frame-codec.js";
import { FrameReceiver } from "./frame-receiver.js";
import { FrameSender, type SignalSource } from "./frame-sender.js";
import { ReassemblyBudget } from "./reassembly-budget.js";

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Channel<T> {
  queue: T[];
}

/** Runs one call direction through a lossy channel; resolves with what the receiver saw. */
async function run(options: {
  messages: Uint8Array[];
  seed: number;
  lossPercent: number;
  duplicatePercent: number;
  maxFrameBytes: number;
  budgetBytes: number;
}) {
  let random = options.seed >>> 0 || 1;
  const rand = () => {
    // xorshift32: a reproducible stream per seed
    random ^= random << 13;
    random ^= random >>> 17;
    random ^= random << 5;
    return (random >>> 0) / 0x1_0000_0000;
  };
  const toReceiver: Channel<Uint8Array> = { queue: [] };
  const toSender: Channel<[number, number, boolean]> = { queue: [] };
  const signal: SignalSource = { signal: new AbortController().signal };
  // Virtual time: 10 ms per tick, so resend pacing sees heartbeat-like intervals.
  let tick = 0;
  const sender = new FrameSender(
    1,
    {
      publish: (frame) => toReceiver.queue.push(frame),
      maxFrameBytes: () => options.maxFrameBytes,
    },
    64,
    () => tick * 10,
  );
  const received: Uint8Array[] = [];
  const violations: ConnectError[] = [];
  let ended = false;
  const budget = new ReassemblyBudget(options.budgetBytes);
  const receiver: FrameReceiver = new FrameReceiver(
    64,
    { bytes: 1 << 20, name: "maxMessageBytes" },
    {
      event: (e) => {
        if (e.type === "message") {
          received.push(e.data);
          receiver.took();
        } else if (e.type === "end") {
          ended = true;
          if (e.end.ack) toSender.queue.push([receiver.announced, receiver.expected, false]);
        }
      },
      violation: (e) => violations.push(e),
      grant: (limit, got, resend) => toSender.queue.push([limit, got, resend]),
    },
    { budget, owner: undefined },
  );
  // Another call holds half the budget now and then, so reassembly must wait.
  let held = 0;
  const producing = (async () => {
    for (const m of options.messages) {
      const sending = sender.sendMessage(m, signal);
      if (sending !== undefined) await sending;
    }
    await sender.sendEnd({ headers: [], trailers: [] }, undefined, signal);
  })();
  // An End that did not ask for acknowledgement is kept by the server's record instead.
  const acknowledged = () => !sender.endNeedsAck || sender.allAcknowledged;
  let afterEnd = 0;
  for (; tick < 5000; tick++) {
    const deliver = <T>(channel: Channel<T>, to: (item: T) => void) => {
      const batch = channel.queue.splice(0);
      // Reorder within what is in flight at once.
      for (let i = batch.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [batch[i], batch[j]] = [batch[j] as T, batch[i] as T];
      }
      for (const item of batch) {
        if (rand() * 100 < options.lossPercent) continue;
        to(item);
        if (rand() * 100 < options.duplicatePercent) to(item);
      }
    };
    deliver(toReceiver, (bytes) => receiver.accept(decodeFrame(bytes) as CallFrame));
    deliver(toSender, ([limit, got, resend]) => sender.onCredit(limit, got, resend));
    expect(sender.unacknowledged).toBeLessThanOrEqual(1024 + 1);
    if (tick % 7 === 3) {
      if (held > 0) budget.release(held);
      held =
        tick % 14 === 3 && budget.reserve(options.budgetBytes >> 1) ? options.budgetBytes >> 1 : 0;
    }
    // A heartbeat's progress check now and then.
    if (tick % 5 === 0) receiver.checkProgress(!ended);
    await turn();
    // The End's acknowledgement may be lost too: then the server forgets the
    // call later (the caller stops pinging), which is not simulated here.
    if (ended && toReceiver.queue.length === 0 && (acknowledged() || ++afterEnd > 50)) break;
  }
  if (held > 0) budget.release(held);
  await producing;
  return {
    received,
    violations,
    ended,
    acknowledged: acknowledged(),
    budget,
  };
}

describe("delivery over a lossy channel", () => {
  it("delivers every message once, in order, and the acknowledged End, under loss, duplication and reordering both ways", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 2000 }), { minLength: 0, maxLength: 200, size: "max" }),
        fc.integer({ min: 1, max: 0x7fff_ffff }),
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 0, max: 20 }),
        async (sizes, seed, lossPercent, duplicatePercent) => {
          const messages = sizes.map((n, i) => new Uint8Array(n).fill(i & 0xff));
          const result = await run({
            messages,
            seed,
            lossPercent,
            duplicatePercent,
            maxFrameBytes: 600,
            budgetBytes: 4096,
          });
          expect(result.violations).toEqual([]);
          expect(result.ended, "ended").toBe(true);
          if (lossPercent === 0) expect(result.acknowledged, "acknowledged").toBe(true);
          const hex = (m: Uint8Array) => Buffer.from(m).toString("hex");
          expect(result.received.map(hex)).toEqual(messages.map(hex));
          expect(result.budget.inUse).toBe(0);
        },
      ),
      { numRuns: 40 },
    );
  }, 60_000);

  it("delivers large chunked messages that reserve their room step by step in a tight budget, under loss and reordering", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 400_000 }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 0x7fff_ffff }),
        fc.integer({ min: 0, max: 10 }),
        async (sizes, seed, lossPercent) => {
          const messages = sizes.map((n, i) => new Uint8Array(n).fill(i & 0xff));
          const result = await run({
            messages,
            seed,
            lossPercent,
            duplicatePercent: 5,
            maxFrameBytes: 16 * 1024,
            // Room for one largest message, and another call holding half of it now and then.
            budgetBytes: 600_000,
          });
          expect(result.violations).toEqual([]);
          expect(result.ended, "ended").toBe(true);
          const same = result.received.every((m, i) => Buffer.compare(m, messages[i]!) === 0);
          expect(result.received.length).toBe(messages.length);
          expect(same).toBe(true);
          expect(result.budget.inUse).toBe(0);
        },
      ),
      { numRuns: 15 },
    );
  }, 60_000);

  it("fails a message over the limit with RESOURCE_EXHAUSTED, inline as well as chunked", async () => {
    for (const size of [100, 5000]) {
      const violations: ConnectError[] = [];
      const receiver = new FrameReceiver(
        64,
        { bytes: 50, name: "the transport's maxMessageBytes" },
        { event: () => {}, violation: (e) => violations.push(e), grant: () => {} },
      );
      const sender = new FrameSender(
        1,
        {
          publish: (frame) => receiver.accept(decodeFrame(frame) as CallFrame),
          maxFrameBytes: () => 1000,
        },
        64,
      );
      await sender.sendMessage(new Uint8Array(size), { signal: new AbortController().signal });
      expect(violations.map((v) => v.code)).toEqual([Code.ResourceExhausted]);
      expect(violations[0]?.rawMessage).toContain(
        `a message of ${size} bytes exceeds the transport's maxMessageBytes (50 bytes)`,
      );
    }
  });
});
