/**
 * A call's deadline on the client, with fake timers (which wrap delays of
 * 2³¹ ms and more to 1 ms, as Node does): the Open frame's uint32
 * `timeout_ms` and the client's own timer, for deadlines up to gRPC's
 * largest (99999999H). A stand-in link records the frames published.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_WINDOW } from "../flow/flow-credit.js";
import { ReassemblyBudget } from "../flow/reassembly-budget.js";
import type { MqttLink } from "../link/mqtt-link.js";
import { defaultMethodSettings } from "../method-settings.js";
import { decodeCallFrames } from "../wire/frame-codec.js";
import { MAX_TIMER_MS } from "../wire/limits.js";
import { TopicScheme } from "../wire/topic-scheme.js";
import { ClientCall } from "./client-call.js";
import type { ReplyRouter } from "./reply-router.js";

const NOW = 1_700_000_000_000;
const DAY = 86_400_000;
const YEAR = 365 * DAY;

/** A call with `timeoutMs` from now, opened at once; what it published, and how it ended. */
function startCall(timeoutMs: number | undefined) {
  const frames: Uint8Array[] = [];
  const link = {
    brokerMaxPacketSize: undefined,
    subscriptionsCurrent: true,
    sendFrame: (_topic: string, _callId: number, frame: Uint8Array) => frames.push(frame),
    publish: (_topic: string, frame: Uint8Array) => {
      frames.push(frame);
      return Promise.resolve();
    },
  } as unknown as MqttLink;
  const router = {
    session: 1,
    clientKey: "client",
    register: () => 1,
    unregister() {},
  } as unknown as ReplyRouter;
  const call = new ClientCall({
    link,
    router,
    scheme: new TopicScheme(),
    serverId: "svc",
    method: { parent: { typeName: "test.v1.Svc" }, name: "M" },
    topic: "req",
    replyTopic: "reply",
    signal: undefined,
    deadline: timeoutMs === undefined ? undefined : Date.now() + timeoutMs,
    unary: true,
    header: new Headers(),
    maxMessage: { bytes: 1024, name: "test" },
    maxPublishBytes: 128 * 1024,
    window: DEFAULT_WINDOW,
    settings: defaultMethodSettings,
    reassemblyBudget: new ReassemblyBudget(1 << 20),
    heartbeatMs: 0,
    sharedInstances: undefined,
    instance: undefined,
    incarnation: undefined,
  });
  let error: ConnectError | undefined;
  call.done.catch((e: unknown) => {
    error = ConnectError.from(e);
  });
  call.open(new Uint8Array([1]), true);
  const openTimeout = () => {
    const frame = frames.flatMap((f) => decodeCallFrames(f)).find((f) => f.kind.case === "open");
    return frame?.kind.case === "open" ? frame.kind.value.timeoutMs : undefined;
  };
  /** The cancel frames the call sent, by code. */
  const cancels = () =>
    frames
      .flatMap((f) => decodeCallFrames(f))
      .flatMap((f) => (f.kind.case === "cancel" ? [f.kind.value.code] : []));
  return { call, openTimeout, cancels, error: () => error };
}

describe("a client call's deadline", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: NOW });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("no deadline: Open timeout 0, no timer", () => {
    const c = startCall(undefined);
    expect(c.openTimeout()).toBe(0);
    vi.advanceTimersByTime(10 * YEAR);
    expect(c.call.over).toBe(false);
  });

  for (const [label, ms, field] of [
    ["5 s", 5000, 5000],
    ["2^31-1 ms", 2 ** 31 - 1, 2 ** 31 - 1],
    ["2^31 ms", 2 ** 31, 0],
    ["30 days", 30 * DAY, 0],
    ["2^32 ms", 2 ** 32, 0],
    ["1 year", YEAR, 0],
  ] as const) {
    it(`${label}: Open timeout ${field}; DEADLINE_EXCEEDED and Cancel{4} exactly at the deadline`, async () => {
      const c = startCall(ms);
      expect(c.openTimeout()).toBe(field);
      vi.advanceTimersByTime(ms - 1);
      expect(c.call.over).toBe(false);
      vi.advanceTimersByTime(1);
      expect(c.call.over).toBe(true);
      await Promise.resolve();
      expect(c.error()?.code).toBe(Code.DeadlineExceeded);
      expect(c.cancels()).toEqual([Code.DeadlineExceeded]);
      // Said once more a second later (PROTOCOL.md 13), then nothing is left.
      vi.advanceTimersByTime(1000);
      expect(c.cancels()).toEqual([Code.DeadlineExceeded, Code.DeadlineExceeded]);
      expect(vi.getTimerCount()).toBe(0);
    });
  }

  it("gRPC's largest timeout (99999999H) is open 24.8 days and more later", () => {
    const c = startCall(99_999_999 * 3_600_000);
    expect(c.openTimeout()).toBe(0);
    vi.advanceTimersByTime(3 * MAX_TIMER_MS);
    expect(c.call.over).toBe(false);
    c.call.abandon(new ConnectError("done", Code.Canceled));
    vi.advanceTimersByTime(1000);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a fractional timeout is rounded up on the wire and never fires early", () => {
    const c = startCall(2500.4);
    expect(c.openTimeout()).toBe(2501);
    vi.advanceTimersByTime(2500);
    expect(c.call.over).toBe(false);
    vi.advanceTimersByTime(1);
    expect(c.call.over).toBe(true);
  });

  it("a deadline already passed ends the call before anything is sent", async () => {
    const c = startCall(0);
    expect(c.call.over).toBe(true);
    expect(c.openTimeout()).toBeUndefined();
    await Promise.resolve();
    expect(c.error()?.code).toBe(Code.DeadlineExceeded);
  });
});
