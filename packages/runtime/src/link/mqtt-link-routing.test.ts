import { connect, type IPublishPacket } from "mqtt";
import { describe, expect, it } from "vitest";
import { MqttLink } from "./mqtt-link.js";

/** A link on a client that never connects; `deliver` plays an incoming message. */
function link() {
  const client = connect("mqtt://127.0.0.1:1", { manualConnect: true });
  const routed = MqttLink.acquire(client);
  const deliver = (topic: string) =>
    client.emit("message", topic, Buffer.alloc(0), { topic } as IPublishPacket);
  return { routed, deliver };
}

describe("MqttLink routing", () => {
  it("hands a topic to the longest routed prefix, whatever the order they were routed in, and to its exact route", async () => {
    const { routed, deliver } = link();
    const got: string[] = [];
    const route = (prefix: string) =>
      routed.routePrefix(prefix, (topic) => got.push(`${prefix} ${topic}`));
    const undoShort = route("a/");
    const undoLong = route("a/p/");
    route("a/p/x/");
    routed.routeExact("a/p/x/exact", (topic) => got.push(`exact ${topic}`));
    for (const topic of ["a/c/1", "a/p/1", "a/p/x/1", "a/p/x/exact", "b/1"]) deliver(topic);
    // An exact route and the prefix route covering it both get the message.
    expect(got).toEqual([
      "a/ a/c/1",
      "a/p/ a/p/1",
      "a/p/x/ a/p/x/1",
      "exact a/p/x/exact",
      "a/p/x/ a/p/x/exact",
    ]);
    got.length = 0;
    undoLong();
    undoShort();
    route("a/");
    for (const topic of ["a/p/1", "a/p/x/1"]) deliver(topic);
    expect(got).toEqual(["a/ a/p/1", "a/p/x/ a/p/x/1"]);
    await routed.release();
  });
});
