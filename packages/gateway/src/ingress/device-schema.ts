/**
 * A device's schema, for the calls the ingress cannot forward as bytes
 * (JSON codecs and the Connect protocol): learned from the device itself
 * with gRPC server reflection over MQTT (native mqrpc servers and gateways
 * answer it), or given to the ingress as a descriptor set.
 */
import {
  create,
  createFileRegistry,
  type DescFile,
  type DescMethod,
  type DescService,
  type FileRegistry,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  type FileDescriptorSet,
  FileDescriptorSetSchema,
  file_google_protobuf_any,
  file_google_protobuf_api,
  file_google_protobuf_descriptor,
  file_google_protobuf_duration,
  file_google_protobuf_empty,
  file_google_protobuf_field_mask,
  file_google_protobuf_source_context,
  file_google_protobuf_struct,
  file_google_protobuf_timestamp,
  file_google_protobuf_type,
  file_google_protobuf_wrappers,
} from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import {
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";
import { RequestChannel } from "../request-channel.js";

/** The methods of a device's services, by fully qualified service name and method name. */
export interface DeviceSchema {
  /** Every file of the schema (for JSON's `Any` and extensions). */
  readonly registry: FileRegistry;
  /** The services the device offers. */
  readonly services: readonly DescService[];
  /** The method `service`/`name`, or undefined when the schema lacks it. */
  method(service: string, name: string): DescMethod | undefined;
}

/** A descriptor set as `buf build -o x.binpb` writes it, decoded, or a registry. */
export type DescriptorSetInput = Uint8Array | FileDescriptorSet | FileRegistry;

/** The reflection services tried, newest first (both speak the same messages). */
const REFLECTION_SERVICES = [
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

/** Well-known types a device's files may import without sending them. */
const WELL_KNOWN: ReadonlyMap<string, DescFile> = new Map(
  [
    file_google_protobuf_any,
    file_google_protobuf_api,
    file_google_protobuf_descriptor,
    file_google_protobuf_duration,
    file_google_protobuf_empty,
    file_google_protobuf_field_mask,
    file_google_protobuf_source_context,
    file_google_protobuf_struct,
    file_google_protobuf_timestamp,
    file_google_protobuf_type,
    file_google_protobuf_wrappers,
  ].map((file) => [file.proto.name, file]),
);

/** A schema made of `registry`, offering `services` (every service in it when left out). */
export function schemaOf(registry: FileRegistry, services?: readonly string[]): DeviceSchema {
  const descs: DescService[] = [];
  if (services === undefined) {
    for (const type of registry) if (type.kind === "service") descs.push(type);
  } else {
    for (const name of services) {
      const desc = registry.getService(name);
      if (desc !== undefined) descs.push(desc);
    }
  }
  const methods = new Map<string, DescMethod>();
  for (const service of descs) {
    for (const method of service.methods) methods.set(`${service.typeName}/${method.name}`, method);
  }
  return {
    registry,
    services: descs,
    method: (service, name) => methods.get(`${service}/${name}`),
  };
}

/**
 * The schema of a `descriptorSet` option.
 *
 * @throws Error naming the option when the set does not decode or lacks a dependency.
 */
export function schemaFromDescriptorSet(input: DescriptorSetInput): DeviceSchema {
  if (!(input instanceof Uint8Array) && !("$typeName" in input)) return schemaOf(input);
  try {
    const set = input instanceof Uint8Array ? fromBinary(FileDescriptorSetSchema, input) : input;
    const files = new Map(set.file.map((file) => [file.name, file]));
    return schemaOf(registryOf(files, [...files.keys()]));
  } catch (e) {
    throw new Error(
      `descriptorSet option: not a usable FileDescriptorSet (${e instanceof Error ? e.message : String(e)})`,
    );
  }
}

/**
 * Asks the device behind `transport` for its services and their files with
 * gRPC server reflection (v1, then v1alpha), in one bidi call.
 *
 * @throws ConnectError: the reflection call's own failure (UNAVAILABLE for an
 *   offline device, UNIMPLEMENTED for a device without reflection), or
 *   INTERNAL when the files it sent do not make a schema.
 */
export async function reflectSchema(
  transport: MqttTransport,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<DeviceSchema> {
  let failure: ConnectError | undefined;
  for (const service of REFLECTION_SERVICES) {
    try {
      return await reflectWith(transport, service, timeoutMs, signal);
    } catch (e) {
      failure = ConnectError.from(e);
      if (failure.code !== Code.Unimplemented) throw failure;
    }
  }
  throw new ConnectError(
    `the device answers no gRPC server reflection (${failure?.rawMessage ?? "unimplemented"})`,
    Code.Unimplemented,
  );
}

type ReflectionRequest = MessageInitShape<typeof ServerReflectionRequestSchema>;

async function reflectWith(
  transport: MqttTransport,
  service: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<DeviceSchema> {
  const requests = new RequestChannel();
  const send = (request: ReflectionRequest) =>
    requests.push(
      toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, request)),
    );
  // The first request goes out before the call resolves: the device sends
  // its response headers with its first answer.
  send({ messageRequest: { case: "listServices", value: "" } });
  const call = await transport.rawStream({
    service,
    method: "ServerReflectionInfo",
    kind: "bidi_streaming",
    message: requests,
    timeoutMs,
    ...(signal !== undefined ? { signal } : {}),
  });
  const answers = call.message[Symbol.asyncIterator]();
  const answer = async (): Promise<ServerReflectionResponse> => {
    const next = await answers.next();
    if (next.done === true) {
      throw new ConnectError("the reflection stream ended before its answer", Code.Internal);
    }
    return fromBinary(ServerReflectionResponseSchema, next.value);
  };
  try {
    const listed = await answer();
    if (listed.messageResponse.case !== "listServicesResponse") {
      throw unexpected(listed);
    }
    const services = listed.messageResponse.value.service.map((s) => s.name);
    const files = new Map<string, FileDescriptorProto>();
    const take = (response: ServerReflectionResponse): void => {
      if (response.messageResponse.case !== "fileDescriptorResponse") return;
      for (const bytes of response.messageResponse.value.fileDescriptorProto) {
        const file = fromBinary(FileDescriptorProtoSchema, bytes);
        if (!files.has(file.name)) files.set(file.name, file);
      }
    };
    for (const name of services) {
      send({ messageRequest: { case: "fileContainingSymbol", value: name } });
      take(await answer());
    }
    // Dependencies a device did not send along (some servers send only the
    // file asked for) are asked for by name.
    const asked = new Set<string>();
    for (;;) {
      const missing = [...files.values()]
        .flatMap((f) => f.dependency)
        .filter((d) => !files.has(d) && !WELL_KNOWN.has(d) && !asked.has(d));
      if (missing.length === 0) break;
      for (const name of missing) {
        asked.add(name);
        send({ messageRequest: { case: "fileByFilename", value: name } });
        take(await answer());
      }
    }
    requests.end();
    while ((await answers.next()).done !== true) {
      // The device answers nothing after the half-close; read to the status.
    }
    const roots = services.flatMap((name) => {
      const file = [...files.values()].find((f) => declares(f, name));
      return file === undefined ? [] : [file.name];
    });
    return schemaOf(registryOf(files, roots), services);
  } catch (e) {
    requests.end();
    await answers.return?.();
    throw ConnectError.from(e, Code.Internal);
  }
}

function unexpected(response: ServerReflectionResponse): ConnectError {
  if (response.messageResponse.case === "errorResponse") {
    const { errorCode, errorMessage } = response.messageResponse.value;
    return new ConnectError(`reflection: ${errorMessage}`, errorCode as Code);
  }
  return new ConnectError(
    `reflection: unexpected answer ${response.messageResponse.case ?? "(empty)"}`,
    Code.Internal,
  );
}

/** Whether `file` declares the service `name` (fully qualified). */
function declares(file: FileDescriptorProto, name: string): boolean {
  const prefix = file.package === "" ? "" : `${file.package}.`;
  return file.service.some((s) => `${prefix}${s.name}` === name);
}

/** A registry of `roots` and their dependencies, dependencies first, well-known types filled in. */
function registryOf(
  files: ReadonlyMap<string, FileDescriptorProto>,
  roots: readonly string[],
): FileRegistry {
  const ordered: FileDescriptorProto[] = [];
  const visited = new Set<string>();
  const visit = (name: string, from: string | undefined): void => {
    if (visited.has(name)) return;
    visited.add(name);
    const file = files.get(name) ?? WELL_KNOWN.get(name)?.proto;
    if (file === undefined) {
      throw new ConnectError(
        `the schema lacks ${name}${from === undefined ? "" : `, imported by ${from}`}`,
        Code.Internal,
      );
    }
    for (const dep of file.dependency) visit(dep, name);
    ordered.push(file);
  };
  for (const root of roots) visit(root, undefined);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
}
