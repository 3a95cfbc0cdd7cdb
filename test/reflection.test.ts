/**
 * gRPC server reflection over MQTT: a native server lists its services and
 * hands out their files (and their imports) by file name and by symbol, in
 * both protocol versions, answers unknown names with NOT_FOUND on a stream
 * that goes on, and says nothing when reflection is switched off.
 */
import { create, createFileRegistry, type DescFile, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import {
  ServerReflection,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "@mqrpc/runtime/proto/grpc/reflection/v1alpha/reflection_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, startServer, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

type Question = ServerReflectionRequest["messageRequest"];

/** Asks `questions` on one reflection stream; the answers in order. */
async function ask(transport: MqttTransport, questions: Question[], alpha = false) {
  async function* requests() {
    for (const messageRequest of questions) yield { messageRequest };
  }
  const answers: Answer[] = [];
  if (alpha) {
    for await (const a of createClient(ServerReflectionV1Alpha, transport).serverReflectionInfo(
      requests() as never,
    )) {
      answers.push(a.messageResponse as Answer);
    }
  } else {
    for await (const a of createClient(ServerReflection, transport).serverReflectionInfo(
      requests(),
    )) {
      answers.push(a.messageResponse);
    }
  }
  return answers;
}

/** Proto names of `file` and of every file it imports, directly or not. */
function fileAndImports(file: DescFile): string[] {
  const names = new Set<string>();
  const visit = (f: DescFile) => {
    if (names.has(f.proto.name)) return;
    names.add(f.proto.name);
    for (const d of f.dependencies) visit(d);
  };
  visit(file);
  return [...names];
}

type Answer = ServerReflectionResponse["messageResponse"] | undefined;

/** A registry of the files in a file_descriptor_response. */
function registryOf(answer: Answer) {
  if (answer?.case !== "fileDescriptorResponse") {
    throw new Error(`expected a file descriptor response, got ${answer?.case}`);
  }
  const files = answer.value.fileDescriptorProto.map((bytes) =>
    fromBinary(FileDescriptorProtoSchema, bytes),
  );
  const byName = new Map(files.map((f) => [f.name, f]));
  const registry = createFileRegistry(files[0] ?? create(FileDescriptorProtoSchema), (name) =>
    byName.get(name),
  );
  return { names: files.map((f) => f.name), registry };
}

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-3.1.1",
  (target) => {
    describe("server reflection", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      async function serve(reflection?: boolean) {
        const serverId = uniqueServerId("reflection");
        const server = await startServer(closer, target, {
          serverId,
          ...(reflection !== undefined ? { reflection } : {}),
        });
        server.service(TestService, interopService);
        await server.announced();
        return startTransport(closer, target, { serverId });
      }

      it("lists the services and describes them by symbol and by file", async () => {
        const transport = await serve();
        const answers = await ask(transport, [
          { case: "listServices", value: "" },
          { case: "fileContainingSymbol", value: TestService.typeName },
          { case: "fileContainingSymbol", value: `${TestService.typeName}.UnaryCall` },
          { case: "fileContainingSymbol", value: "mqrpc.interop.v1.SimpleRequest.response_size" },
          { case: "fileByFilename", value: TestService.file.proto.name },
          { case: "fileContainingSymbol", value: "acme.Nothing" },
          { case: "fileByFilename", value: "acme/nothing.proto" },
          { case: "allExtensionNumbersOfType", value: "mqrpc.interop.v1.SimpleRequest" },
        ]);
        expect(answers).toHaveLength(8);
        const [list, bySymbol, byMethod, byField, byFile, unknown, unknownFile, extensions] =
          answers;
        expect(list).toEqual({
          case: "listServicesResponse",
          value: expect.objectContaining({
            service: [
              expect.objectContaining({ name: "grpc.reflection.v1.ServerReflection" }),
              expect.objectContaining({ name: "grpc.reflection.v1alpha.ServerReflection" }),
              expect.objectContaining({ name: TestService.typeName }),
            ],
          }),
        });
        for (const answer of [bySymbol, byMethod, byField, byFile]) {
          const { names, registry } = registryOf(answer);
          // The requested file first, then what it imports.
          expect(names[0]).toBe(TestService.file.proto.name);
          expect(names.sort()).toEqual(fileAndImports(TestService.file).sort());
          const service = registry.getService(TestService.typeName);
          expect(service?.methods.map((m) => m.name)).toEqual(
            TestService.methods.map((m) => m.name),
          );
        }
        for (const answer of [unknown, unknownFile]) {
          expect(answer?.case === "errorResponse" && answer.value.errorCode).toBe(Code.NotFound);
        }
        expect(extensions).toEqual({
          case: "allExtensionNumbersResponse",
          value: expect.objectContaining({
            baseTypeName: "mqrpc.interop.v1.SimpleRequest",
            extensionNumber: [],
          }),
        });
      });

      it("answers v1alpha as v1", async () => {
        const transport = await serve();
        const [list, file] = await ask(
          transport,
          [
            { case: "listServices", value: "" },
            { case: "fileContainingSymbol", value: TestService.typeName },
          ],
          true,
        );
        expect(
          list?.case === "listServicesResponse" && list.value.service.map((s) => s.name),
        ).toContain(TestService.typeName);
        expect(registryOf(file).names[0]).toBe(TestService.file.proto.name);
      });

      it("is not served with reflection: false", async () => {
        const transport = await serve(false);
        await expect(ask(transport, [{ case: "listServices", value: "" }])).rejects.toMatchObject({
          code: Code.Unimplemented,
        });
      });
    });
  },
);
