/**
 * A Python gRPC server with no mqrpc code (Debian's python3-grpcio, in its
 * own process) answers an mqrpc client through the gateway: all four RPC
 * kinds and the gRPC interop cases, on every broker target. The gateway
 * knows the upstream's schema from a buf image (`descriptorSet`), narrowed
 * to TestService so that UnimplementedService exercises the gateway's own
 * UNIMPLEMENTED.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forEachBroker } from "../../../test/brokers/targets.js";
import {
  type StreamingOutputCallRequestSchema,
  TestService,
  UnimplementedService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import {
  cancelAfterFirstResponse,
  clientStreaming,
  customMetadata,
  drain,
  emptyStream,
  emptyUnary,
  largeUnary,
  pingPong,
  serverStreaming,
  specialStatusMessage,
  statusCodeAndMessage,
} from "../../../test/support/interop-cases.js";
import { Pushable } from "../../../test/support/pushable.js";
import {
  Closer,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway, type GrpcGateway } from "../src/index.js";
import { pythonInteropForFile } from "./support/upstream-process.js";

type OutReq = MessageInitShape<typeof StreamingOutputCallRequestSchema>;

const body = (n: number) => ({ body: new Uint8Array(n) });

function codeOf(e: unknown): Code {
  return ConnectError.from(e).code;
}

const interop = pythonInteropForFile();

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
          upstreams: [interop.upstream],
        }),
        (g) => g.close(),
      );
      client = createClient(TestService, startTransport(closer, target, { serverId }));
    });
    afterAll(() => closer.closeAll());

    it("routes TestService to the upstream, with its schema", () => {
      expect(gateway.services()).toEqual([
        { service: "mqrpc.interop.v1.TestService", upstream: interop.python.url },
      ]);
      expect(gateway.upstreams()).toMatchObject([
        { url: interop.python.url, source: "descriptorSet", schema: true },
      ]);
    });

    it("empty_unary", () => emptyUnary(client));

    it("large_unary: 271828 bytes in, 314159 bytes out", () => largeUnary(client));

    it("client_streaming: 27182 + 8 + 1828 + 45904 bytes aggregate to 74922", () =>
      clientStreaming(client));

    it("server_streaming: 31415, 9, 2653, 58979 bytes, in order", () => serverStreaming(client));

    it("ping_pong: four lock-step request/response pairs", () => pingPong(client));

    it("empty_stream: a bidi call with no messages either way ends OK", () => emptyStream(client));

    it("custom_metadata on unary: initial header and -bin trailer echo", async () => {
      await customMetadata(client, "unary");
    });

    it("custom_metadata on bidi: initial header and -bin trailer echo", async () => {
      const { header, trailer } = await customMetadata(client, "bidi");
      // What gRPC reserves is not copied to the caller.
      expect(header?.get("content-type")).toBeNull();
      expect(trailer?.get("grpc-status")).toBeNull();
    });

    it("status_code_and_message on unary and bidi", async () => {
      await statusCodeAndMessage(client, "unary");
      await statusCodeAndMessage(client, "bidi");
    });

    it("special_status_message: whitespace and Unicode arrive intact", () =>
      specialStatusMessage(client));

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
      const mark = interop.python.mark();
      const controller = new AbortController();
      const requests = new Pushable<{ payload: { body: Uint8Array } }>();
      const call = client
        .streamingInputCall(requests, { signal: controller.signal })
        .catch((e: unknown) => e);
      await interop.python.until(
        (e) => e.event === "started" && e.method === "StreamingInputCall",
        15_000,
        mark,
      );
      controller.abort();
      expect(codeOf(await call)).toBe(Code.Canceled);
      await interop.python.until(
        (e) => e.event === "done" && e.method === "StreamingInputCall",
        15_000,
        mark,
      );
    });

    it("cancel_after_first_response: CANCELED for the caller, the upstream call ended", async () => {
      const mark = interop.python.mark();
      await cancelAfterFirstResponse(client);
      await interop.python.until(
        (e) => e.event === "done" && e.method === "FullDuplexCall",
        15_000,
        mark,
      );
    });

    it("timeout_on_sleeping_server: DEADLINE_EXCEEDED, the sleeping upstream call cancelled", async () => {
      const mark = interop.python.mark();
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
      const done = await interop.python.until(
        (e) => e.event === "done" && e.method === "FullDuplexCall",
        15_000,
        mark,
      );
      expect(done).toMatchObject({ cancelled: true });
    });
  });
});
