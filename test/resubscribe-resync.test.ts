/**
 * A caller whose broker refuses its subscriptions again for a while after
 * a reconnect (as NATS does while a cluster elects new leaders) misses the
 * frames sent meanwhile, and its reconnect's follow-up checks are over by
 * the time the subscription is granted. Once it is granted, the caller asks
 * for what it lost at once, rather than at its next heartbeat (a minute
 * here, longer than the test may run).
 */
import { createClient } from "@connectrpc/connect";
import {
  createMqttServer,
  createMqttTransport,
  type EmbeddedBroker,
  startEmbeddedBroker,
} from "@mqrpc/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { interopService } from "./support/interop-service.js";
import { Pushable } from "./support/pushable.js";
import { Closer, uniqueServerId } from "./support/rpc-fixture.js";

/**
 * Refusals of the reply subscription before the broker grants it again:
 * MQTT.js and the link each ask at the reconnect, then the link at 1 s and
 * 3 s, so the grant comes at 7 s, after the reconnect's last follow-up
 * check (3.5 s).
 */
const REFUSALS = 4;

describe("resubscription granted late after a reconnect", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  it("the caller resyncs its calls when its subscriptions are granted again", async () => {
    const callerId = `late-sub-${process.pid}`;
    const replyBase = new TopicScheme().replyBase(callerId);
    let refusing = false;
    let refusals = 0;
    let refused: (() => void) | undefined;
    const broker: EmbeddedBroker = closer.add(
      await startEmbeddedBroker({
        authorizeSubscribe: (client, filter) => {
          if (!refusing || client.clientId !== callerId || !filter.startsWith(replyBase))
            return true;
          if (++refusals >= REFUSALS) refusing = false;
          refused?.();
          return false;
        },
      }),
      (b) => b.close(),
    );
    const serverId = uniqueServerId("late-sub");
    const responses = new Pushable<number>();
    closer.add(
      await createMqttServer({
        serverId,
        mqtt: { url: broker.url, reconnectPeriod: 100 },
        routes: (s) =>
          s.service(TestService, {
            ...interopService,
            async *streamingOutputCall() {
              for await (const size of responses) yield { payload: { body: new Uint8Array(size) } };
            },
          }),
      }),
      (s) => s.close(),
    );
    const proxy = closer.add(await FaultProxy.start(broker.url), (p) => p.close());
    const transport = closer.add(
      createMqttTransport({
        serverId,
        mqtt: { url: proxy.url, clientId: callerId, reconnectPeriod: 100 },
        heartbeatMs: 60_000,
      }),
      (t) => t.close(),
    );
    const stream = createClient(TestService, transport)
      .streamingOutputCall({})
      [Symbol.asyncIterator]();
    responses.push(1);
    expect((await stream.next()).value?.payload?.body.length).toBe(1);

    // The link drops; when it comes back its subscriptions are refused.
    refusing = true;
    const firstRefusal = new Promise<void>((resolve) => {
      refused = resolve;
    });
    proxy.resetAll();
    await firstRefusal;
    // Sent while the caller has no reply subscription: reaches nobody.
    responses.push(2);
    responses.end();
    const second = await stream.next();
    expect(second.value?.payload?.body.length).toBe(2);
    expect(refusals).toBe(REFUSALS);
    expect((await stream.next()).done).toBe(true);
  });
});
