/**
 * Nothing a hostile or broken peer publishes crashes a server or a client,
 * grows memory without bound, or fails another caller's call. Frames are
 * random bytes and mutations of valid frames (fast-check, fixed seed), sent
 * onto a server's request topics and onto a caller's reply topic while
 * legitimate calls run. Limits answer RESOURCE_EXHAUSTED.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { MqttServerOptions } from "@mqrpc/runtime";
import fc from "fast-check";
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import {
  decodeFrame,
  encodeFrame,
  type FrameInit,
} from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

const FUZZ_FRAMES = 100_000;
/**
 * A client id of its own: transports given equal options share one
 * connection, and so one client key (one caller to the server's limits).
 */
const ownClientId = () => `caller-${Math.random().toString(36).slice(2, 10)}`;

/** Valid frames of every kind, the seeds that mutations start from. */
function seeds(): Uint8Array[] {
  const inits: FrameInit[] = [
    {
      callId: 3,
      seq: 0,
      kind: {
        case: "open",
        value: { message: new Uint8Array([8, 1]), halfClose: true, timeoutMs: 500 },
      },
    },
    { callId: 4, seq: 0, kind: { case: "open", value: { window: 3, heartbeatMs: 50 } } },
    { callId: 4, seq: 1, kind: { case: "message", value: new Uint8Array([10, 2, 1, 2]) } },
    {
      callId: 4,
      seq: 2,
      kind: { case: "batch", value: { messages: [new Uint8Array([1]), new Uint8Array(0)] } },
    },
    {
      callId: 4,
      seq: 3,
      kind: { case: "chunk", value: { totalSize: 1 << 30, offset: 0, data: new Uint8Array(64) } },
    },
    { callId: 4, seq: 4, kind: { case: "halfClose", value: {} } },
    { callId: 5, seq: 0, kind: { case: "end", value: { status: { code: 2, message: "x" } } } },
    { callId: 5, seq: 0, kind: { case: "headers", value: { instance: "x", window: 1 } } },
    {
      callId: 6,
      kind: { case: "credit", value: { limit: 4_000_000_000, received: 0, resend: true } },
    },
    { callId: 6, kind: { case: "cancel", value: { code: 4 } } },
    { callId: 7, kind: { case: "ping", value: {} } },
    { callId: 7, kind: { case: "pong", value: {} } },
  ];
  return inits.map(encodeFrame);
}

/**
 * The adversarial frames of issue 11, each just past a bound: a huge
 * announced window and resend requests, first chunks announcing the largest
 * message and more, frames far ahead of a gap, and one over each decoding
 * cap (1024 batch messages, metadata entries, coalesced frames). Sent
 * as they are and lightly mutated, more rarely than the seeds (they are
 * larger).
 */
function adversarial(): Uint8Array[] {
  const inits: FrameInit[] = [
    { callId: 8, seq: 0, kind: { case: "open", value: { window: 0xffff_ffff, heartbeatMs: 0 } } },
    {
      callId: 8,
      kind: { case: "credit", value: { limit: 0xffff_ffff, received: 0, resend: true } },
    },
    {
      callId: 8,
      seq: 1,
      kind: {
        case: "chunk",
        value: { totalSize: 4 * 1024 * 1024, offset: 0, data: new Uint8Array(1400) },
      },
    },
    {
      callId: 8,
      seq: 1,
      kind: {
        case: "chunk",
        value: { totalSize: 4 * 1024 * 1024 + 1, offset: 0, data: new Uint8Array(100) },
      },
    },
    { callId: 8, seq: 60, kind: { case: "message", value: new Uint8Array(4096) } },
    {
      callId: 8,
      seq: 1,
      kind: {
        case: "batch",
        value: { messages: Array.from({ length: 1025 }, () => new Uint8Array(0)) },
      },
    },
    {
      callId: 9,
      seq: 0,
      kind: {
        case: "open",
        value: {
          headers: Array.from({ length: 1025 }, () => ({
            key: "x",
            value: { case: "text" as const, value: "" },
          })),
        },
      },
    },
    {
      callId: 0,
      kind: {
        case: "coalesced",
        value: {
          frames: Array.from({ length: 1025 }, (_, i) => ({
            version: 2,
            callId: 100 + i,
            seq: 0,
            kind: { case: "open" as const, value: {} },
          })),
        },
      },
    },
  ];
  return inits.map(encodeFrame);
}

/**
 * Random payloads: pure noise, valid frames with bytes flipped, cut or
 * repeated, and now and then an adversarial frame, as it is or mutated.
 */
function fuzzPayloads(count: number): Uint8Array[] {
  const valid = seeds();
  const hostile = adversarial();
  const mutated = fc
    .tuple(
      fc.constantFrom(...valid),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.nat(),
      fc.boolean(),
    )
    .map(([seed, flips, cut, twice]) => {
      const out = Uint8Array.from(twice ? [...seed, ...seed] : seed);
      for (const [at, value] of flips) out[at % out.length] = value;
      return cut % 5 === 0 ? out.subarray(0, cut % (out.length + 1)) : out;
    });
  const noise = fc.uint8Array({ maxLength: 64 });
  const attacks = fc
    .tuple(fc.constantFrom(...hostile), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean())
    .map(([frame, at, value, flip]) => {
      if (!flip) return frame;
      const out = Uint8Array.from(frame);
      out[at % out.length] = value;
      return out;
    });
  return fc.sample(
    fc.oneof(
      { arbitrary: mutated, weight: 30 },
      { arbitrary: noise, weight: 10 },
      { arbitrary: attacks, weight: 1 },
    ),
    { numRuns: count, seed: 42 },
  );
}

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("hostile input", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it(`${FUZZ_FRAMES.toLocaleString("en")} fuzzed frames on request and reply topics: no crash, bounded memory, legit calls succeed`, async () => {
        const serverId = uniqueServerId("fuzz");
        let delivered = 0;
        const server = await startServer(closer, target, {
          serverId,
          maxCallsPerClient: 50,
          shutdownTimeoutMs: 0,
          logger: { warn: () => {} },
        });
        server.service(TestService, interopService);
        const internals = server as unknown as {
          onRequest(topic: string, payload: Uint8Array): void;
        };
        const onRequest = internals.onRequest.bind(server);
        internals.onRequest = (topic, payload) => {
          delivered++;
          onRequest(topic, payload);
        };
        const legitKey = `legit-${Math.random().toString(36).slice(2, 8)}`;
        const client = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, legitKey) }),
        );
        const attacker = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(),
        );
        const scheme = new TopicScheme();
        const topics = [
          ...["EmptyCall", "UnaryCall", "StreamingInputCall", "FullDuplexCall", "Nope"].flatMap(
            (m) =>
              ["fuzzer-1", "fuzzer-2", "fuzzer 3"].map((key) =>
                scheme.requestTopic(serverId, TestService.typeName, m, key),
              ),
          ),
          scheme.requestTopic(
            serverId,
            TestService.typeName,
            "EmptyCall",
            "fuzzer-1",
            "no-such-instance",
          ),
          `${scheme.requestBase(serverId)}bad.level/x/y`,
          scheme.replyTopic(legitKey, serverId),
        ];
        const payloads = fuzzPayloads(FUZZ_FRAMES);

        const base = process.memoryUsage().heapUsed;
        let peak = base;
        const sampler = setInterval(() => {
          peak = Math.max(peak, process.memoryUsage().heapUsed);
        }, 50);
        let legitCalls = 0;
        const fuzzDone = deferred();
        const legit = (async () => {
          let done = false;
          void fuzzDone.promise.then(() => {
            done = true;
          });
          while (!done || legitCalls < 50) {
            const n = legitCalls++;
            const res = await client.unaryCall({
              responseSize: n % 100,
              payload: { body: new Uint8Array(n % 300) },
            });
            expect(res.payload?.body.byteLength).toBe(n % 100);
            if (n % 10 === 0) {
              let count = 0;
              for await (const _ of client.streamingOutputCall({
                responseParameters: [{ size: 3 }, { size: 4 }],
              }))
                count++;
              expect(count).toBe(2);
            }
          }
        })();
        try {
          for (let i = 0; i < payloads.length; i += 500) {
            await Promise.all(
              payloads
                .slice(i, i + 500)
                .map((payload, j) =>
                  attacker.publishAsync(
                    topics[(i + j) % topics.length] as string,
                    Buffer.from(payload),
                    { qos: 1 },
                  ),
                ),
            );
          }
        } finally {
          fuzzDone.resolve();
        }
        await legit;
        clearInterval(sampler);
        const growthMiB = (peak - base) / (1024 * 1024);
        console.log(
          `fuzz on ${target.name}: ${payloads.length} frames published, ${delivered} reached the server, ` +
            `${legitCalls} legitimate calls succeeded, peak heap growth ${growthMiB.toFixed(1)} MiB`,
        );
        expect(legitCalls).toBeGreaterThanOrEqual(50);
        expect(delivered).toBeGreaterThan(payloads.length * 0.8);
        expect(growthMiB).toBeLessThan(256);
      }, 180_000);
    });
  },
);

forBrokersWhere(
  (t) => t.kind === "aedes",
  (target) => {
    describe("limits answer RESOURCE_EXHAUSTED", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("a second Open inside a running call fails it instead of running the handler again", async () => {
        const serverId = uniqueServerId("reopen");
        let runs = 0;
        const server = await startServer(closer, target, { serverId, logger: { warn: () => {} } });
        server.service(TestService, {
          async streamingInputCall(requests) {
            runs++;
            for await (const _ of requests) {
              // drain
            }
            return {};
          },
        });
        const raw = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(),
        );
        const key = raw.options.clientId ?? "";
        const replies: Uint8Array[] = [];
        const scheme = new TopicScheme();
        raw.on("message", (_t, payload) => replies.push(payload));
        await raw.subscribeAsync(scheme.replyTopic(key, serverId), { qos: 1 });
        const topic = scheme.requestTopic(
          serverId,
          TestService.typeName,
          "StreamingInputCall",
          key,
        );
        const open = (seq: number) =>
          Buffer.from(encodeFrame({ callId: 9, seq, kind: { case: "open", value: {} } }));
        await raw.publishAsync(topic, open(0), { qos: 1 });
        await raw.publishAsync(topic, open(1), { qos: 1 });
        await expect.poll(() => replies.length).toBe(1);
        const end = decodeFrame(replies[0] as Uint8Array);
        expect(end.kind.case).toBe("end");
        expect(end.kind.case === "end" ? end.kind.value.status?.code : -1).toBe(
          Code.InvalidArgument,
        );
        expect(runs).toBe(1);
      });

      /**
       * A server with `limits` whose EmptyCall handlers wait for `release`,
       * where no call waits for a slot: the limit refuses (waiting:
       * test/fairness.test.ts); `caller()` makes a client with a client id
       * of its own.
       */
      async function heldCalls(label: string, limits: Partial<MqttServerOptions>) {
        const serverId = uniqueServerId(label);
        const release = deferred();
        const server = await startServer(closer, target, {
          serverId,
          ...limits,
          maxQueuedCalls: 0,
          shutdownTimeoutMs: 0,
        });
        server.service(TestService, {
          async emptyCall() {
            await release.promise;
            return {};
          },
        });
        const caller = () =>
          createClient(
            TestService,
            startTransport(closer, target, { serverId, mqtt: mqttOptions(target, ownClientId()) }),
          );
        return { server, release, caller };
      }

      it("concurrent calls per caller: an mqrpc caller holds its calls beyond the limit, a raw one is refused", async () => {
        const { server, release, caller } = await heldCalls("percaller", { maxCallsPerClient: 3 });
        const client = caller();
        const calls = Array.from({ length: 5 }, () => client.emptyCall({}));
        const otherCall = caller().emptyCall({});
        const running = () => (server as unknown as { calls: Map<string, unknown> }).calls.size;
        await expect.poll(running).toBe(4);
        // A caller that ignores the announced limit (an older client): refused.
        const raw = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(),
        );
        const key = raw.options.clientId ?? "";
        const scheme = new TopicScheme();
        const ends: number[] = [];
        raw.on("message", (_t, payload) => {
          const frame = decodeFrame(payload);
          if (frame.kind.case === "end") ends.push(frame.kind.value.status?.code ?? 0);
        });
        await raw.subscribeAsync(scheme.replyTopic(key, server.serverId), { qos: 1 });
        const topic = scheme.requestTopic(server.serverId, TestService.typeName, "EmptyCall", key);
        for (let callId = 1; callId <= 5; callId++) {
          const open = encodeFrame({ callId, seq: 0, kind: { case: "open", value: {} } });
          await raw.publishAsync(topic, Buffer.from(open), { qos: 1 });
        }
        await expect.poll(() => ends).toEqual([Code.ResourceExhausted, Code.ResourceExhausted]);
        expect(running()).toBe(7);
        release.resolve();
        await Promise.all([...calls, otherCall]);
      });

      it("concurrent calls in total", async () => {
        const { server, release, caller } = await heldCalls("total", { maxConcurrentCalls: 2 });
        const a = caller();
        const b = caller();
        const first = [a.emptyCall({}), b.emptyCall({})];
        await expect
          .poll(() => (server as unknown as { calls: Map<string, unknown> }).calls.size)
          .toBe(2);
        const err = await caller()
          .emptyCall({})
          .catch((e: unknown) => ConnectError.from(e));
        expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
        expect((err as ConnectError).message).toMatch(/maxConcurrentCalls/);
        release.resolve();
        await Promise.all(first);
      });

      it("bytes held by partly received messages across calls: callers wait their turn (backpressure); one message over the cap fails", async () => {
        const serverId = uniqueServerId("reassembly");
        const server = await startServer(closer, target, {
          serverId,
          maxReassemblyBytes: 300_000,
          maxMessageBytes: 256 * 1024,
        });
        server.service(TestService, interopService);
        const client = createClient(
          TestService,
          startTransport(closer, target, { serverId, heartbeatMs: 500 }),
        );
        // The budget holds one 250 KB message at a time: four at once take turns.
        const answers = await Promise.all(
          Array.from({ length: 4 }, (_, i) =>
            client
              .unaryCall(
                { payload: { body: new Uint8Array(250_000).fill(i) } },
                { timeoutMs: 20_000 },
              )
              .then((r) => r.$typeName),
          ),
        );
        expect(answers).toEqual(new Array(4).fill("mqrpc.interop.v1.SimpleResponse"));
        const err = await client
          .unaryCall({ payload: { body: new Uint8Array(300_000) } })
          .catch((e: unknown) => ConnectError.from(e));
        expect(err).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
        const internals = server as unknown as { reassemblyBudget: { inUse: number } };
        expect(internals.reassemblyBudget.inUse).toBe(0);
      });
    });
  },
);
