import { create, type DescFile, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ServerReflectionRequestSchema } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { file_mqrpc_v1_options } from "../gen/mqrpc/v1/options_pb.js";
import { file_mqrpc_v1_wire } from "../gen/mqrpc/v1/wire_pb.js";
import { answer, type ReflectionSource, registryOfFiles } from "./reflection.js";

const files: DescFile[] = [file_mqrpc_v1_wire, file_mqrpc_v1_options];
const source: ReflectionSource = {
  services: () => ["b.Service", "a.Service"],
  registry: () => registryOfFiles(files),
};

function ask(
  messageRequest: NonNullable<
    MessageInitShape<typeof ServerReflectionRequestSchema>["messageRequest"]
  >,
) {
  return answer(source, create(ServerReflectionRequestSchema, { host: "h", messageRequest }));
}

function fileNames(response: ReturnType<typeof ask>): string[] {
  const r = response.messageResponse;
  if (r?.case !== "fileDescriptorResponse") throw new Error(`got ${r?.case}`);
  return (r.value.fileDescriptorProto ?? []).map(
    (bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name,
  );
}

describe("reflection answers", () => {
  it("list services sorted and echo the request and host", () => {
    const response = ask({ case: "listServices", value: "*" });
    expect(response.validHost).toBe("h");
    expect(response.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "*" });
    expect(response.messageResponse).toEqual({
      case: "listServicesResponse",
      value: { service: [{ name: "a.Service" }, { name: "b.Service" }] },
    });
  });

  it("give a file with its imports, the requested file first", () => {
    expect(fileNames(ask({ case: "fileByFilename", value: "mqrpc/v1/options.proto" }))).toEqual([
      "mqrpc/v1/options.proto",
      "google/protobuf/descriptor.proto",
    ]);
    expect(fileNames(ask({ case: "fileContainingSymbol", value: "mqrpc.v1.MqttOptions" }))[0]).toBe(
      "mqrpc/v1/options.proto",
    );
    expect(
      fileNames(
        ask({ case: "fileContainingSymbol", value: "mqrpc.v1.MqttOptions.batched_stream" }),
      )[0],
    ).toBe("mqrpc/v1/options.proto");
    expect(fileNames(ask({ case: "fileContainingSymbol", value: "mqrpc.v1.Frame" }))).toEqual([
      "mqrpc/v1/wire.proto",
    ]);
  });

  it("find extensions by number and list a message's extension numbers", () => {
    const numbers = ask({
      case: "allExtensionNumbersOfType",
      value: "google.protobuf.MethodOptions",
    });
    const r = numbers.messageResponse;
    expect(r?.case).toBe("allExtensionNumbersResponse");
    const found = r?.case === "allExtensionNumbersResponse" ? r.value.extensionNumber : [];
    expect(found?.length).toBe(1);
    expect(
      fileNames(
        ask({
          case: "fileContainingExtension",
          value: {
            containingType: "google.protobuf.MethodOptions",
            extensionNumber: found?.[0] ?? 0,
          },
        }),
      )[0],
    ).toBe("mqrpc/v1/options.proto");
  });

  it("answer NOT_FOUND for what is not there, INVALID_ARGUMENT for an empty question", () => {
    for (const question of [
      { case: "fileByFilename", value: "nope.proto" },
      { case: "fileContainingSymbol", value: "mqrpc.v1.Nope" },
      { case: "fileContainingSymbol", value: "mqrpc.v1.Frame.nope" },
      { case: "allExtensionNumbersOfType", value: "mqrpc.v1.Nope" },
      {
        case: "fileContainingExtension",
        value: { containingType: "google.protobuf.MethodOptions", extensionNumber: 1 },
      },
    ] as const) {
      const r = ask(question).messageResponse;
      expect(r?.case === "errorResponse" && r.value.errorCode).toBe(Code.NotFound);
    }
    const r = ask({ case: undefined }).messageResponse;
    expect(r?.case === "errorResponse" && r.value.errorCode).toBe(Code.InvalidArgument);
  });

  it("say why a listed service without a schema is not found, when the source knows", () => {
    const gateway: ReflectionSource = { ...source, withoutSchema: "routed by name only" };
    const message = (src: ReflectionSource, symbol: string) => {
      const r = answer(
        src,
        create(ServerReflectionRequestSchema, {
          messageRequest: { case: "fileContainingSymbol", value: symbol },
        }),
      ).messageResponse;
      return r?.case === "errorResponse" ? r.value.errorMessage : r?.case;
    };
    const listed =
      "symbol a.Service not found: it is listed but has no schema here (routed by name only)";
    expect(message(gateway, "a.Service")).toBe(listed);
    expect(message(gateway, "a.Service.Method")).toBe(
      "symbol a.Service.Method not found: it is listed but has no schema here (routed by name only)",
    );
    // Not a listed service (a prefix of its name is not it), or no reason to give.
    expect(message(gateway, "a.ServiceX")).toBe("symbol a.ServiceX not found");
    expect(message(source, "a.Service")).toBe("symbol a.Service not found");
  });
});
