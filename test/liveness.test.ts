/**
 * Heartbeats: a caller that vanishes has its calls cancelled on the server;
 * a server that lost a call (crash and restart) tells the caller at once.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createMqttServer } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import {
  type CallFrame,
  decodeCallFrames,
  encodeFrame,
} from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
  untilAborted,
} from "./support/rpc-fixture.js";

forEachBroker((target) => {
  describe("liveness", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    for (const { heartbeatMs, says, what } of [
      { heartbeatMs: 100, says: "no heartbeat from the caller", what: "3 heartbeat intervals" },
      { heartbeatMs: 0, says: "(callIdleTimeoutMs)", what: "callIdleTimeoutMs, no heartbeats" },
    ]) {
      it(`ends the call of a caller that went silent with UNAVAILABLE (${what} + 1 s sweep)`, async () => {
        const serverId = uniqueServerId("silent");
        const aborted = deferred<unknown>();
        const server = await startServer(closer, target, { serverId, callIdleTimeoutMs: 300 });
        server.service(TestService, {
          async *fullDuplexCall(_requests, ctx) {
            yield await untilAborted(ctx.signal, aborted);
          },
        });
        // A caller that opens a stream (promising pings every 100 ms, or none), then vanishes.
        const raw = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(),
        );
        // The caller is told, on its reply topic, how the call ended.
        const replies: CallFrame[] = [];
        const ended = deferred();
        raw.on("message", (_topic, payload) => {
          for (const frame of decodeCallFrames(payload)) {
            replies.push(frame);
            if (frame.kind.case === "end") ended.resolve();
          }
        });
        await raw.subscribeAsync(
          new TopicScheme().replyTopic(raw.options.clientId ?? "", serverId),
          {
            qos: 1,
          },
        );
        const topic = new TopicScheme().requestTopic(
          serverId,
          TestService.typeName,
          "FullDuplexCall",
          raw.options.clientId ?? "",
        );
        await raw.publishAsync(
          topic,
          Buffer.from(
            encodeFrame({ callId: 5, seq: 0, kind: { case: "open", value: { heartbeatMs } } }),
          ),
          { qos: 1 },
        );
        const reason = ConnectError.from(await aborted.promise);
        expect(reason.code).toBe(Code.Unavailable);
        expect(reason.rawMessage).toContain(says);
        await ended.promise;
        const end = replies.find((f) => f.kind.case === "end");
        expect(end?.callId).toBe(5);
        expect(end?.kind.case === "end" && end.kind.value.status?.code).toBe(Code.Unavailable);
      });
    }

    it("a server that restarted and lost the call fails it with UNAVAILABLE as soon as its new incarnation announces itself", async () => {
      const serverId = uniqueServerId("restart");
      const clientId = `srv-${Math.random().toString(36).slice(2, 10)}`;
      const first = await connectAsync(target.url, { ...target.mqttOptions, clientId });
      const crashed = await createMqttServer({
        mqtt: first,
        serverId,
        shutdownTimeoutMs: 0,
        logger: { warn: () => {} },
      });
      crashed.service(TestService, {
        async *streamingOutputCall(_req, ctx) {
          yield { payload: { body: new Uint8Array(1) } };
          await new Promise((_resolve, reject) =>
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)),
          );
        },
      });
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, heartbeatMs: 100 }),
      );
      const it = client.streamingOutputCall({}, { timeoutMs: 60_000 })[Symbol.asyncIterator]();
      expect((await it.next()).done).toBe(false);
      // Crash: the connection goes away without a word, then the server comes back with no memory.
      await first.endAsync(true);
      await crashed.close();
      const restarted = await startServer(closer, target, {
        serverId,
        mqtt: mqttOptions(target, clientId),
      });
      restarted.service(TestService, {});
      const err = await it.next().catch((e: unknown) => ConnectError.from(e));
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.Unavailable);
      expect((err as ConnectError).rawMessage).toContain(
        "restarted while the call was in progress",
      );
    });

    it("a call whose Open the broker lost is sent again when its heartbeat finds the server unaware", async () => {
      const serverId = uniqueServerId("lostopen");
      const server = await startServer(closer, target, { serverId });
      let runs = 0;
      server.service(TestService, {
        emptyCall() {
          runs++;
          return {};
        },
      });
      const transport = startTransport(closer, target, { serverId, heartbeatMs: 100 });
      const client = createClient(TestService, transport);
      await client.emptyCall({});
      // Lose the next Open on its way: the server does not see it.
      const internals = server as unknown as {
        onRequest(topic: string, payload: Uint8Array): void;
      };
      const original = internals.onRequest.bind(server);
      let dropped = 0;
      internals.onRequest = (topic, payload) => {
        if (dropped === 0) {
          dropped++;
          return;
        }
        original(topic, payload);
      };
      await client.emptyCall({}, { timeoutMs: 10_000 });
      expect(dropped).toBe(1);
      expect(runs).toBe(2);
    });
  });
});
