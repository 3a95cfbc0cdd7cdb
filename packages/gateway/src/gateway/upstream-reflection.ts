/**
 * Learns an upstream's services and their schema with gRPC server
 * reflection (https://github.com/grpc/grpc/blob/master/doc/server-reflection.md):
 * `grpc.reflection.v1`, falling back to `v1alpha` for servers that only
 * have the older one. One reflection stream per discovery: list the
 * services, fetch the file of each (`file_containing_symbol`, which brings
 * the files it depends on), then any dependency still missing by name.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { type Client, status as grpcStatus, Metadata, type StatusObject } from "@grpc/grpc-js";
import {
  ServerReflectionRequestSchema as RequestSchema,
  type ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";

/** What reflection told of one upstream. */
export interface ReflectedSchema {
  /** Fully qualified service names, the reflection services left out. */
  readonly services: string[];
  /** The files defining them and everything they import. */
  readonly files: FileDescriptorProto[];
  /** The reflection version that answered. */
  readonly version: "v1" | "v1alpha";
}

/** Services reflection lists that the gateway serves itself, never routes. */
export const REFLECTION_SERVICES: ReadonlySet<string> = new Set([
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

type RequestInit = MessageInitShape<typeof ServerReflectionRequestSchema>;

/** A failed reflection exchange, with the upstream's status. */
export class ReflectionError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
    this.name = "ReflectionError";
  }
}

/**
 * Asks the upstream behind `client` for its services and their files.
 * `waitForReady` makes the exchange wait (within `timeoutMs`) for an
 * upstream that is not up yet instead of failing at once.
 *
 * @throws ReflectionError naming `url` when neither reflection version
 *   answers, or the exchange fails or times out.
 */
export async function reflectUpstream(
  client: Client,
  url: string,
  timeoutMs: number,
  waitForReady: boolean,
): Promise<ReflectedSchema> {
  const deadline = Date.now() + timeoutMs;
  try {
    return await discover(client, "v1", deadline, waitForReady);
  } catch (e) {
    if (!(e instanceof ReflectionError) || e.code !== grpcStatus.UNIMPLEMENTED) {
      throw describe(e, url);
    }
  }
  try {
    return await discover(client, "v1alpha", deadline, waitForReady);
  } catch (e) {
    throw describe(e, url);
  }
}

function describe(e: unknown, url: string): Error {
  const message = e instanceof Error ? e.message : String(e);
  const code = e instanceof ReflectionError ? e.code : grpcStatus.UNKNOWN;
  // Most gRPC servers (grpcio, grpc-go) serve no reflection unless told to.
  const hint =
    code === grpcStatus.UNIMPLEMENTED
      ? ' (the upstream serves no gRPC server reflection: name its services in "services", give its schema as "descriptorSet", or turn reflection on in the server)'
      : "";
  return new ReflectionError(`upstream ${url}: server reflection failed: ${message}${hint}`, code);
}

async function discover(
  client: Client,
  version: "v1" | "v1alpha",
  deadline: number,
  waitForReady: boolean,
): Promise<ReflectedSchema> {
  const stream = new ReflectionStream(client, version, deadline, waitForReady);
  try {
    const list = await stream.ask({ messageRequest: { case: "listServices", value: "*" } });
    if (list.messageResponse.case !== "listServicesResponse") {
      throw new ReflectionError(
        `list_services answered ${describeResponse(list)}`,
        grpcStatus.UNKNOWN,
      );
    }
    const services = list.messageResponse.value.service
      .map((s) => s.name)
      .filter((name) => !REFLECTION_SERVICES.has(name));
    const files = new Map<string, FileDescriptorProto>();
    for (const service of services) {
      const answer = await stream.ask({
        messageRequest: { case: "fileContainingSymbol", value: service },
      });
      // A service whose file cannot be had is still routed, without its schema.
      if (answer.messageResponse.case === "fileDescriptorResponse") addFiles(files, answer);
    }
    for (let missing = missingDependencies(files); missing.length > 0; ) {
      const before = files.size;
      for (const name of missing) {
        const answer = await stream.ask({
          messageRequest: { case: "fileByFilename", value: name },
        });
        if (answer.messageResponse.case === "fileDescriptorResponse") addFiles(files, answer);
      }
      if (files.size === before) break;
      missing = missingDependencies(files);
    }
    return { services, files: [...files.values()], version };
  } finally {
    stream.close();
  }
}

function addFiles(files: Map<string, FileDescriptorProto>, answer: ServerReflectionResponse): void {
  if (answer.messageResponse.case !== "fileDescriptorResponse") return;
  for (const bytes of answer.messageResponse.value.fileDescriptorProto) {
    const file = fromBinary(FileDescriptorProtoSchema, bytes);
    if (!files.has(file.name)) files.set(file.name, file);
  }
}

function missingDependencies(files: Map<string, FileDescriptorProto>): string[] {
  const missing = new Set<string>();
  for (const file of files.values()) {
    for (const dependency of file.dependency) if (!files.has(dependency)) missing.add(dependency);
  }
  return [...missing];
}

function describeResponse(response: ServerReflectionResponse): string {
  if (response.messageResponse.case === "errorResponse") {
    const { errorCode, errorMessage } = response.messageResponse.value;
    return `error ${errorCode}: ${errorMessage}`;
  }
  return response.messageResponse.case ?? "nothing";
}

/**
 * One `ServerReflectionInfo` stream, request and response in lock step.
 * v1 and v1alpha messages are the same field for field, so both versions
 * use v1's schemas; only the method path differs.
 */
class ReflectionStream {
  private readonly call;
  private readonly responses: AsyncIterator<ServerReflectionResponse>;
  private readonly status: Promise<StatusObject>;

  constructor(client: Client, version: "v1" | "v1alpha", deadline: number, waitForReady: boolean) {
    const metadata = new Metadata(waitForReady ? { waitForReady: true } : {});
    this.call = client.makeBidiStreamRequest(
      `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
      (request: RequestInit) =>
        Buffer.from(toBinary(RequestSchema, create(RequestSchema, request))),
      (bytes: Buffer) => fromBinary(ServerReflectionResponseSchema, bytes),
      metadata,
      { deadline },
    );
    this.call.on("error", () => {});
    this.status = new Promise((resolve) => this.call.once("status", resolve));
    this.responses = (this.call as AsyncIterable<ServerReflectionResponse>)[Symbol.asyncIterator]();
  }

  async ask(request: RequestInit): Promise<ServerReflectionResponse> {
    this.call.write(request);
    let next: IteratorResult<ServerReflectionResponse>;
    try {
      next = await this.responses.next();
    } catch {
      next = { done: true, value: undefined };
    }
    if (next.done) {
      const status = await this.status;
      throw new ReflectionError(
        `${grpcStatus[status.code] ?? status.code}: ${status.details}`,
        status.code === grpcStatus.OK ? grpcStatus.UNKNOWN : status.code,
      );
    }
    return next.value;
  }

  close(): void {
    this.call.end();
    this.call.cancel();
  }
}
