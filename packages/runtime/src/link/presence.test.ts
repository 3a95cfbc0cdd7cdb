import { describe, expect, it } from "vitest";
import { Presence_State } from "../gen/mqrpc/v1/wire_pb.js";
import { TopicScheme } from "../wire/topic-scheme.js";
import type { MqttLink } from "./mqtt-link.js";
import { encodePresence, PresenceBoard } from "./presence.js";

/** A watch on a stand-in link; `deliver` plays a presence message to it. */
async function watch() {
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
  const presence = new PresenceBoard(link, scheme).acquire("dev", 10);
  await presence.ready;
  const deliver = (
    state: Presence_State,
    incarnation: number,
    instance = "dev",
    maxCallsPerCaller?: number,
  ) =>
    handler?.(
      scheme.presenceTopic("dev", instance),
      encodePresence(instance, state, maxCallsPerCaller !== undefined, incarnation, {
        ...(maxCallsPerCaller !== undefined ? { maxCallsPerCaller } : {}),
      }),
    );
  return { presence, deliver };
}

describe("PresenceWatch", () => {
  it("ignores a late departure of an earlier run while a later run is online", async () => {
    const { presence, deliver } = await watch();
    deliver(Presence_State.ONLINE, 2);
    deliver(Presence_State.OFFLINE, 1);
    deliver(Presence_State.DISCONNECTED, 1);
    expect(presence.availability).toBe("online");
    expect(presence.incarnationOf("dev")).toBe(2);
  });

  it("ignores a late ONLINE of a run that closed on purpose", async () => {
    const { presence, deliver } = await watch();
    deliver(Presence_State.OFFLINE, 1);
    deliver(Presence_State.ONLINE, 1);
    expect(presence.availability).toBe("offline");
    deliver(Presence_State.ONLINE, 2);
    expect(presence.incarnationOf("dev")).toBe(2);
  });

  it("believes a run that dropped its link and came back, and the departure of the run online", async () => {
    const { presence, deliver } = await watch();
    deliver(Presence_State.ONLINE, 1);
    deliver(Presence_State.DISCONNECTED, 1);
    expect(presence.availability).toBe("offline");
    deliver(Presence_State.ONLINE, 1);
    expect(presence.availability).toBe("online");
    deliver(Presence_State.OFFLINE, 1);
    expect(presence.availability).toBe("offline");
  });
});

/** A board on a stand-in link that records (un)subscriptions; `deliver` plays any presence topic. */
function board() {
  let handler: ((topic: string, payload: Uint8Array) => void) | undefined;
  const subscribed: string[] = [];
  const unsubscribed: string[] = [];
  const link = {
    client: { connected: true, on() {}, off() {} },
    routePrefix(_prefix: string, h: (topic: string, payload: Uint8Array) => void) {
      handler = h;
      return () => {
        handler = undefined;
      };
    },
    subscribe: (filter: string) => {
      subscribed.push(filter);
      return Promise.resolve();
    },
    unsubscribe: (filter: string) => {
      unsubscribed.push(filter);
      return Promise.resolve();
    },
    refresh() {},
  } as unknown as MqttLink;
  const scheme = new TopicScheme();
  const presences = new PresenceBoard(link, scheme);
  const deliver = (serverId: string, instance: string, state?: Presence_State) =>
    handler?.(
      scheme.presenceTopic(serverId, instance),
      state === undefined ? new Uint8Array(0) : encodePresence(instance, state, true, 1),
    );
  return { presences, deliver, subscribed, unsubscribed, handler: () => handler };
}

describe("PresenceBoard", () => {
  it("keeps a replicated server's instances in the order they announced, also when the first goes", async () => {
    const { presences, deliver } = board();
    const svc = presences.acquire("svc.v1", 10);
    await svc.ready;
    for (const instance of ["a", "b", "c"]) deliver("svc.v1", instance, Presence_State.ONLINE);
    expect(svc.onlineInstances()).toEqual(["a", "b", "c"]);
    deliver("svc.v1", "a");
    expect(svc.onlineInstances()).toEqual(["b", "c"]);
    deliver("svc.v1", "c", Presence_State.DISCONNECTED);
    expect(svc.onlineInstances()).toEqual(["b"]);
    expect(svc.stateOf("c")).toBe(Presence_State.DISCONNECTED);
    deliver("svc.v1", "a", Presence_State.ONLINE);
    expect(svc.onlineInstances()).toEqual(["b", "a"]);
    for (const instance of ["b", "c", "a"]) deliver("svc.v1", instance);
    expect(svc.availability).toBe("unknown");
    deliver("svc.v1", "d", Presence_State.ONLINE);
    expect(svc.onlineInstances()).toEqual(["d"]);
    expect(svc.soleInstance).toBeUndefined(); // shared: calls are not bound to one replica
  });

  it("hands each server's presence to its own watch, and drops topics no server id owns", async () => {
    const { presences, deliver, handler } = board();
    const dev = presences.acquire("dev", 10);
    const other = presences.acquire("other", 10);
    await Promise.all([dev.ready, other.ready]);
    deliver("other", "x", Presence_State.ONLINE);
    expect(other.availability).toBe("online");
    expect(dev.availability).toBe("unknown");
    const online = encodePresence("y", Presence_State.ONLINE, false, 1);
    handler()?.("mqrpc/p/dev/y/z", online); // not one level
    handler()?.("mqrpc/p/dev/", online); // no instance
    handler()?.("mqrpc/p/dev", online); // no instance level at all
    handler()?.("mqrpc/p/nobody/y", online);
    expect(dev.availability).toBe("unknown");
  });

  it("shares one watch per server id and stops it with its last share", async () => {
    const { presences, deliver, subscribed, unsubscribed } = board();
    const first = presences.acquire("dev", 10);
    const second = presences.acquire("dev", 10);
    expect(second).toBe(first);
    expect(subscribed).toEqual(["mqrpc/p/dev/+"]);
    await presences.release(first);
    expect(unsubscribed).toEqual([]);
    deliver("dev", "i", Presence_State.ONLINE);
    expect(second.availability).toBe("online");
    await presences.release(second);
    expect(unsubscribed).toEqual(["mqrpc/p/dev/+"]);
    const again = presences.acquire("dev", 10);
    expect(again).not.toBe(first);
    expect(again.availability).toBe("unknown");
    await presences.dispose();
    expect(unsubscribed).toEqual(["mqrpc/p/dev/+", "mqrpc/p/dev/+"]);
  });

  it("limits the calls kept open to what the online instances announce, summed over replicas", async () => {
    const { presence, deliver } = await watch();
    expect(presence.gate.limit).toBe(0);
    deliver(Presence_State.ONLINE, 1, "a", 1150);
    expect(presence.gate.limit).toBe(1150);
    deliver(Presence_State.ONLINE, 2, "b", 100);
    expect(presence.gate.limit).toBe(1250);
    deliver(Presence_State.DISCONNECTED, 2, "b", 100);
    expect(presence.gate.limit).toBe(1150);
    // None online: the last limit stays (calls wait for the server anyway).
    deliver(Presence_State.DISCONNECTED, 1, "a", 1150);
    expect(presence.gate.limit).toBe(1150);
    // An instance that announces none (an older server): no limit.
    deliver(Presence_State.ONLINE, 3, "a", 0);
    deliver(Presence_State.ONLINE, 2, "b", 100);
    expect(presence.gate.limit).toBe(0);
  });
});
