/**
 * Heartbeats: a caller that vanishes has its calls cancelled on the server;
 * a server that lost a call (crash and restart) tells the caller at once.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createMqttServer } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { encodeFrame } from "../packages/runtime/src/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

forEachBroker((target) => {
  describe("liveness", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("cancels the handler of a caller that went silent (3 heartbeat intervals + 1 s sweep)", async () => {
      const serverId = uniqueServerId("silent");
      const aborted = deferred<unknown>();
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async *fullDuplexCall(_requests, ctx) {
          await new Promise((_r, reject) =>
            ctx.signal.addEventListener("abort", () => {
              aborted.resolve(ctx.signal.reason);
              reject(ctx.signal.reason);
            }),
          );
        },
      });
      // A caller that opens a stream, promises pings every 100 ms, then vanishes.
      const raw = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
        c.endAsync(),
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
          encodeFrame({ callId: 5, seq: 0, kind: { case: "open", value: { heartbeatMs: 100 } } }),
        ),
        { qos: 1 },
      );
      const reason = ConnectError.from(await aborted.promise);
      expect(reason.code).toBe(Code.Canceled);
      expect(reason.rawMessage).toContain("heartbeats");
    });

    it("a server that restarted and lost the call fails it with UNAVAILABLE at the next heartbeat", async () => {
      const serverId = uniqueServerId("restart");
      const clientId = `srv-${Math.random().toString(36).slice(2, 10)}`;
      const first = await connectAsync(target.url, { ...target.mqttOptions, clientId });
      const started = deferred();
      const crashed = await createMqttServer({
        mqtt: first,
        serverId,
        shutdownTimeoutMs: 0,
        logger: { warn: () => {} },
      });
      crashed.service(TestService, {
        unaryCall: (_req, ctx) =>
          new Promise((_resolve, reject) => {
            started.resolve();
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
          }),
      });
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, heartbeatMs: 100 }),
      );
      const call = client
        .unaryCall({}, { timeoutMs: 60_000 })
        .catch((e: unknown) => ConnectError.from(e));
      await started.promise;
      // Crash: the connection goes away without a word, then the server comes back with no memory.
      await first.endAsync(true);
      await crashed.close();
      const restarted = await startServer(closer, target, {
        serverId,
        mqtt: mqttOptions(target, clientId),
      });
      restarted.service(TestService, {});
      const err = await call;
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.Unavailable);
      expect((err as ConnectError).rawMessage).toContain("does not know this call");
    });
  });
});
