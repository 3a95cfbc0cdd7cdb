/**
 * FrameSender.replaceWithEnd (docs/PROTOCOL.md 17.2): a kept reply frame
 * that no publish can carry is replaced by an End at its seq; what followed
 * it is dropped and nothing sequenced goes out after. A FrameReceiver, as
 * the caller runs it, ends the call with that End even when it holds later
 * frames.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FrameReceiver, type ReceivedEvent } from "../packages/runtime/src/flow/frame-receiver.js";
import { FrameSender, type SignalSource } from "../packages/runtime/src/flow/frame-sender.js";
import { MetadataEntrySchema, StatusSchema } from "../packages/runtime/src/gen/mqrpc/v1/wire_pb.js";
import { type CallFrame, decodeFrame } from "../packages/runtime/src/wire/frame-codec.js";

const LIMIT = 1000;
const signal: SignalSource = { signal: new AbortController().signal };
const big = [
  create(MetadataEntrySchema, { key: "x-big", value: { case: "text", value: "r".repeat(5000) } }),
];
const exhausted = {
  status: create(StatusSchema, { code: Code.ResourceExhausted, message: "too large" }),
  headers: [],
  trailers: [],
};
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function sender() {
  const published: CallFrame[] = [];
  const s = new FrameSender(
    9,
    {
      publish: (frame) => published.push(decodeFrame(frame) as CallFrame),
      maxFrameBytes: () => LIMIT,
    },
    64,
  );
  return { s, published };
}

const headers = (entries = big) =>
  ({
    case: "headers",
    value: { headers: entries, instance: "", window: 0, incarnation: 1 },
  }) as const;

describe("FrameSender.replaceWithEnd", () => {
  it("replaces oversized headers and everything after them with one End at their seq", async () => {
    const { s, published } = sender();
    s.sendControl(headers());
    s.sendMessage(new Uint8Array(10), signal);
    await s.sendEnd({ headers: [], trailers: [] }, undefined, signal);
    expect(published.map((f) => [f.kind.case, f.seq])).toEqual([
      ["headers", 0],
      ["message", 1],
      ["end", 2],
    ]);
    const oversized = s.oversizedFrame(LIMIT);
    expect(oversized?.seq).toBe(0);
    expect(s.oversizedFrame(1 << 20)).toBeUndefined();

    s.replaceWithEnd(0, exhausted);
    const replacement = published[3];
    expect(replacement?.seq).toBe(0);
    expect(replacement?.kind.case === "end" && replacement.kind.value.status?.code).toBe(
      Code.ResourceExhausted,
    );
    expect(replacement?.kind.case === "end" && replacement.kind.value.headers).toEqual([]);
    // Nothing before it is unacknowledged, and it is small: the End store keeps it.
    expect(s.endNeedsAck).toBe(false);
    expect(decodeFrame(s.endFrame as Uint8Array).seq).toBe(0);
    expect(s.unacknowledged).toBe(1);
    expect(s.oversizedFrame(LIMIT)).toBeUndefined();

    // Sealed: later sends publish nothing, and a second replacement does nothing.
    s.sendMessage(new Uint8Array(10), signal);
    s.sendEndNow({ headers: [], trailers: [] });
    await s.sendEnd({ headers: [], trailers: [] }, new Uint8Array(5), signal);
    s.replaceWithEnd(0, exhausted);
    expect(published).toHaveLength(4);
    // A resend request sends the replacement, not the dropped frames.
    s.onCredit(64, 0, true);
    expect(published.slice(4).map((f) => [f.kind.case, f.seq])).toEqual([["end", 0]]);
  });

  it("keeps unacknowledged frames before it, and asks for the End's acknowledgement", () => {
    const { s, published } = sender();
    s.sendMessage(new Uint8Array(10), signal);
    s.sendEndNow({ headers: [], trailers: big });
    expect(s.oversizedFrame(LIMIT)?.seq).toBe(1);
    s.replaceWithEnd(1, exhausted);
    expect(published.map((f) => [f.kind.case, f.seq])).toEqual([
      ["message", 0],
      ["end", 1],
      ["end", 1],
    ]);
    expect(s.endNeedsAck).toBe(true);
    const end = published[2];
    expect(end?.kind.case === "end" && end.kind.value.ack).toBe(true);
    s.onCredit(64, 2, false);
    expect(s.allAcknowledged).toBe(true);
  });

  it("drops a batch waiting for the end of the turn", async () => {
    const { s, published } = sender();
    s.enableBatching(0);
    s.sendControl(headers());
    expect(s.sendMessage(new Uint8Array(10), signal)).toBeUndefined();
    s.replaceWithEnd(0, exhausted);
    await turn();
    expect(published.map((f) => [f.kind.case, f.seq])).toEqual([
      ["headers", 0],
      ["end", 0],
    ]);
  });

  it("ends the caller's receiver with the replacement although later frames came first", () => {
    const { s, published } = sender();
    s.sendControl(headers());
    s.sendMessage(new Uint8Array(10), signal);
    s.replaceWithEnd(0, exhausted);
    const events: ReceivedEvent[] = [];
    const receiver: FrameReceiver = new FrameReceiver(
      64,
      { bytes: 1 << 20, name: "maxMessageBytes" },
      {
        event: (e) => {
          events.push(e);
          if (e.type === "end") receiver.dispose();
        },
        violation: (e) => {
          throw e;
        },
        grant: () => {},
      },
    );
    // The broker refused the headers: the caller gets the message, then the End.
    receiver.accept(published[1] as CallFrame);
    receiver.accept(published[2] as CallFrame);
    expect(events.map((e) => e.type)).toEqual(["end"]);
    const end = events[0];
    expect(end?.type === "end" && end.end.status?.code).toBe(Code.ResourceExhausted);
  });
});
