/**
 * Deadlines beyond what a timer or the Open frame's uint32 `timeout_ms`
 * holds (docs/PROTOCOL.md section 12), end to end on every broker target:
 * a unary call and a server stream with a 1-year deadline, and deadlines of
 * exactly 2³¹ and 2³² ms, complete OK (timers of 2³¹ ms and more would fire
 * after 1 ms; 2³² ms and more did not fit the field), on a transport with
 * and without interceptors (Connect's own deadline timer) and through
 * rawStream; a short deadline still ends the call with DEADLINE_EXCEEDED.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { forEachBroker } from "./brokers/targets.js";
import { StreamingOutputCallRequestSchema, TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  deferred,
  startServer,
  startTransport,
  uniqueServerId,
  untilAborted,
} from "./support/rpc-fixture.js";

const DAY = 86_400_000;
const YEAR = 365 * DAY;
/** How long each handler takes: any timer that wrapped to 1 ms has fired by then. */
const HANDLER_MS = 150;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const codeOf = (e: unknown) => ConnectError.from(e).code;
const passThrough: Interceptor = (next) => (req) => next(req);
/** A request header that makes a handler wait until its signal fires. */
const WAIT = { "x-wait": "until-aborted" };

/** Node warns once per timer it wraps to 1 ms; none may appear. */
const overflows: string[] = [];
const onWarning = (w: Error) => {
  if (w.name === "TimeoutOverflowWarning") overflows.push(w.message);
};
beforeAll(() => {
  process.on("warning", onWarning);
});
afterAll(() => {
  process.off("warning", onWarning);
});

forEachBroker((target) => {
  describe("deadlines longer than a timer or the Open field holds", () => {
    const closer = new Closer();
    let serverId: string;
    /** What each handler saw of its deadline, and whether its signal fired early. */
    let seen: Array<{ timeoutMs: number | undefined; aborted: boolean }>;
    let transports: Array<[string, MqttTransport]>;
    let handlerAborted: ReturnType<typeof deferred<unknown>>;

    beforeEach(async () => {
      serverId = uniqueServerId("long-deadline");
      seen = [];
      handlerAborted = deferred<unknown>();
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async unaryCall(req, ctx) {
          const timeoutMs = ctx.timeoutMs();
          if (ctx.requestHeader.has("x-wait")) await untilAborted(ctx.signal, handlerAborted);
          await sleep(HANDLER_MS);
          seen.push({ timeoutMs, aborted: ctx.signal.aborted });
          return { payload: { body: new Uint8Array(req.responseSize) } };
        },
        async *streamingOutputCall(req, ctx) {
          const timeoutMs = ctx.timeoutMs();
          for (const p of req.responseParameters) {
            await sleep(p.intervalUs / 1000);
            yield { payload: { body: new Uint8Array(p.size) } };
          }
          if (ctx.requestHeader.has("x-wait")) await untilAborted(ctx.signal, handlerAborted);
          seen.push({ timeoutMs, aborted: ctx.signal.aborted });
        },
      });
      transports = [
        ["plain", startTransport(closer, target, { serverId })],
        ["interceptors", startTransport(closer, target, { serverId, interceptors: [passThrough] })],
      ];
      overflows.length = 0;
    });
    afterEach(() => closer.closeAll());

    for (const [label, ms] of [
      ["1 year", YEAR],
      ["2^32 ms", 2 ** 32],
      ["2^31 ms", 2 ** 31],
      ["gRPC's largest (99999999H)", 99_999_999 * 3_600_000],
    ] as const) {
      it(`${label}: unary and server-streaming calls complete OK`, async () => {
        for (const [name, transport] of transports) {
          const client = createClient(TestService, transport);
          const res = await client.unaryCall({ responseSize: 3 }, { timeoutMs: ms });
          expect(res.payload?.body.byteLength, name).toBe(3);

          const got: number[] = [];
          const stream = client.streamingOutputCall(
            {
              responseParameters: [
                { size: 1, intervalUs: 0 },
                { size: 2, intervalUs: HANDLER_MS * 1000 },
              ],
            },
            { timeoutMs: ms },
          );
          for await (const r of stream) got.push(r.payload?.body.byteLength ?? -1);
          expect(got, name).toEqual([1, 2]);
        }
        // The server was given no deadline (the remaining time does not fit
        // the field, section 12) or one that does fit, never a shorter one.
        expect(seen).toHaveLength(4);
        for (const s of seen) {
          expect(s.aborted).toBe(false);
          if (s.timeoutMs !== undefined) expect(s.timeoutMs).toBeGreaterThan(2 ** 31 - 1000);
        }
        expect(overflows).toEqual([]);
      });
    }

    it("1 year through rawStream, server streaming", async () => {
      const transport = transports[0]?.[1] as MqttTransport;
      const request = toBinary(
        StreamingOutputCallRequestSchema,
        create(StreamingOutputCallRequestSchema, {
          responseParameters: [{ size: 1 }, { size: 1, intervalUs: HANDLER_MS * 1000 }],
        }),
      );
      const res = await transport.rawStream({
        service: TestService.typeName,
        method: "StreamingOutputCall",
        kind: "server_streaming",
        message: (async function* () {
          yield request;
        })(),
        timeoutMs: YEAR,
      });
      let n = 0;
      for await (const _ of res.message) n++;
      expect(n).toBe(2);
      expect(seen).toEqual([{ timeoutMs: undefined, aborted: false }]);
      expect(overflows).toEqual([]);
    });

    it("transport durations past 2^31-1 ms count as 2^31-1 (heartbeat_ms is a uint32 too)", async () => {
      const huge = 2 ** 40;
      const transport = startTransport(closer, target, {
        serverId,
        heartbeatMs: huge,
        offlineGraceMs: huge,
        connectGraceMs: huge,
        presenceTimeoutMs: huge,
      });
      const res = await createClient(TestService, transport).unaryCall(
        { responseSize: 1 },
        { timeoutMs: YEAR },
      );
      expect(res.payload?.body.byteLength).toBe(1);
      expect(overflows).toEqual([]);
    });

    it("a deadline that fits the field reaches the handler", async () => {
      const client = createClient(TestService, transports[0]?.[1] as MqttTransport);
      await client.unaryCall({}, { timeoutMs: 2 ** 31 - 1 });
      await client.unaryCall({}, { timeoutMs: 60_000 });
      expect(seen[0]?.timeoutMs).toBeGreaterThan(2 ** 31 - 1000);
      expect(seen[0]?.timeoutMs).toBeLessThanOrEqual(2 ** 31 - 1);
      expect(seen[1]?.timeoutMs).toBeGreaterThan(59_000);
      expect(seen[1]?.timeoutMs).toBeLessThanOrEqual(60_000);
    });

    it("a short deadline still ends a unary call with DEADLINE_EXCEEDED", async () => {
      for (const [name, transport] of transports) {
        const client = createClient(TestService, transport);
        const started = Date.now();
        const err = await client
          .unaryCall({}, { timeoutMs: 300, headers: WAIT })
          .catch((e: unknown) => e);
        expect(codeOf(err), name).toBe(Code.DeadlineExceeded);
        expect(Date.now() - started, name).toBeGreaterThanOrEqual(290);
        expect(Date.now() - started, name).toBeLessThan(5000);
      }
      expect(codeOf(await handlerAborted.promise)).toBe(Code.DeadlineExceeded);
    });

    it("a short deadline still ends a server stream with DEADLINE_EXCEEDED", async () => {
      for (const [name, transport] of transports) {
        const client = createClient(TestService, transport);
        const got: number[] = [];
        const err = await (async () => {
          const stream = client.streamingOutputCall(
            { responseParameters: [{ size: 1 }] },
            { timeoutMs: 300, headers: WAIT },
          );
          for await (const r of stream) got.push(r.payload?.body.byteLength ?? -1);
        })().catch((e: unknown) => e);
        expect(got, name).toEqual([1]);
        expect(codeOf(err), name).toBe(Code.DeadlineExceeded);
      }
    });
  });
});
