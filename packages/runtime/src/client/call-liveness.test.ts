import type { ConnectError } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Presence_State } from "../gen/mqrpc/v1/wire_pb.js";
import type { MqttLink } from "../link/mqtt-link.js";
import { encodePresence, PresenceBoard } from "../link/presence.js";
import { TopicScheme } from "../wire/topic-scheme.js";
import { CallLiveness } from "./call-liveness.js";
import type { ClientCall } from "./client-call.js";

const GRACE_MS = 1000;

/** Two replicas "a" and "b" of "svc" online, watched through a stand-in link. */
async function replicas() {
  let handler: ((topic: string, payload: Uint8Array) => void) | undefined;
  const link = {
    client: { connected: true, on() {}, off() {} },
    routePrefix(_prefix: string, h: (topic: string, payload: Uint8Array) => void) {
      handler = h;
      return () => {};
    },
    subscribe: () => Promise.resolve(),
    unsubscribe: () => Promise.resolve(),
    refresh() {},
  } as unknown as MqttLink;
  const scheme = new TopicScheme();
  const presence = new PresenceBoard(link, scheme).acquire("svc", 10);
  await presence.ready;
  const announce = (instance: string, state: Presence_State) =>
    handler?.(scheme.presenceTopic("svc", instance), encodePresence(instance, state, true, 7));
  announce("a", Presence_State.ONLINE);
  announce("b", Presence_State.ONLINE);
  const vantage = new FakeVantage();
  const liveness = new CallLiveness(presence, 'server "svc"', GRACE_MS, vantage);
  return { presence, announce, liveness, vantage };
}

/** The caller's link as liveness sees it: current or not, and the resubscription event. */
class FakeVantage {
  subscriptionsCurrent = true;
  subscriptionsCurrentSince = Date.now();
  private listener: (() => void) | undefined;
  onResubscribed(listener: () => void): () => void {
    this.listener = listener;
    return () => {
      this.listener = undefined;
    };
  }
  /** The link dropped. */
  drop(): void {
    this.subscriptionsCurrent = false;
  }
  /** The link is back with its subscriptions. */
  resubscribed(): void {
    this.subscriptionsCurrent = true;
    this.subscriptionsCurrentSince = Date.now();
    this.listener?.();
  }
}

/** A call as CallLiveness sees it; `probed` holds the reasons it was given. */
function call(
  liveness: CallLiveness,
  shape: { claimedBy?: string; openedAt?: number; replicated?: boolean },
) {
  const probed: ConnectError[] = [];
  const fake = {
    boundInstance: shape.claimedBy,
    awaitsReplica: shape.claimedBy === undefined && (shape.replicated ?? true),
    openedAt: shape.openedAt ?? Date.now(),
    incarnation: shape.claimedBy === undefined ? undefined : 7,
    probe: (reason: ConnectError) => probed.push(reason),
  };
  liveness.add(fake as unknown as ClientCall);
  return probed;
}

describe("CallLiveness on a replicated server", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("probes an unclaimed call opened before a replica dropped, once the grace is over", async () => {
    const { announce, liveness } = await replicas();
    const probed = call(liveness, {});
    vi.advanceTimersByTime(10);
    announce("b", Presence_State.DISCONNECTED);
    vi.advanceTimersByTime(GRACE_MS - 1);
    expect(probed).toHaveLength(0);
    vi.advanceTimersByTime(2);
    expect(probed).toHaveLength(1);
    expect(probed[0]?.code).toBe(Code.Unavailable);
    expect(probed[0]?.rawMessage).toMatch(/may or may not have run/);
    liveness.close();
  });

  it("probes at once when the replica closed on purpose", async () => {
    const { announce, liveness } = await replicas();
    const probed = call(liveness, {});
    announce("b", Presence_State.OFFLINE);
    expect(probed).toHaveLength(1);
    liveness.close();
  });

  it("still probes when the replica came back within the grace: what was queued for it is gone with its clean session", async () => {
    const { announce, liveness } = await replicas();
    const probed = call(liveness, {});
    announce("b", Presence_State.DISCONNECTED);
    announce("b", Presence_State.ONLINE);
    vi.advanceTimersByTime(GRACE_MS + 1);
    expect(probed).toHaveLength(1);
    liveness.close();
  });

  it("leaves alone calls opened after the departure, calls a live replica claimed, and calls of a server that is not replicated", async () => {
    const { announce, liveness } = await replicas();
    const claimed = call(liveness, { claimedBy: "a" });
    const plain = call(liveness, { replicated: false });
    announce("b", Presence_State.DISCONNECTED);
    vi.advanceTimersByTime(1);
    const later = call(liveness, {});
    vi.advanceTimersByTime(10 * GRACE_MS);
    announce("a", Presence_State.ONLINE);
    expect({ claimed, plain, later }).toEqual({ claimed: [], plain: [], later: [] });
    liveness.close();
  });

  it("property: an unclaimed call is probed exactly when a replica left at or after its Open, after that replica's grace", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 0, max: 3000 }),
        fc.boolean(),
        async (openAt, leaveAt, closed) => {
          vi.setSystemTime(1_000_000);
          const { announce, liveness } = await replicas();
          const start = Date.now();
          let probed: ConnectError[] = [];
          const events = [
            { at: openAt, run: () => (probed = call(liveness, { openedAt: Date.now() })) },
            {
              at: leaveAt,
              run: () =>
                announce("b", closed ? Presence_State.OFFLINE : Presence_State.DISCONNECTED),
            },
          ].sort((x, y) => x.at - y.at);
          for (const e of events) {
            vi.advanceTimersByTime(start + e.at - Date.now());
            e.run();
          }
          const due = leaveAt + (closed ? 0 : GRACE_MS);
          if (due > 0) vi.advanceTimersByTime(Math.max(0, start + due - 1 - Date.now()));
          // Nothing before the replica's grace is over.
          if (!closed) expect(probed).toHaveLength(0);
          vi.advanceTimersByTime(Math.max(0, start + due + 2 - Date.now()));
          expect(probed.length).toBe(openAt <= leaveAt ? 1 : 0);
          liveness.close();
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe("CallLiveness while the caller's own link is down", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a server's will seen just before the caller's link dropped: the grace counts from when the caller sees again", async () => {
    const { announce, liveness, vantage } = await replicas();
    const probed = call(liveness, { claimedBy: "a" });
    announce("a", Presence_State.DISCONNECTED);
    vantage.drop();
    vi.advanceTimersByTime(10 * GRACE_MS);
    expect(probed).toHaveLength(0);
    vantage.resubscribed();
    vi.advanceTimersByTime(GRACE_MS - 1);
    expect(probed).toHaveLength(0);
    vi.advanceTimersByTime(2);
    expect(probed).toHaveLength(1);
    expect(probed[0]?.rawMessage).toMatch(/went offline/);
    liveness.close();
  });

  it("a server back online by the time the caller sees again keeps its calls", async () => {
    const { announce, liveness, vantage } = await replicas();
    const claimed = call(liveness, { claimedBy: "a" });
    const unclaimed = call(liveness, {});
    announce("a", Presence_State.DISCONNECTED);
    vantage.drop();
    vi.advanceTimersByTime(10 * GRACE_MS);
    announce("a", Presence_State.ONLINE);
    vantage.resubscribed();
    vi.advanceTimersByTime(10 * GRACE_MS);
    expect(claimed).toHaveLength(0);
    // An unclaimed call may have been queued for the replica's old session: still asked.
    expect(unclaimed).toHaveLength(1);
    liveness.close();
  });

  it("decides nothing while the link is down, even on a close", async () => {
    const { announce, liveness, vantage } = await replicas();
    const probed = call(liveness, { claimedBy: "b" });
    vantage.drop();
    announce("b", Presence_State.OFFLINE);
    vi.advanceTimersByTime(10 * GRACE_MS);
    expect(probed).toHaveLength(0);
    vantage.resubscribed();
    expect(probed).toHaveLength(1);
    liveness.close();
  });
});
