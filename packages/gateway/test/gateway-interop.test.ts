/**
 * A Python gRPC server with no mqrpc code (Debian's python3-grpcio, in its
 * own process) answers an mqrpc client through the gateway: all four RPC
 * kinds and the gRPC interop cases, on every broker target. The gateway
 * knows the upstream's schema from a buf image (`descriptorSet`), narrowed
 * to TestService so that UnimplementedService exercises the gateway's own
 * UNIMPLEMENTED.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, encodeBinaryHeader } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forEachBroker } from "../../../test/brokers/targets.js";
import {
  type StreamingOutputCallRequestSchema,
  TestService,
  UnimplementedService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Pushable } from "../../../test/support/pushable.js";
import {
  Closer,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway, type GrpcGateway } from "../src/index.js";
import {
  buildInteropImage,
  type InteropImage,
  UpstreamProcess,
} from "./support/upstream-process.js";

type OutReq = MessageInitShape<typeof StreamingOutputCallRequestSchema>;

const body = (n: number) => ({ body: new Uint8Array(n) });
const SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

function codeOf(e: unknown): Code {
  return ConnectError.from(e).code;
}

async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const got: T[] = [];
  for await (const m of stream) got.push(m);
  return got;
}

let image: InteropImage;
let python: UpstreamProcess;

beforeAll(async () => {
  image = await buildInteropImage();
  python = await UpstreamProcess.python(image);
});
afterAll(async () => {
  await python?.kill();
  await image?.remove();
});

forEachBroker((target) => {
  describe("an mqrpc client through the gateway to a Python gRPC server", () => {
    const closer = new Closer();
    let serverId: string;
    let gateway: GrpcGateway;
    let client: ReturnType<typeof createClient<typeof TestService>>;

    beforeAll(async () => {
      serverId = uniqueServerId("gw-python");
      gateway = closer.add(
        await createGrpcGateway({
          mqtt: mqttOptions(target),
          serverId,
          upstreams: [
            {
              url: python.url,
              descriptorSet: image.path,
              services: ["mqrpc.interop.v1.TestService"],
            },
          ],
        }),
        (g) => g.close(),
      );
      client = createClient(TestService, startTransport(closer, target, { serverId }));
    });
    afterAll(() => closer.closeAll());

    it("routes TestService to the upstream, with its schema", () => {
      expect(gateway.services()).toEqual([
        { service: "mqrpc.interop.v1.TestService", upstream: python.url },
      ]);
      expect(gateway.upstreams()).toMatchObject([
        { url: python.url, source: "descriptorSet", schema: true },
      ]);
    });

    it("empty_unary", async () => {
      const res = await client.emptyCall({});
      expect(res.$typeName).toBe("mqrpc.interop.v1.Empty");
    });

    it("large_unary: 271828 bytes in, 314159 bytes out", async () => {
      const res = await client.unaryCall({ responseSize: 314159, payload: body(271828) });
      expect(res.payload?.body.byteLength).toBe(314159);
    });

    it("client_streaming: 27182 + 8 + 1828 + 45904 bytes aggregate to 74922", async () => {
      async function* requests() {
        for (const n of [27182, 8, 1828, 45904]) yield { payload: body(n) };
      }
      const res = await client.streamingInputCall(requests());
      expect(res.aggregatedPayloadSize).toBe(74922);
    });

    it("server_streaming: 31415, 9, 2653, 58979 bytes, in order", async () => {
      const got = await drain(
        client.streamingOutputCall({
          responseParameters: [31415, 9, 2653, 58979].map((size) => ({ size })),
        }),
      );
      expect(got.map((r) => r.payload?.body.byteLength)).toEqual([31415, 9, 2653, 58979]);
    });

    it("ping_pong: four lock-step request/response pairs", async () => {
      const requests = new Pushable<OutReq>();
      const sent = [27182, 8, 1828, 45904];
      const expected = [31415, 9, 2653, 58979];
      const responses = client.fullDuplexCall(requests)[Symbol.asyncIterator]();
      for (let i = 0; i < 4; i++) {
        requests.push({
          responseParameters: [{ size: expected[i] as number }],
          payload: body(sent[i] as number),
        });
        const next = await responses.next();
        expect(next.done).toBe(false);
        expect(next.value?.payload?.body.byteLength).toBe(expected[i]);
      }
      requests.end();
      expect((await responses.next()).done).toBe(true);
    });

    it("empty_stream: a bidi call with no messages either way ends OK", async () => {
      const requests = new Pushable<OutReq>();
      requests.end();
      expect(await drain(client.fullDuplexCall(requests))).toEqual([]);
    });

    it("custom_metadata on unary: initial header and -bin trailer echo", async () => {
      const bin = encodeBinaryHeader(new Uint8Array([0xab, 0xab, 0xab]));
      let header: Headers | undefined;
      let trailer: Headers | undefined;
      const res = await client.unaryCall(
        { responseSize: 314159, payload: body(271828) },
        {
          headers: {
            "x-grpc-test-echo-initial": "test_initial_metadata_value",
            "x-grpc-test-echo-trailing-bin": bin,
          },
          onHeader: (h) => {
            header = h;
          },
          onTrailer: (t) => {
            trailer = t;
          },
        },
      );
      expect(res.payload?.body.byteLength).toBe(314159);
      expect(header?.get("x-grpc-test-echo-initial")).toBe("test_initial_metadata_value");
      expect(trailer?.get("x-grpc-test-echo-trailing-bin")).toBe(bin);
    });

    it("custom_metadata on bidi: initial header and -bin trailer echo", async () => {
      const bin = encodeBinaryHeader(new Uint8Array([0xab, 0xab, 0xab]));
      let header: Headers | undefined;
      let trailer: Headers | undefined;
      const requests = new Pushable<OutReq>();
      requests.push({ responseParameters: [{ size: 314159 }], payload: body(271828) });
      requests.end();
      const got = await drain(
        client.fullDuplexCall(requests, {
          headers: {
            "x-grpc-test-echo-initial": "test_initial_metadata_value",
            "x-grpc-test-echo-trailing-bin": bin,
          },
          onHeader: (h) => {
            header = h;
          },
          onTrailer: (t) => {
            trailer = t;
          },
        }),
      );
      expect(got.map((r) => r.payload?.body.byteLength)).toEqual([314159]);
      expect(header?.get("x-grpc-test-echo-initial")).toBe("test_initial_metadata_value");
      expect(trailer?.get("x-grpc-test-echo-trailing-bin")).toBe(bin);
      // What gRPC reserves is not copied to the caller.
      expect(header?.get("content-type")).toBeNull();
      expect(trailer?.get("grpc-status")).toBeNull();
    });

    it("status_code_and_message on unary and bidi", async () => {
      const unary = await client
        .unaryCall({ responseStatus: { code: 2, message: "test status message" } })
        .catch((e: unknown) => ConnectError.from(e));
      expect(unary).toBeInstanceOf(ConnectError);
      expect((unary as ConnectError).code).toBe(Code.Unknown);
      expect((unary as ConnectError).rawMessage).toBe("test status message");

      const requests = new Pushable<OutReq>();
      requests.push({ responseStatus: { code: 2, message: "test status message" } });
      requests.end();
      const bidi = await drain(client.fullDuplexCall(requests)).catch((e: unknown) =>
        ConnectError.from(e),
      );
      expect((bidi as ConnectError).code).toBe(Code.Unknown);
      expect((bidi as ConnectError).rawMessage).toBe("test status message");
    });

    it("special_status_message: whitespace and Unicode arrive intact", async () => {
      const err = await client
        .unaryCall({ responseStatus: { code: 2, message: SPECIAL_MESSAGE } })
        .catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).code).toBe(Code.Unknown);
      expect((err as ConnectError).rawMessage).toBe(SPECIAL_MESSAGE);
    });

    it("unimplemented_method: the upstream's own UNIMPLEMENTED", async () => {
      const err = await client.unimplementedCall({}).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.Unimplemented);
    });

    it("unimplemented_service: UNIMPLEMENTED naming the service and the server id", async () => {
      const other = createClient(
        UnimplementedService,
        startTransport(closer, target, { serverId }),
      );
      const err = ConnectError.from(await other.unimplementedCall({}).catch((e: unknown) => e));
      expect(err.code).toBe(Code.Unimplemented);
      expect(err.rawMessage).toContain("mqrpc.interop.v1.UnimplementedService");
      expect(err.rawMessage).toContain(serverId);
    });

    // grpcio cannot tell a handler blocked reading requests whether they
    // ended by half-close or by RST_STREAM: here the upstream call must end;
    // that it is cancelled is checked against the grpc-js upstream.
    it("cancel_after_begin: CANCELED for the caller, the upstream call ended", async () => {
      const mark = python.mark();
      const controller = new AbortController();
      const requests = new Pushable<{ payload: { body: Uint8Array } }>();
      const call = client
        .streamingInputCall(requests, { signal: controller.signal })
        .catch((e: unknown) => e);
      await python.until(
        (e) => e.event === "started" && e.method === "StreamingInputCall",
        15_000,
        mark,
      );
      controller.abort();
      expect(codeOf(await call)).toBe(Code.Canceled);
      await python.until(
        (e) => e.event === "done" && e.method === "StreamingInputCall",
        15_000,
        mark,
      );
    });

    it("cancel_after_first_response: CANCELED for the caller, the upstream call ended", async () => {
      const mark = python.mark();
      const controller = new AbortController();
      const requests = new Pushable<OutReq>();
      requests.push({ responseParameters: [{ size: 31415 }], payload: body(27182) });
      const responses = client
        .fullDuplexCall(requests, { signal: controller.signal })
        [Symbol.asyncIterator]();
      const first = await responses.next();
      expect(first.value?.payload?.body.byteLength).toBe(31415);
      controller.abort();
      expect(codeOf(await responses.next().catch((e: unknown) => e))).toBe(Code.Canceled);
      await python.until((e) => e.event === "done" && e.method === "FullDuplexCall", 15_000, mark);
    });

    it("timeout_on_sleeping_server: DEADLINE_EXCEEDED, the sleeping upstream call cancelled", async () => {
      const mark = python.mark();
      const requests = new Pushable<OutReq>();
      // The upstream sleeps 60 s before its response: only the deadline ends the call.
      requests.push({
        responseParameters: [{ size: 1, intervalUs: 60_000_000 }],
        payload: body(27182),
      });
      const err = await drain(client.fullDuplexCall(requests, { timeoutMs: 500 })).catch(
        (e: unknown) => e,
      );
      expect(codeOf(err)).toBe(Code.DeadlineExceeded);
      const done = await python.until(
        (e) => e.event === "done" && e.method === "FullDuplexCall",
        15_000,
        mark,
      );
      expect(done).toMatchObject({ cancelled: true });
    });
  });
});
