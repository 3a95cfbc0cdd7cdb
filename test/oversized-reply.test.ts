/**
 * A reply frame the broker cannot take for its size and that is not
 * chunked (a Headers frame, an End with its metadata) ends the call with
 * RESOURCE_EXHAUSTED in its place (docs/PROTOCOL.md 17.2), so a caller
 * without a deadline is not left waiting for a reply that never comes. On
 * MQTT 5 Mosquitto announces `max_packet_size` in the CONNACK and the link
 * refuses the frame before sending it; on MQTT 3.1.1 the broker closes the
 * connection on it, twice, before the link drops it. Either way the caller
 * gets a small End naming the metadata and the limit, the handler is
 * aborted, its slot is free for the next call, and the End store keeps the
 * replacement End for a caller that missed it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { decodeCallFrames, encodeFrame } from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { type MosquittoBroker, mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import type { BrokerTarget } from "./brokers/targets.js";
import {
  Closer,
  deferred,
  startServer,
  startTransport,
  uniqueServerId,
  untilAborted,
} from "./support/rpc-fixture.js";

const LIMIT = 16_384;
const SERVICE = "oversize.v1.Replies";
const BIG = "h".repeat(40 * 1024);
/** "x-big" and its value: the metadata the message counts. */
const BIG_BYTES = 5 + BIG.length;
/** No deadline: a reply that never comes shows up as this, well before the test timeout. */
const HANG_MS = 10_000;

interface Outcome {
  code: string;
  message: string;
  ms: number;
  messages: number;
}

/** One call without a deadline; "HANG" when nothing ends it within HANG_MS. */
async function call(transport: MqttTransport, method: string): Promise<Outcome> {
  const started = Date.now();
  let messages = 0;
  const work = (async (): Promise<Outcome> => {
    try {
      const res = await transport.rawStream({
        service: SERVICE,
        method,
        message: (async function* () {
          yield new Uint8Array([1, 2, 3]);
        })(),
      });
      for await (const _ of res.message) messages++;
      return { code: "OK", message: "", ms: Date.now() - started, messages };
    } catch (e) {
      const error = ConnectError.from(e);
      return {
        code: Code[error.code],
        message: error.rawMessage,
        ms: Date.now() - started,
        messages,
      };
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<Outcome>((resolve) => {
    timer = setTimeout(
      () => resolve({ code: "HANG", message: "", ms: HANG_MS, messages }),
      HANG_MS,
    );
  });
  try {
    return await Promise.race([work, hang]);
  } finally {
    clearTimeout(timer);
  }
}

describe.runIf(mosquittoAvailable())(
  `a reply frame over Mosquitto's max_packet_size ${LIMIT}`,
  () => {
    let broker: MosquittoBroker;
    beforeAll(async () => {
      broker = await startMosquitto({ extraConfig: `max_packet_size ${LIMIT}` });
    });
    afterAll(() => broker?.stop());

    for (const protocolVersion of [4, 5] as const) {
      describe(`MQTT ${protocolVersion === 4 ? "3.1.1" : "5"}`, () => {
        const closer = new Closer();
        afterEach(() => closer.closeAll());
        const target = (): BrokerTarget => ({
          name: `mosquitto-${protocolVersion}-max-packet-${LIMIT}`,
          kind: "mosquitto",
          url: broker.url,
          mqttOptions: { protocolVersion },
          sharedSubscriptions: true,
          protocolVersion,
        });
        /** What the message says of the limit: announced (MQTT 5), or the refused publish (3.1.1). */
        const limit =
          protocolVersion === 5
            ? `${LIMIT} bytes`
            : "the broker closed the connection on a publish of \\d+ bytes";
        const tooLarge = (parts: string) =>
          new RegExp(
            `^the reply's metadata \\(${BIG_BYTES} bytes of ${parts}\\) exceeds the broker's maximum packet size \\(${limit}\\)$`,
          );

        /**
         * A server with one call slot and no queue (a slot the oversized call
         * kept would refuse the next call) and a transport to it.
         */
        async function serve() {
          const serverId = uniqueServerId("oversize-reply");
          const aborted = deferred<unknown>();
          const warnings: string[] = [];
          await startServer(closer, target(), {
            serverId,
            maxConcurrentCalls: 1,
            maxQueuedCalls: 0,
            logger: { warn: (line) => warnings.push(line) },
            routes: (s) =>
              s.unknownService((_service, method) => {
                switch (method) {
                  case "StreamHeaders":
                    // A Headers frame goes before the message; the handler then waits.
                    return {
                      handler: async function* (requests, ctx) {
                        for await (const _ of requests) {
                        }
                        ctx.responseHeader.set("x-big", BIG);
                        yield new Uint8Array([1]);
                        await untilAborted(ctx.signal, aborted);
                      },
                    };
                  case "UnaryHeaders":
                    // The headers travel in the End, with the response.
                    return {
                      kind: "unary",
                      handler: async function* (requests, ctx) {
                        for await (const _ of requests) {
                        }
                        ctx.responseHeader.set("x-big", BIG);
                        yield new Uint8Array([1]);
                      },
                    };
                  case "Trailers":
                    return {
                      handler: async function* (requests, ctx) {
                        for await (const _ of requests) {
                        }
                        yield new Uint8Array([1]);
                        ctx.responseTrailer.set("x-big", BIG);
                      },
                    };
                  case "TrailersOnly":
                    // The End is the call's first frame.
                    return {
                      // biome-ignore lint/correctness/useYield: a stream without a response message
                      handler: async function* (requests, ctx) {
                        for await (const _ of requests) {
                        }
                        ctx.responseTrailer.set("x-big", BIG);
                      },
                    };
                  case "Echo":
                    return {
                      handler: async function* (requests) {
                        for await (const m of requests) yield m;
                      },
                    };
                  default:
                    return undefined;
                }
              }),
          });
          const transport = startTransport(closer, target(), { serverId });
          return { serverId, transport, aborted, warnings };
        }

        async function expectNextCallWorks(transport: MqttTransport) {
          const next = await call(transport, "Echo");
          expect(next).toMatchObject({ code: "OK", messages: 1 });
        }

        it("40 KiB of response headers in a Headers frame: RESOURCE_EXHAUSTED at once, the handler aborted", async () => {
          const { transport, aborted, warnings } = await serve();
          await expectNextCallWorks(transport);
          const outcome = await call(transport, "StreamHeaders");
          expect(outcome.code).toBe("ResourceExhausted");
          expect(outcome.message).toMatch(tooLarge("response headers"));
          expect(outcome.ms).toBeLessThan(5000);
          const reason = ConnectError.from(await aborted.promise);
          expect(reason.code).toBe(Code.ResourceExhausted);
          expect(reason.rawMessage).toBe(outcome.message);
          expect(warnings.join("\n")).toMatch(
            /ended with RESOURCE_EXHAUSTED: the reply's metadata/,
          );
          await expectNextCallWorks(transport);
          await expectNextCallWorks(transport);
        });

        it("40 KiB of response headers in the End of a unary call", async () => {
          const { transport } = await serve();
          await expectNextCallWorks(transport);
          const outcome = await call(transport, "UnaryHeaders");
          expect(outcome.code).toBe("ResourceExhausted");
          expect(outcome.message).toMatch(tooLarge("response headers"));
          expect(outcome.ms).toBeLessThan(5000);
          await expectNextCallWorks(transport);
        });

        it("40 KiB of response trailers: the messages before arrive, then RESOURCE_EXHAUSTED", async () => {
          const { transport } = await serve();
          await expectNextCallWorks(transport);
          const outcome = await call(transport, "Trailers");
          expect(outcome.code).toBe("ResourceExhausted");
          expect(outcome.message).toMatch(tooLarge("response trailers"));
          expect(outcome.ms).toBeLessThan(5000);
          expect(outcome.messages).toBe(1);
          await expectNextCallWorks(transport);
          await expectNextCallWorks(transport);
        });

        it("the End store keeps the replacement End: a caller that asks again gets it", async () => {
          const { serverId, transport } = await serve();
          // Through the transport first, so that on MQTT 3.1.1 the link knows the limit.
          expect((await call(transport, "TrailersOnly")).code).toBe("ResourceExhausted");
          const raw = closer.add(
            await connectAsync(broker.url, { protocolVersion, reconnectPeriod: 200 }),
            (c) => c.endAsync(true),
          );
          const key = raw.options.clientId ?? "";
          const scheme = new TopicScheme();
          const ends: Uint8Array[] = [];
          raw.on("message", (_topic, payload) => {
            for (const frame of decodeCallFrames(payload))
              if (frame.callId === 5 && frame.kind.case === "end")
                ends.push(new Uint8Array(payload));
          });
          await raw.subscribeAsync(scheme.replyTopic(key, serverId), { qos: 1 });
          const topic = scheme.requestTopic(serverId, SERVICE, "TrailersOnly", key);
          const open = encodeFrame({
            callId: 5,
            seq: 0,
            kind: { case: "open", value: { halfClose: true, window: 64, session: 1 } },
          });
          await raw.publishAsync(topic, Buffer.from(open), { qos: 1 });
          await expect.poll(() => ends.length).toBe(1);
          const [end] = decodeCallFrames(ends[0] as Uint8Array);
          expect(end?.seq).toBe(0);
          if (end?.kind.case !== "end") throw new Error("not an End");
          expect(end.kind.value.status?.code).toBe(Code.ResourceExhausted);
          expect(end.kind.value.status?.message).toMatch(
            /^the reply's metadata \(40965 bytes of response trailers\)/,
          );
          expect(end.kind.value.trailers).toEqual([]);
          expect(end.kind.value.ack).toBe(false);

          const ping = encodeFrame({ callId: 5, kind: { case: "ping", value: {} } });
          await raw.publishAsync(topic, Buffer.from(ping), { qos: 1 });
          await expect.poll(() => ends.length).toBe(2);
          expect(ends[1]).toEqual(ends[0]);
          await expectNextCallWorks(transport);
        });
      });
    }
  },
);
