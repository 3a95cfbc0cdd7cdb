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
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ServerReflectionRequestSchema as RequestSchema,
  type ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";
import { RequestChannel } from "../request-channel.js";
import type { Upstream } from "./upstream.js";
import { callUpstream } from "./upstream-call.js";

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

/** How long a reflection that waits for its upstream waits between attempts, ms. */
const RETRY_MS = 250;

/** Largest reflection answer accepted, bytes (a file and its dependencies). */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/**
 * Asks `upstream` for its services and their files. `waitForReady` makes
 * the exchange wait (within `timeoutMs`) for an upstream that is not up
 * yet instead of failing at once.
 *
 * @throws ReflectionError naming the upstream when neither reflection
 *   version answers, or the exchange fails or times out.
 */
export async function reflectUpstream(
  upstream: Upstream,
  timeoutMs: number,
  waitForReady: boolean,
): Promise<ReflectedSchema> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await reflectOnce(upstream, deadline);
    } catch (e) {
      if (!waitForReady || !(e instanceof ReflectionError) || e.code !== Code.Unavailable) throw e;
      const left = deadline - Date.now();
      if (left <= 0) {
        // Waited the whole time for an upstream that never answered.
        const last = e.message.replace(`upstream ${upstream.url}: server reflection failed: `, "");
        throw new ReflectionError(
          `upstream ${upstream.url}: server reflection failed: DEADLINE_EXCEEDED: no answer within ${timeoutMs} ms (last: ${last})`,
          Code.DeadlineExceeded,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(RETRY_MS, left)));
    }
  }
}

async function reflectOnce(upstream: Upstream, deadline: number): Promise<ReflectedSchema> {
  try {
    return await discover(upstream, "v1", deadline);
  } catch (e) {
    if (!(e instanceof ReflectionError) || e.code !== Code.Unimplemented) {
      throw describe(e, upstream.url);
    }
  }
  try {
    return await discover(upstream, "v1alpha", deadline);
  } catch (e) {
    throw describe(e, upstream.url);
  }
}

function describe(e: unknown, url: string): ReflectionError {
  // The channel's own errors name the upstream already.
  const message = (e instanceof Error ? e.message : String(e)).replace(`upstream ${url}: `, "");
  const code = e instanceof ReflectionError ? e.code : Code.Unknown;
  // Most gRPC servers (grpcio, grpc-go) serve no reflection unless told to.
  const hint =
    code === Code.Unimplemented
      ? ' (the upstream serves no gRPC server reflection: name its services in "services", give its schema as "descriptorSet", or turn reflection on in the server)'
      : "";
  return new ReflectionError(`upstream ${url}: server reflection failed: ${message}${hint}`, code);
}

async function discover(
  upstream: Upstream,
  version: "v1" | "v1alpha",
  deadline: number,
): Promise<ReflectedSchema> {
  const stream = new ReflectionStream(upstream, version, deadline);
  try {
    const list = await stream.ask({ messageRequest: { case: "listServices", value: "*" } });
    if (list.messageResponse.case !== "listServicesResponse") {
      throw new ReflectionError(`list_services answered ${describeResponse(list)}`, Code.Unknown);
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
  private readonly requests = new RequestChannel();
  private readonly responses: AsyncGenerator<Uint8Array>;
  private readonly over = new AbortController();

  constructor(upstream: Upstream, version: "v1" | "v1alpha", deadline: number) {
    this.responses = callUpstream(upstream.channel, this.requests, {
      path: `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
      metadata: {},
      timeoutMs: Math.max(0, deadline - Date.now()),
      signal: this.over.signal,
      maxMessageBytes: MAX_ANSWER_BYTES,
    });
  }

  async ask(request: RequestInit): Promise<ServerReflectionResponse> {
    this.requests.push(toBinary(RequestSchema, create(RequestSchema, request)));
    let next: IteratorResult<Uint8Array>;
    try {
      next = await this.responses.next();
    } catch (e) {
      const error = ConnectError.from(e);
      throw new ReflectionError(
        `${codeName(error.code)}: ${error.rawMessage}`,
        error.code === Code.Canceled ? Code.Unknown : error.code,
      );
    }
    if (next.done) {
      throw new ReflectionError("the upstream ended the reflection stream early", Code.Unknown);
    }
    return fromBinary(ServerReflectionResponseSchema, next.value);
  }

  close(): void {
    this.requests.end();
    this.over.abort();
    void this.responses.return(undefined).catch(() => {});
  }
}

/** `DEADLINE_EXCEEDED` for Code.DeadlineExceeded, as gRPC writes codes. */
function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
