/**
 * server.close() with calls whose End went out but was never acknowledged
 * (a caller that vanished after its call's last response): the End's
 * acknowledgement gets a short grace, not the whole shutdownTimeoutMs,
 * which here is longer than the test may run.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { createMqttServer } from "../packages/runtime/src/index.js";
import { decodeCallFrames, encodeFrame } from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forBrokersWhere } from "./brokers/targets.js";
import { StreamingOutputCallRequestSchema, TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, mqttOptions, uniqueServerId } from "./support/rpc-fixture.js";

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("close with Ends nobody acknowledges", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("close() does not wait shutdownTimeoutMs for a caller that went away", async () => {
        const serverId = uniqueServerId("drain-close");
        const server = await createMqttServer({
          serverId,
          mqtt: mqttOptions(target),
          shutdownTimeoutMs: 120_000,
          routes: (s) => s.service(TestService, interopService),
        });
        let closed = false;
        closer.add(server, (s) => (closed ? undefined : s.close()));
        // A caller by hand that takes the responses and never acknowledges them.
        const raw = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(true),
        );
        const key = raw.options.clientId ?? "";
        const scheme = new TopicScheme();
        let ended = false;
        raw.on("message", (_t, payload) => {
          for (const frame of decodeCallFrames(payload))
            if (frame.kind.case === "end") ended = true;
        });
        await raw.subscribeAsync(scheme.replyTopic(key, serverId), { qos: 1 });
        const request = create(StreamingOutputCallRequestSchema, {
          responseParameters: [{ size: 10 }, { size: 10 }, { size: 10 }],
        });
        const open = encodeFrame({
          callId: 7,
          seq: 0,
          kind: {
            case: "open",
            value: {
              message: toBinary(StreamingOutputCallRequestSchema, request),
              halfClose: true,
              window: 64,
              session: 1,
            },
          },
        });
        await raw.publishAsync(
          scheme.requestTopic(serverId, TestService.typeName, "StreamingOutputCall", key),
          Buffer.from(open),
          { qos: 1 },
        );
        await expect.poll(() => ended).toBe(true);
        await server.close();
        closed = true;
      });
    });
  },
);
