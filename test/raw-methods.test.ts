/**
 * Raw methods (serialized messages, no schema) on both sides of a call:
 * `MqttServer.unknownService` serves services it has no descriptors for,
 * `MqttTransport.rawStream` calls methods by name. What a gateway and an
 * ingress stand on: bytes pass untouched, every RPC kind works against
 * typed peers, and status, metadata, deadlines and cancellation behave as
 * for typed calls.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { RawMethod, RawStreamResponse } from "@mqrpc/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import {
  SimpleRequestSchema,
  SimpleResponseSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
  TestService,
} from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import {
  Closer,
  deferred,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

const SERVICE = TestService.typeName;

/** Messages of a raw response, and the status it ended with. */
async function drain(
  response: RawStreamResponse,
): Promise<{ messages: Uint8Array[]; error: ConnectError | undefined }> {
  const messages: Uint8Array[] = [];
  try {
    for await (const m of response.message) messages.push(m);
    return { messages, error: undefined };
  } catch (e) {
    return { messages, error: ConnectError.from(e) };
  }
}

/** A response stream that runs `body` and then ends (or fails as it does) without a message. */
function responding(body: () => Promise<void>): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => body().then(() => ({ done: true, value: undefined })),
    }),
  };
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("raw methods", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      /** A server whose TestService is served raw by `methods` (by method name). */
      async function rawServer(methods: Record<string, RawMethod>) {
        const serverId = uniqueServerId("raw");
        const server = await startServer(closer, target, { serverId });
        const asked: string[] = [];
        server.unknownService((service, method) => {
          asked.push(`${service}/${method}`);
          return service === SERVICE ? methods[method] : undefined;
        });
        await server.announced();
        return { serverId, asked };
      }

      it("serve every RPC kind to a typed client, bytes untouched", async () => {
        const seen: Uint8Array[] = [];
        const echo: RawMethod = {
          handler: async function* (requests) {
            for await (const r of requests) {
              seen.push(r);
              const req = fromBinary(StreamingOutputCallRequestSchema, r);
              for (const p of req.responseParameters) {
                yield toBinary(
                  StreamingOutputCallResponseSchema,
                  create(StreamingOutputCallResponseSchema, {
                    payload: { body: new Uint8Array(p.size) },
                  }),
                );
              }
            }
          },
        };
        const { serverId } = await rawServer({
          UnaryCall: {
            kind: "unary",
            handler: async function* (requests) {
              for await (const r of requests) {
                seen.push(r);
                const req = fromBinary(SimpleRequestSchema, r);
                yield toBinary(
                  SimpleResponseSchema,
                  create(SimpleResponseSchema, {
                    payload: { body: new Uint8Array(req.responseSize) },
                  }),
                );
              }
            },
          },
          StreamingOutputCall: echo,
          FullDuplexCall: echo,
          StreamingInputCall: {
            handler: async function* (requests) {
              let total = 0;
              for await (const r of requests) total += r.length;
              yield new Uint8Array([8, total]); // aggregated_payload_size = total
            },
          },
        });
        const client = createClient(TestService, startTransport(closer, target, { serverId }));
        const unary = await client.unaryCall({ responseSize: 7 });
        expect(unary.payload?.body.length).toBe(7);

        const sizes: number[] = [];
        for await (const r of client.streamingOutputCall({
          responseParameters: [{ size: 1 }, { size: 2 }, { size: 3 }],
        })) {
          sizes.push(r.payload?.body.length ?? -1);
        }
        expect(sizes).toEqual([1, 2, 3]);

        async function* inputs() {
          yield { payload: { body: new Uint8Array(3) } };
          yield { payload: { body: new Uint8Array(4) } };
        }
        const agg = await client.streamingInputCall(inputs());
        // Each request is its payload field (2 bytes) holding a body field
        // (2 bytes) and the body: 7 + 8.
        expect(agg.aggregatedPayloadSize).toBe(15);

        const duplex: number[] = [];
        async function* pings() {
          yield { responseParameters: [{ size: 5 }] };
          yield { responseParameters: [{ size: 6 }] };
        }
        for await (const r of client.fullDuplexCall(pings())) {
          duplex.push(r.payload?.body.length ?? -1);
        }
        expect(duplex).toEqual([5, 6]);

        // The server saw the caller's serialization, unknown fields and all.
        const withUnknown = new Uint8Array([
          ...toBinary(SimpleRequestSchema, create(SimpleRequestSchema, { responseSize: 1 })),
          0xf8,
          0x3e,
          0x2a, // field 999, varint 42: unknown to every schema here
        ]);
        const transport = startTransport(closer, target, { serverId });
        const raw = await transport.rawStream({
          service: SERVICE,
          method: "UnaryCall",
          kind: "unary",
          message: once(withUnknown),
        });
        const { messages, error } = await drain(raw);
        expect(error).toBeUndefined();
        expect(messages).toHaveLength(1);
        expect([...(seen.at(-1) ?? [])]).toEqual([...withUnknown]);
      });

      it("end with the handler's status, details, headers and trailers", async () => {
        const { serverId } = await rawServer({
          EmptyCall: {
            kind: "unary",
            handler: (_requests, context) => {
              context.responseHeader.set("x-initial", "a");
              context.responseTrailer.set("x-trailing-bin", "AAEC");
              const error = new ConnectError("no luck", Code.FailedPrecondition);
              error.details.push({ type: "acme.v1.Why", value: new Uint8Array([1, 2, 3]) });
              return responding(() => Promise.reject(error));
            },
          },
        });
        const transport = startTransport(closer, target, { serverId });
        const raw = await transport.rawStream({
          service: SERVICE,
          method: "EmptyCall",
          message: once(new Uint8Array(0)),
        });
        const { error } = await drain(raw);
        expect(error?.code).toBe(Code.FailedPrecondition);
        expect(error?.rawMessage).toBe("no luck");
        expect(
          error?.details.map((d) => ("type" in d ? [d.type, [...d.value]] : undefined)),
        ).toEqual([["acme.v1.Why", [1, 2, 3]]]);
        expect(error?.metadata.get("x-initial")).toBe("a");
        expect(error?.metadata.get("x-trailing-bin")).toBe("AAEC");
      });

      it("answer UNIMPLEMENTED where the resolver has nothing, and INTERNAL for a second unary response", async () => {
        const { serverId, asked } = await rawServer({
          EmptyCall: {
            kind: "unary",
            handler: async function* () {
              yield new Uint8Array(0);
              yield new Uint8Array(0);
            },
          },
        });
        const transport = startTransport(closer, target, { serverId });
        const missing = await drain(
          await transport.rawStream({
            service: "acme.Nowhere",
            method: "Call",
            message: once(new Uint8Array(0)),
          }),
        );
        expect(missing.error?.code).toBe(Code.Unimplemented);
        const twice = await drain(
          await transport.rawStream({
            service: SERVICE,
            method: "EmptyCall",
            message: once(new Uint8Array(0)),
          }),
        );
        expect(twice.error?.code).toBe(Code.Internal);
        expect(twice.error?.rawMessage).toMatch(/more than one response/);
        expect(asked).toEqual([`acme.Nowhere/Call`, `${SERVICE}/EmptyCall`]);
      });

      it("abort the handler's signal on the caller's deadline and on its cancel", async () => {
        const reasons: unknown[] = [];
        const started = deferred();
        const { serverId } = await rawServer({
          FullDuplexCall: {
            handler: (_requests, context) =>
              responding(async () => {
                started.resolve();
                await new Promise((resolve) =>
                  context.signal.addEventListener("abort", resolve, { once: true }),
                );
                reasons.push(context.signal.reason);
              }),
          },
        });
        const transport = startTransport(closer, target, { serverId });
        const late = await drain(
          await transport.rawStream({
            service: SERVICE,
            method: "FullDuplexCall",
            message: once(new Uint8Array(0)),
            timeoutMs: 300,
          }),
        );
        expect(late.error?.code).toBe(Code.DeadlineExceeded);
        const controller = new AbortController();
        const pending = transport.rawStream({
          service: SERVICE,
          method: "FullDuplexCall",
          message: once(new Uint8Array(0)),
          signal: controller.signal,
        });
        await started.promise;
        controller.abort();
        const cancelled = await pending.then(drain, (e: unknown) => ({
          messages: [],
          error: ConnectError.from(e),
        }));
        expect(cancelled.error?.code).toBe(Code.Canceled);
        await expect.poll(() => reasons.length).toBe(2);
        expect(reasons.map((r) => ConnectError.from(r).code)).toEqual([
          Code.DeadlineExceeded,
          Code.Canceled,
        ]);
      });
      it("several resolvers on one server: asked in order, the first method found serves", async () => {
        const serverId = uniqueServerId("raw-many");
        const logged: string[] = [];
        const server = await startServer(closer, target, {
          serverId,
          logger: { warn: (m: string) => logged.push(m) },
        });
        const reply = (text: string): RawMethod => ({
          handler: async function* (requests) {
            for await (const _ of requests);
            yield new TextEncoder().encode(text);
          },
        });
        server.unknownService(() => {
          throw new Error("resolver bug");
        });
        server.unknownService((service) => (service === "acme.A" ? reply("first A") : undefined));
        server.unknownService((service) =>
          service === "acme.A" || service === "acme.B" ? reply(`second ${service}`) : undefined,
        );
        await server.announced();
        const transport = startTransport(closer, target, { serverId });
        const answer = async (service: string) => {
          const { messages, error } = await drain(
            await transport.rawStream({ service, method: "M", message: once(new Uint8Array(0)) }),
          );
          return error ?? new TextDecoder().decode(messages[0]);
        };
        expect(await answer("acme.A")).toBe("first A");
        expect(await answer("acme.B")).toBe("second acme.B");
        expect(((await answer("acme.C")) as ConnectError).code).toBe(Code.Unimplemented);
        expect(logged.filter((m) => m.includes("resolver bug"))).toHaveLength(3);
      });
    });

    describe("rawStream against a typed server", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("calls every kind by name, with or without the method's kind", async () => {
        const serverId = uniqueServerId("raw-client");
        const server = await startServer(closer, target, { serverId });
        server.service(TestService, interopService);
        await server.announced();
        const transport = startTransport(closer, target, { serverId });
        for (const kind of ["unary", undefined] as const) {
          const response = await transport.rawStream({
            service: SERVICE,
            method: "UnaryCall",
            ...(kind !== undefined ? { kind } : {}),
            header: { "x-grpc-test-echo-initial": "hello" },
            message: once(
              toBinary(SimpleRequestSchema, create(SimpleRequestSchema, { responseSize: 9 })),
            ),
          });
          const { messages, error } = await drain(response);
          expect(error).toBeUndefined();
          expect(messages).toHaveLength(1);
          expect(
            fromBinary(SimpleResponseSchema, messages[0] as Uint8Array).payload?.body.length,
          ).toBe(9);
          expect(response.header.get("x-grpc-test-echo-initial")).toBe("hello");
        }
        const stream = await transport.rawStream({
          service: SERVICE,
          method: "StreamingOutputCall",
          kind: "server_streaming",
          message: once(
            toBinary(
              StreamingOutputCallRequestSchema,
              create(StreamingOutputCallRequestSchema, {
                responseParameters: [{ size: 1 }, { size: 2 }],
              }),
            ),
          ),
        });
        const streamed = await drain(stream);
        expect(streamed.error).toBeUndefined();
        expect(
          streamed.messages.map(
            (m) => fromBinary(StreamingOutputCallResponseSchema, m).payload?.body.length,
          ),
        ).toEqual([1, 2]);
        const failed = await drain(
          await transport.rawStream({
            service: SERVICE,
            method: "UnaryCall",
            message: once(
              toBinary(
                SimpleRequestSchema,
                create(SimpleRequestSchema, {
                  responseStatus: { code: Code.NotFound, message: "gone" },
                }),
              ),
            ),
          }),
        );
        expect(failed.error?.code).toBe(Code.NotFound);
        expect(failed.error?.rawMessage).toBe("gone");
        await expect(
          transport.rawStream({ service: "", method: "X", message: once(new Uint8Array(0)) }),
        ).rejects.toMatchObject({ code: Code.InvalidArgument });
      });
    });
  },
);
