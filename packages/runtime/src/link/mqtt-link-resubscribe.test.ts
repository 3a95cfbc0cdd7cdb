/**
 * A broker may resume a session ("session present") without a
 * subscription it had: NATS's MQTT, when a node dies, restores a client's
 * session on another node but cannot always make the JetStream consumer
 * behind each subscription (a JetStream leader is being elected), drops the
 * subscription with a log line and sends CONNACK with the session present
 * all the same (test/cluster.test.ts). A server's request subscription lost
 * that way leaves it deaf while it announces itself online. The link
 * subscribes to its filters again at every reconnect, and again later when
 * the broker refuses. Played here on the embedded broker, whose
 * `authorizeSubscribe` hook also sees the subscriptions it restores from a
 * session: refusing them loses them as NATS does.
 *
 * And a SUBSCRIBE the connection dropped before its SUBACK is sent again
 * once the connection is back, although MQTT.js keeps such a filter on its
 * books as subscribed, and a resumed session does not have it.
 */
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { startEmbeddedBroker } from "../broker/embedded-broker.js";
import { MqttLink } from "./mqtt-link.js";

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (closers.length > 0) await closers.pop()?.();
});

/** A broker that refuses the next `refusals.count` subscriptions of `filter`. */
async function brokerLosing(filter: string) {
  const refusals = { count: 0 };
  const broker = await startEmbeddedBroker({
    authorizeSubscribe: (_client, f) => {
      if (f !== filter) return true;
      if (refusals.count === 0) return true;
      refusals.count--;
      return false;
    },
  });
  closers.push(() => broker.close());
  return { broker, refusals };
}

/** Counts what the link routes on `topic`; `next()` resolves at the next one. */
function inbox(link: MqttLink, topic: string) {
  let count = 0;
  let wake: (() => void) | undefined;
  link.routeExact(topic, () => {
    count++;
    wake?.();
  });
  return {
    get count() {
      return count;
    },
    next: () => new Promise<void>((resolve) => (wake = resolve)),
  };
}

/**
 * Drops the link's connection and resolves once it is back (CONNACK
 * handled), with the CONNACK's session present flag.
 */
async function reconnect(link: MqttLink): Promise<boolean> {
  const back = new Promise<boolean>((resolve) =>
    link.client.once("connect", (connack) => resolve(connack.sessionPresent)),
  );
  link.client.stream.destroy();
  return back;
}

/**
 * Publishes on `topic` until the link receives one (each attempt waits for
 * a delivery at most 200 ms); the number of attempts, or -1 after 50.
 */
async function delivered(link: MqttLink, url: string, topic: string): Promise<number> {
  const received = inbox(link, topic);
  const publisher = await connectAsync(url, { reconnectPeriod: 0 });
  try {
    for (let attempt = 1; attempt <= 50; attempt++) {
      const next = received.next();
      await publisher.publishAsync(topic, `m${attempt}`, { qos: 1 });
      await Promise.race([next, new Promise((r) => setTimeout(r, 200))]);
      if (received.count > 0) return attempt;
    }
    return -1;
  } finally {
    await publisher.endAsync();
  }
}

describe("MqttLink after a reconnect", () => {
  it("subscribes again when the resumed session lost a subscription", async () => {
    const filter = "lost/#";
    const { broker, refusals } = await brokerLosing(filter);
    const link = MqttLink.acquire({ url: broker.url, clientId: "resub-1", reconnectPeriod: 50 });
    closers.push(() => link.release());
    await link.connected();
    await link.subscribe(filter);
    // The first connection of a process is clean; its first reconnect makes
    // the session that later reconnects resume.
    await reconnect(link);
    await delivered(link, broker.url, "lost/0");
    // The broker restores the session without the subscription.
    refusals.count = 1;
    expect(await reconnect(link), "session present").toBe(true);
    // The first publish after the resubscription's SUBACK arrives.
    const attempts = await delivered(link, broker.url, "lost/1");
    expect({ attempts: attempts > 0, refusals: refusals.count }).toEqual({
      attempts: true,
      refusals: 0,
    });
  });

  it("asks again while the broker keeps refusing the resubscription", async () => {
    const filter = "refused/#";
    const { broker, refusals } = await brokerLosing(filter);
    const link = MqttLink.acquire({ url: broker.url, clientId: "resub-2", reconnectPeriod: 50 });
    closers.push(() => link.release());
    await link.connected();
    await link.subscribe(filter);
    await reconnect(link);
    await delivered(link, broker.url, "refused/0");
    // The restored subscription and the first two resubscriptions are refused.
    refusals.count = 3;
    expect(await reconnect(link), "session present").toBe(true);
    const attempts = await delivered(link, broker.url, "refused/1");
    expect({ delivered: attempts > 0, refusalsLeft: refusals.count }).toEqual({
      delivered: true,
      refusalsLeft: 0,
    });
  });

  it("sends a SUBSCRIBE that a drop cut off before its SUBACK again, into the resumed session", async () => {
    const filter = "cut/#";
    // The broker holds the SUBSCRIBE until the test lets go, then refuses
    // it: the connection that sent it is gone by then.
    let held: ((allow: boolean) => void) | undefined;
    let arrived: () => void = () => {};
    const subscribeArrived = new Promise<void>((resolve) => (arrived = resolve));
    const broker = await startEmbeddedBroker({
      authorizeSubscribe: (_client, f) => {
        if (f !== filter || held !== undefined) return true;
        arrived();
        return new Promise<boolean>((resolve) => {
          held = resolve;
        });
      },
    });
    closers.push(() => broker.close());
    const link = MqttLink.acquire({ url: broker.url, clientId: "resub-3", reconnectPeriod: 50 });
    closers.push(() => link.release());
    await link.connected();
    // A session that later reconnects resume (the first connection is
    // clean; Aedes keeps a session only with a subscription in it).
    await link.subscribe("kept/#");
    await reconnect(link);
    const granted = link.subscribe(filter);
    await subscribeArrived;
    const closed = new Promise<void>((resolve) => link.client.once("close", () => resolve()));
    const back = reconnect(link);
    await closed;
    held?.(false);
    expect(await back, "session present").toBe(true);
    await granted;
    expect(await delivered(link, broker.url, "cut/1")).toBeGreaterThan(0);
  });
});
