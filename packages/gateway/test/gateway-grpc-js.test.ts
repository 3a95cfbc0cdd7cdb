/**
 * A @grpc/grpc-js server with @grpc/reflection (its own process) behind the
 * gateway: services learned by reflection (v1, and v1alpha alone), the
 * gateway's own reflection over MQTT, status details, unknown fields, and
 * cancellation and deadlines reaching the upstream as RST_STREAM.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
} from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import {
  EchoStatusSchema,
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
import { UpstreamProcess } from "./support/upstream-process.js";

const TEST_SERVICE = "mqrpc.interop.v1.TestService";

let upstream: UpstreamProcess;
let alphaOnly: UpstreamProcess;

beforeAll(async () => {
  [upstream, alphaOnly] = await Promise.all([
    UpstreamProcess.grpcJs({ listen: "127.0.0.1:0", services: ["TestService"] }),
    UpstreamProcess.grpcJs({
      listen: "127.0.0.1:0",
      services: ["UnimplementedService"],
      reflection: "v1alpha",
    }),
  ]);
});
afterAll(async () => {
  await upstream?.kill();
  await alphaOnly?.kill();
});

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("a grpc-js server learned by reflection", () => {
      const closer = new Closer();
      let serverId: string;
      let gateway: GrpcGateway;
      let client: ReturnType<typeof createClient<typeof TestService>>;

      beforeAll(async () => {
        serverId = uniqueServerId("gw-grpcjs");
        gateway = closer.add(
          await createGrpcGateway({
            mqtt: mqttOptions(target),
            serverId,
            upstreams: [{ url: upstream.url }, { url: alphaOnly.url }],
          }),
          (g) => g.close(),
        );
        client = createClient(TestService, startTransport(closer, target, { serverId }));
      });
      afterAll(() => closer.closeAll());

      it("learns each upstream's services, with v1alpha where v1 is missing", () => {
        expect(gateway.services()).toEqual([
          { service: TEST_SERVICE, upstream: upstream.url },
          { service: "mqrpc.interop.v1.UnimplementedService", upstream: alphaOnly.url },
        ]);
        expect(gateway.upstreams()).toMatchObject([
          { url: upstream.url, source: "reflection", schema: true, connectivity: "ready" },
          { url: alphaOnly.url, source: "reflection", schema: true },
        ]);
      });

      it("answers reflection over MQTT for the union of its upstreams", async () => {
        const reflection = createClient(
          ServerReflection,
          startTransport(closer, target, { serverId }),
        );
        const requests = new Pushable<ServerReflectionRequest>();
        const responses: AsyncIterator<ServerReflectionResponse> = reflection
          .serverReflectionInfo(requests)
          [Symbol.asyncIterator]();
        requests.push(
          create(ServerReflectionRequestSchema, {
            messageRequest: { case: "listServices", value: "*" },
          }),
        );
        const answer = async (): Promise<ServerReflectionResponse | undefined> => {
          const next = await responses.next();
          return next.done === true ? undefined : next.value;
        };
        const list = await answer();
        expect(list?.messageResponse.case).toBe("listServicesResponse");
        const names =
          list?.messageResponse.case === "listServicesResponse"
            ? list.messageResponse.value.service.map((s) => s.name).sort()
            : [];
        expect(names).toEqual([TEST_SERVICE, "mqrpc.interop.v1.UnimplementedService"]);

        requests.push(
          create(ServerReflectionRequestSchema, {
            messageRequest: { case: "fileContainingSymbol", value: TEST_SERVICE },
          }),
        );
        const file = await answer();
        expect(file?.messageResponse.case).toBe("fileDescriptorResponse");
        const files: FileDescriptorProto[] =
          file?.messageResponse.case === "fileDescriptorResponse"
            ? file.messageResponse.value.fileDescriptorProto.map((b) =>
                fromBinary(FileDescriptorProtoSchema, b),
              )
            : [];
        const services = files.flatMap((f) => f.service.map((s) => `${f.package}.${s.name}`));
        expect(services).toContain(TEST_SERVICE);
        requests.end();
        expect((await responses.next()).done).toBe(true);
      });

      it("calls both upstreams behind one server id", async () => {
        const res = await client.unaryCall({ responseSize: 7 });
        expect(res.payload?.body.byteLength).toBe(7);
        const other = createClient(
          UnimplementedService,
          startTransport(closer, target, { serverId }),
        );
        expect((await other.unimplementedCall({})).$typeName).toBe("mqrpc.interop.v1.Empty");
      });

      it("status code, message, details and trailers arrive intact", async () => {
        const err = ConnectError.from(
          await client
            .unaryCall({
              responseStatus: { code: Code.FailedPrecondition, message: "fuse blown ☺" },
            })
            .catch((e: unknown) => e),
        );
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.rawMessage).toBe("fuse blown ☺");
        expect(err.details).toHaveLength(1);
        expect(err.details[0]).toMatchObject({ type: "mqrpc.interop.v1.EchoStatus" });
        const [detail] = err.findDetails(EchoStatusSchema);
        expect(detail).toMatchObject({ code: Code.FailedPrecondition, message: "fuse blown ☺" });
        expect(err.metadata.get("x-upstream-failed")).toBe("yes");
        // The details travel as details, not as a raw trailer besides them.
        expect(err.metadata.get("grpc-status-details-bin")).toBeNull();
      });

      it("status details on a stream's end, after its messages", async () => {
        const got: number[] = [];
        const err = ConnectError.from(
          await (async () => {
            for await (const r of client.streamingOutputCall({
              responseParameters: [{ size: 3 }, { size: 4 }],
              responseStatus: { code: Code.ResourceExhausted, message: "quota" },
            })) {
              got.push(r.payload?.body.byteLength ?? -1);
            }
          })().catch((e: unknown) => e),
        );
        expect(got).toEqual([3, 4]);
        expect(err.code).toBe(Code.ResourceExhausted);
        expect(err.findDetails(EchoStatusSchema)[0]?.message).toBe("quota");
      });

      it("unknown fields survive both ways (bytes are forwarded, never re-encoded)", async () => {
        const request = create(TestService.method.unaryCall.input, { responseSize: 2 });
        // Field 99, length-delimited "abc", unknown to everyone's schema.
        request.$unknown = [{ no: 99, wireType: 2, data: new Uint8Array([3, 0x61, 0x62, 0x63]) }];
        const res = await client.unaryCall(request);
        expect(res.payload?.body.byteLength).toBe(2);
        expect(res.$unknown?.map((u) => ({ ...u, data: [...u.data] }))).toEqual([
          { no: 99, wireType: 2, data: [3, 0x61, 0x62, 0x63] },
        ]);
      });

      it("cancel_after_begin reaches the upstream as a cancellation", async () => {
        const mark = upstream.mark();
        const controller = new AbortController();
        const requests = new Pushable<{ payload: { body: Uint8Array } }>();
        const call = client
          .streamingInputCall(requests, { signal: controller.signal })
          .catch((e: unknown) => e);
        await upstream.until((e) => e.event === "started", 15_000, mark);
        controller.abort();
        expect(ConnectError.from(await call).code).toBe(Code.Canceled);
        const done = await upstream.until((e) => e.event === "done", 15_000, mark);
        expect(done).toMatchObject({ method: "StreamingInputCall", cancelled: true });
      });

      it("cancel_after_first_response reaches the upstream as a cancellation", async () => {
        const mark = upstream.mark();
        const controller = new AbortController();
        const requests = new Pushable<{ responseParameters: { size: number }[] }>();
        requests.push({ responseParameters: [{ size: 5 }] });
        const responses = client
          .fullDuplexCall(requests, { signal: controller.signal })
          [Symbol.asyncIterator]();
        expect((await responses.next()).value?.payload?.body.byteLength).toBe(5);
        controller.abort();
        const err = await responses.next().catch((e: unknown) => e);
        expect(ConnectError.from(err).code).toBe(Code.Canceled);
        const done = await upstream.until((e) => e.event === "done", 15_000, mark);
        expect(done).toMatchObject({ method: "FullDuplexCall", cancelled: true });
      });

      it("the caller's deadline cancels the upstream call", async () => {
        const mark = upstream.mark();
        const err = await (async () => {
          for await (const _ of client.streamingOutputCall(
            { responseParameters: [{ size: 1, intervalUs: 60_000_000 }] },
            { timeoutMs: 400 },
          )) {
            // no response comes within the deadline
          }
        })().catch((e: unknown) => e);
        expect(ConnectError.from(err).code).toBe(Code.DeadlineExceeded);
        const done = await upstream.until((e) => e.event === "done", 15_000, mark);
        expect(done).toMatchObject({ method: "StreamingOutputCall", cancelled: true });
      });
    });
  },
);
