/**
 * Server, client and bidi streams end to end on every broker target: the
 * gRPC interop streaming cases, cancellation both ways, deadlines, errors
 * mid-stream, batching and chunking.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { bindServiceSettings } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import {
  type StreamingOutputCallRequestSchema,
  TestService,
} from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  cancelAfterBegin,
  cancelAfterFirstResponse,
  clientStreaming,
  customMetadata,
  emptyStream,
  pingPong,
  serverStreaming,
  statusCodeAndMessage,
} from "./support/interop-cases.js";
import { interopService } from "./support/interop-service.js";
import { Pushable } from "./support/pushable.js";
import {
  Closer,
  deferred,
  startServer,
  startTransport,
  uniqueServerId,
  untilAborted,
} from "./support/rpc-fixture.js";

type OutReq = MessageInitShape<typeof StreamingOutputCallRequestSchema>;

function codeOf(e: unknown): Code {
  return ConnectError.from(e).code;
}

const body = (n: number) => ({ body: new Uint8Array(n) });

forEachBroker((target) => {
  describe("interop streaming cases", () => {
    const closer = new Closer();
    let serverId: string;
    let client: ReturnType<typeof createClient<typeof TestService>>;

    beforeEach(async () => {
      serverId = uniqueServerId("streams");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      client = createClient(TestService, startTransport(closer, target, { serverId }));
    });
    afterEach(() => closer.closeAll());

    it("client_streaming: 27182 + 8 + 1828 + 45904 bytes aggregate to 74922", () =>
      clientStreaming(client));

    it("server_streaming: 31415, 9, 2653, 58979 bytes, in order", () => serverStreaming(client));

    it("ping_pong: four lock-step request/response pairs", () => pingPong(client));

    it("empty_stream: a bidi call with no messages either way ends OK", () => emptyStream(client));

    it("cancel_after_begin: a client stream cancelled before any message ends CANCELED", () =>
      cancelAfterBegin(client));

    it("cancel_after_first_response: CANCELED for the caller after one pair", () =>
      cancelAfterFirstResponse(client));

    it("custom_metadata on bidi: initial header and -bin trailer echo", async () => {
      await customMetadata(client, "bidi");
    });

    it("status_code_and_message on bidi", () => statusCodeAndMessage(client, "bidi"));
  });

  describe("stream lifecycle", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("delivers messages sent before an error mid-stream, then the error", async () => {
      const serverId = uniqueServerId("midstream");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async *streamingOutputCall() {
          yield { payload: body(1) };
          yield { payload: body(2) };
          throw new ConnectError("sensor unplugged", Code.Aborted);
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const sizes: number[] = [];
      const err = await (async () => {
        for await (const res of client.streamingOutputCall({}))
          sizes.push(res.payload?.body.byteLength ?? -1);
      })().catch((e: unknown) => e);
      expect(sizes).toEqual([1, 2]);
      expect(codeOf(err)).toBe(Code.Aborted);
    });

    it("a handler that returns early ends the caller's iteration cleanly", async () => {
      const serverId = uniqueServerId("early");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async *fullDuplexCall(requests) {
          for await (const _ of requests) {
            yield { payload: body(3) };
            return;
          }
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const requests = new Pushable<OutReq>();
      requests.push({});
      requests.push({});
      const got: number[] = [];
      for await (const res of client.fullDuplexCall(requests))
        got.push(res.payload?.body.byteLength ?? -1);
      expect(got).toEqual([3]);
    });

    it("the deadline covers the whole stream and aborts the handler", async () => {
      const serverId = uniqueServerId("deadline");
      const aborted = deferred<unknown>();
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async *streamingOutputCall(_req, ctx) {
          yield { payload: body(1) };
          await untilAborted(ctx.signal, aborted);
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const got: number[] = [];
      const err = await (async () => {
        for await (const res of client.streamingOutputCall({}, { timeoutMs: 400 })) {
          got.push(res.payload?.body.byteLength ?? -1);
        }
      })().catch((e: unknown) => e);
      expect(got).toEqual([1]);
      expect(codeOf(err)).toBe(Code.DeadlineExceeded);
      expect(codeOf(await aborted.promise)).toBe(Code.DeadlineExceeded);
    });

    it("a caller that aborts mid-stream cancels the handler (Connect stops streams by signal)", async () => {
      const serverId = uniqueServerId("stopread");
      const aborted = deferred<unknown>();
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async *streamingOutputCall(_req, ctx) {
          ctx.signal.addEventListener("abort", () => aborted.resolve(ctx.signal.reason));
          for (;;) {
            yield { payload: body(8) };
            await new Promise((r) => setTimeout(r, 5));
          }
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const controller = new AbortController();
      let n = 0;
      const err = await (async () => {
        for await (const _ of client.streamingOutputCall({}, { signal: controller.signal })) {
          if (++n === 3) controller.abort();
        }
      })().catch((e: unknown) => e);
      expect(n).toBe(3);
      expect(codeOf(err)).toBe(Code.Canceled);
      expect(codeOf(await aborted.promise)).toBe(Code.Canceled);
    });
  });

  describe("flow-control windows", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("a server window larger than the default does not stall a client stream", async () => {
      const serverId = uniqueServerId("bigwindow");
      const server = await startServer(closer, target, { serverId, receiveWindow: 256 });
      server.service(TestService, interopService);
      // No heartbeat-driven recovery: only correct credit lets this finish.
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, heartbeatMs: 0 }),
      );
      async function* requests() {
        for (let i = 0; i < 600; i++) yield { payload: body(1) };
      }
      const res = await client.streamingInputCall(requests(), { timeoutMs: 20_000 });
      expect(res.aggregatedPayloadSize).toBe(600);
    });
  });

  describe("batching", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    /** Counts publishes on one client's reply topic, seen by an observer. */
    async function replyCounter(clientKey: string, serverId: string) {
      const observer = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
        c.endAsync(),
      );
      const topic = new TopicScheme().replyTopic(clientKey, serverId);
      let count = 0;
      observer.on("message", (t) => {
        if (t === topic) count++;
      });
      await observer.subscribeAsync(topic, { qos: 1 });
      return () => count;
    }

    async function streamCount(
      batched: boolean,
      n: number,
    ): Promise<{ publishes: number; received: number }> {
      const serverId = uniqueServerId(batched ? "batched" : "unbatched");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService, {
        streamingOutputCall: { batchedStream: batched },
      });
      const clientId = `count-${batched ? "b" : "u"}-${Math.random().toString(36).slice(2, 10)}`;
      const publishes = await replyCounter(clientId, serverId);
      const transport = startTransport(closer, target, {
        serverId,
        mqtt: { url: target.url, ...target.mqttOptions, clientId },
      });
      const client = createClient(TestService, transport);
      let received = 0;
      for await (const _ of client.streamingOutputCall({
        responseParameters: Array.from({ length: n }, () => ({ size: 16 })),
      })) {
        received++;
      }
      // The End frame is the last publish; wait until the observer saw it too.
      await expect.poll(() => publishes() >= (batched ? 2 : n + 1)).toBe(true);
      return { publishes: publishes(), received };
    }

    it("a batched stream of 10,000 small messages takes at most 1/20 of the publishes", async () => {
      const unbatched = await streamCount(false, 10_000);
      const batched = await streamCount(true, 10_000);
      expect(unbatched.received).toBe(10_000);
      expect(batched.received).toBe(10_000);
      expect(unbatched.publishes).toBeGreaterThanOrEqual(10_000);
      expect(batched.publishes * 20).toBeLessThanOrEqual(unbatched.publishes);
    });

    it("a slow batched producer is flushed at once, not held for the linger time", async () => {
      const serverId = uniqueServerId("slowbatch");
      const delivered = Array.from({ length: 5 }, () => deferred());
      const server = await startServer(closer, target, { serverId });
      // A linger far beyond the test timeout: only the end-of-turn flush can deliver.
      server.service(
        TestService,
        {
          async *streamingOutputCall() {
            for (let i = 0; i < 5; i++) {
              yield { payload: body(i) };
              await delivered[i]?.promise;
            }
          },
        },
        { streamingOutputCall: { batchedStream: true, batchLingerMs: 3_600_000 } },
      );
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const got: number[] = [];
      for await (const res of client.streamingOutputCall({})) {
        got.push(res.payload?.body.byteLength ?? -1);
        delivered[got.length - 1]?.resolve();
      }
      expect(got).toEqual([0, 1, 2, 3, 4]);
    });

    it("batches client-stream messages when the generated settings say so", async () => {
      const serverId = uniqueServerId("clientbatch");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      const transport = bindServiceSettings(
        startTransport(closer, target, { serverId }),
        TestService,
        {
          streamingInputCall: { batchedStream: true },
        },
      );
      const client = createClient(TestService, transport);
      async function* many() {
        for (let i = 0; i < 5000; i++) yield { payload: body(4) };
      }
      const res = await client.streamingInputCall(many());
      expect(res.aggregatedPayloadSize).toBe(20_000);
    });
  });

  describe("chunking and size limits", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("a request over the server's cap gets RESOURCE_EXHAUSTED", async () => {
      const serverId = uniqueServerId("cap");
      const server = await startServer(closer, target, { serverId, maxMessageBytes: 1024 * 1024 });
      server.service(TestService, interopService);
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const err = await client
        .unaryCall({ payload: body(2 * 1024 * 1024) })
        .catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.ResourceExhausted);
      // The server keeps serving.
      expect((await client.unaryCall({ responseSize: 4 })).payload?.body.byteLength).toBe(4);
    });

    it("a response over the caller's cap gets RESOURCE_EXHAUSTED", async () => {
      const serverId = uniqueServerId("capc");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, maxMessageBytes: 256 * 1024 }),
      );
      const err = await client.unaryCall({ responseSize: 1024 * 1024 }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.ResourceExhausted);
    });

    it("chunks of concurrent calls interleave and reassemble", async () => {
      const serverId = uniqueServerId("interleave");
      const server = await startServer(closer, target, { serverId, maxPublishBytes: 4096 });
      server.service(TestService, interopService);
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, maxPublishBytes: 4096 }),
      );
      const sizes = [100_000, 77_777, 50_001, 123_456];
      const res = await Promise.all(
        sizes.map((n) => client.unaryCall({ responseSize: n, payload: body(n) })),
      );
      expect(res.map((r) => r.payload?.body.byteLength)).toEqual(sizes);
    });

    it("a 64 MiB message goes through when the caps are raised", async () => {
      const serverId = uniqueServerId("huge");
      const cap = 65 * 1024 * 1024;
      const server = await startServer(closer, target, { serverId, maxMessageBytes: cap });
      let received = 0;
      server.service(TestService, {
        unaryCall(req) {
          received = req.payload?.body.byteLength ?? 0;
          const b = req.payload?.body;
          return {
            payload: {
              body: b ? new Uint8Array([b[0] ?? 0, b[b.length - 1] ?? 0]) : new Uint8Array(),
            },
          };
        },
      });
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, maxMessageBytes: cap }),
      );
      const big = new Uint8Array(64 * 1024 * 1024);
      big[0] = 7;
      big[big.length - 1] = 9;
      const res = await client.unaryCall({ payload: { body: big } }, { timeoutMs: 120_000 });
      expect(received).toBe(64 * 1024 * 1024);
      expect(Array.from(res.payload?.body ?? [])).toEqual([7, 9]);
    }, 180_000);
  });
});
