/**
 * The schema of a server through gRPC server reflection over MQTT: the
 * services it lists, the files that define them and every file they
 * import. `grpc.reflection.v1` first, `v1alpha` when the server has only
 * that (their messages are the same field for field).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import {
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";
import { MessageQueue } from "../message-queue.js";
import { REFLECTION_SERVICES, type Schema, schemaOf } from "./schema.js";

/** Options of {@link reflectSchema}. */
export interface ReflectOptions {
  /** Deadline of the reflection call, in ms. */
  readonly timeoutMs: number;
  /** Request metadata for the reflection call (`--reflect-header`). */
  readonly header: Headers;
  readonly signal: AbortSignal;
  /** Keep the reflection services in the list of services. */
  readonly includeReflection?: boolean;
}

type Question = ServerReflectionRequest["messageRequest"];
type Answer = ServerReflectionResponse["messageResponse"];

/**
 * Asks the server behind `transport` for its services and their files.
 *
 * @throws ConnectError as the reflection call ends: UNIMPLEMENTED (with a
 *   hint at `--schema`) when the server does not serve reflection, NOT_FOUND
 *   when it cannot name a file a service needs, UNAVAILABLE when offline.
 */
export async function reflectSchema(
  transport: MqttTransport,
  options: ReflectOptions,
): Promise<Schema> {
  let session: ReflectionSession | undefined;
  let services: string[] = [];
  for (const service of [...REFLECTION_SERVICES]) {
    const attempt = new ReflectionSession(transport, service, options);
    try {
      const list = await attempt.ask({ case: "listServices", value: "" });
      if (list.case !== "listServicesResponse") throw unexpected(list);
      services = list.value.service.map((s) => s.name);
      session = attempt;
      break;
    } catch (e) {
      attempt.close();
      if (ConnectError.from(e).code !== Code.Unimplemented) throw e;
    }
  }
  if (session === undefined) {
    throw new ConnectError(
      "the server does not answer gRPC server reflection: give its schema with --schema " +
        "(a .proto directory, a buf module, or a buf build image / FileDescriptorSet)",
      Code.Unimplemented,
    );
  }
  try {
    const files = new Map<string, FileDescriptorProto>();
    const add = (answer: Answer) => {
      if (answer.case !== "fileDescriptorResponse") throw unexpected(answer);
      for (const bytes of answer.value.fileDescriptorProto) {
        const file = fromBinary(FileDescriptorProtoSchema, bytes);
        if (!files.has(file.name)) files.set(file.name, file);
      }
    };
    const defines = (name: string) =>
      [...files.values()].some((f) => f.service.some((s) => qualified(f, s.name) === name));
    for (const name of services) {
      if (!defines(name)) add(await session.ask({ case: "fileContainingSymbol", value: name }));
    }
    // Imports the server left out of its answers.
    for (;;) {
      const missing = [...files.values()].flatMap((f) => f.dependency).find((d) => !files.has(d));
      if (missing === undefined) break;
      add(await session.ask({ case: "fileByFilename", value: missing }));
    }
    const shown = options.includeReflection
      ? services
      : services.filter((s) => !REFLECTION_SERVICES.has(s));
    return schemaOf("server reflection", [...files.values()], shown);
  } finally {
    session.close();
  }
}

function qualified(file: FileDescriptorProto, name: string): string {
  return file.package === "" ? name : `${file.package}.${name}`;
}

function unexpected(answer: Answer): ConnectError {
  if (answer.case === "errorResponse") {
    return new ConnectError(
      `server reflection: ${answer.value.errorMessage}`,
      answer.value.errorCode as Code,
    );
  }
  return new ConnectError(`server reflection answered ${answer.case ?? "nothing"}`, Code.Internal);
}

/** One reflection stream: a question, then its answer, as many times as needed. */
class ReflectionSession {
  private readonly requests = new MessageQueue<Uint8Array>();
  private responses: AsyncIterator<Uint8Array> | undefined;
  private opening: Promise<AsyncIterator<Uint8Array>> | undefined;
  private readonly abort = new AbortController();

  constructor(
    private readonly transport: MqttTransport,
    private readonly service: string,
    private readonly options: ReflectOptions,
  ) {}

  async ask(question: Question): Promise<Answer> {
    const request = create(ServerReflectionRequestSchema, { messageRequest: question });
    this.requests.push(toBinary(ServerReflectionRequestSchema, request));
    // The server's headers come with its first answer: open after the first question.
    this.opening ??= this.transport
      .rawStream({
        service: this.service,
        method: "ServerReflectionInfo",
        kind: "bidi_streaming",
        message: this.requests,
        header: this.options.header,
        timeoutMs: this.options.timeoutMs,
        signal: AbortSignal.any([this.options.signal, this.abort.signal]),
      })
      .then((response) => response.message[Symbol.asyncIterator]());
    this.responses ??= await this.opening;
    const next = await this.responses.next();
    if (next.done === true) {
      throw new ConnectError("server reflection ended the stream before answering", Code.Internal);
    }
    return fromBinary(ServerReflectionResponseSchema, next.value).messageResponse;
  }

  /** Half-closes the stream and stops reading (which cancels what is left of the call). */
  close(): void {
    this.requests.end();
    const responses = this.responses;
    if (responses !== undefined) {
      // Read to the end so the call ends with OK after the half-close.
      void (async () => {
        try {
          for (;;) if ((await responses.next()).done === true) break;
        } catch {
          // The call's status does not matter once the schema is in.
        }
      })();
    } else {
      this.opening?.catch(() => {});
      this.abort.abort(new ConnectError("reflection not needed", Code.Canceled));
    }
  }
}
