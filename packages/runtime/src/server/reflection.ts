/**
 * gRPC server reflection over MQTT (grpc.reflection.v1 and v1alpha, the
 * protocol of https://github.com/grpc/grpc/blob/master/doc/server-reflection.md):
 * tools list a server's services and fetch their schemas with no local
 * `.proto`. A native server answers for the services registered on it; a
 * gateway answers for the union of its upstreams.
 */
import {
  create,
  createFileRegistry,
  type DescFile,
  type FileRegistry,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflectionRequestSchema as ServerReflectionRequestSchemaV1Alpha,
  type ServerReflectionRequest as ServerReflectionRequestV1Alpha,
  ServerReflectionResponseSchema as ServerReflectionResponseSchemaV1Alpha,
  ServerReflection as ServerReflectionV1Alpha,
} from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { MqttServer } from "./mqtt-server.js";

/** What reflection answers from; asked afresh for every request, so it may change. */
export interface ReflectionSource {
  /** Fully qualified names of the services to list, e.g. `acme.power.v1.PowerService`. */
  services(): readonly string[];
  /** The files that define the services and everything they need. */
  registry(): FileRegistry;
  /**
   * Why a listed service may have no schema, and what gives it one: added
   * to the NOT_FOUND answer for such a service or one of its methods (a
   * gateway lists services it routes by name only).
   */
  readonly withoutSchema?: string;
}

/** Fully qualified names of the reflection services themselves. */
export const reflectionServiceNames: readonly string[] = [
  ServerReflection.typeName,
  ServerReflectionV1Alpha.typeName,
];

type ResponseInit = MessageInitShape<typeof ServerReflectionResponseSchema>;

/**
 * Registers `grpc.reflection.v1.ServerReflection` and
 * `grpc.reflection.v1alpha.ServerReflection` on `server`, answering from
 * `source`. Servers made by `createMqttServer` do this for their own
 * services unless `reflection: false`; a gateway calls it with the schema of
 * its upstreams. Unknown files and symbols are answered with an
 * ErrorResponse (NOT_FOUND), as gRPC servers do; the stream goes on.
 *
 * @throws Error when the reflection services are registered on `server` already.
 */
export function serveReflection(server: MqttServer, source: ReflectionSource): void {
  const serve = async function* (requests: AsyncIterable<ServerReflectionRequest>) {
    for await (const request of requests) yield answer(source, request);
  };
  // v1alpha's messages are v1's field for field: translated through their bytes.
  const serveAlpha = async function* (requests: AsyncIterable<ServerReflectionRequestV1Alpha>) {
    for await (const request of requests) {
      const v1 = fromBinary(
        ServerReflectionRequestSchema,
        toBinary(ServerReflectionRequestSchemaV1Alpha, request),
      );
      const response = create(ServerReflectionResponseSchema, answer(source, v1));
      yield fromBinary(
        ServerReflectionResponseSchemaV1Alpha,
        toBinary(ServerReflectionResponseSchema, response),
      );
    }
  };
  server.service(ServerReflection, { serverReflectionInfo: serve });
  server.service(ServerReflectionV1Alpha, { serverReflectionInfo: serveAlpha });
}

/** The answer to one reflection request. */
export function answer(source: ReflectionSource, request: ServerReflectionRequest): ResponseInit {
  const base = { validHost: request.host, originalRequest: request };
  const found = (files: DescFile[]): ResponseInit => ({
    ...base,
    messageResponse: {
      case: "fileDescriptorResponse",
      value: { fileDescriptorProto: withDependencies(files) },
    },
  });
  const notFound = (what: string, why?: string): ResponseInit => ({
    ...base,
    messageResponse: {
      case: "errorResponse",
      value: {
        errorCode: Code.NotFound,
        errorMessage: `${what} not found${why === undefined ? "" : `: ${why}`}`,
      },
    },
  });
  const question = request.messageRequest;
  switch (question.case) {
    case "listServices":
      return {
        ...base,
        messageResponse: {
          case: "listServicesResponse",
          value: { service: [...source.services()].sort().map((name) => ({ name })) },
        },
      };
    case "fileByFilename": {
      const file = source.registry().getFile(question.value);
      return file !== undefined ? found([file]) : notFound(`file ${question.value}`);
    }
    case "fileContainingSymbol": {
      const file = fileOfSymbol(source.registry(), question.value);
      if (file !== undefined) return found([file]);
      const symbol = question.value;
      const listed = source
        .services()
        .some((service) => symbol === service || symbol.startsWith(`${service}.`));
      return notFound(
        `symbol ${symbol}`,
        listed && source.withoutSchema !== undefined
          ? `it is listed but has no schema here (${source.withoutSchema})`
          : undefined,
      );
    }
    case "fileContainingExtension": {
      const registry = source.registry();
      const { containingType, extensionNumber } = question.value;
      const message = registry.getMessage(containingType);
      const extension =
        message !== undefined ? registry.getExtensionFor(message, extensionNumber) : undefined;
      return extension !== undefined
        ? found([extension.file])
        : notFound(`extension ${extensionNumber} of ${containingType}`);
    }
    case "allExtensionNumbersOfType": {
      const registry = source.registry();
      if (registry.getMessage(question.value) === undefined) {
        return notFound(`message type ${question.value}`);
      }
      const numbers: number[] = [];
      for (const type of registry) {
        if (type.kind === "extension" && type.extendee.typeName === question.value) {
          numbers.push(type.number);
        }
      }
      return {
        ...base,
        messageResponse: {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: question.value, extensionNumber: numbers.sort((a, b) => a - b) },
        },
      };
    }
    default:
      return {
        ...base,
        messageResponse: {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "the request asks nothing" },
        },
      };
  }
}

/**
 * The file that defines `symbol`: a service, a message, an enum or an
 * extension by its full name, or a member of one (a method, a field, an
 * enum value) by its parent's name and its own.
 */
function fileOfSymbol(registry: FileRegistry, symbol: string): DescFile | undefined {
  const type = registry.get(symbol);
  if (type !== undefined) return type.file;
  const dot = symbol.lastIndexOf(".");
  if (dot <= 0) return undefined;
  const parent = registry.get(symbol.slice(0, dot));
  if (parent === undefined) return undefined;
  const member = symbol.slice(dot + 1);
  const has =
    parent.kind === "service"
      ? parent.methods.some((m) => m.name === member)
      : parent.kind === "message"
        ? parent.fields.some((f) => f.name === member) ||
          parent.oneofs.some((o) => o.name === member)
        : parent.kind === "enum"
          ? parent.values.some((v) => v.name === member)
          : false;
  return has ? parent.file : undefined;
}

/** Serialized descriptors of `files` and everything they import, each once, the requested ones first. */
function withDependencies(files: DescFile[]): Uint8Array[] {
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  const queue = [...files];
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    if (seen.has(file.name)) continue;
    seen.add(file.name);
    out.push(toBinary(FileDescriptorProtoSchema, file.proto));
    queue.push(...file.dependencies);
  }
  return out;
}

/** One registry of `files` and everything they import (descriptors are rebuilt from their protos). */
export function registryOfFiles(files: readonly DescFile[]): FileRegistry {
  // Imports first: a FileDescriptorSet is read in order.
  const ordered = new Map<string, DescFile>();
  const visit = (file: DescFile): void => {
    if (ordered.has(file.name)) return;
    for (const dependency of file.dependencies) visit(dependency);
    ordered.set(file.name, file);
  };
  for (const file of files) visit(file);
  return createFileRegistry(
    create(FileDescriptorSetSchema, { file: [...ordered.values()].map((f) => f.proto) }),
  );
}
