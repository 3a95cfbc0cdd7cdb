import { describe, expect, it } from "vitest";
import { Presence_State } from "./gen/mqrpc/v1/wire_pb.js";
import type { MqttLink } from "./mqtt-link.js";
import { encodePresence, PresenceWatch } from "./presence.js";
import { TopicScheme } from "./topic-scheme.js";

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
  const presence = new PresenceWatch(link, scheme, "dev", 10);
  await presence.start();
  const deliver = (state: Presence_State, incarnation: number, instance = "dev") =>
    handler?.(
      scheme.presenceTopic("dev", instance),
      encodePresence(instance, state, false, incarnation),
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
