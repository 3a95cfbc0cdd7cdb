/** What `mqrpc call` does (its options: call.ts). */
import { inspect } from "node:util";
import {
  type DescMethod,
  fromBinary,
  fromJson,
  type JsonValue,
  type Registry,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import {
  createMqttTransport,
  DEFAULT_MAX_MESSAGE_BYTES,
  encodeTopicSegment,
  type MqttTransport,
  type RawStreamResponse,
} from "@mqrpc/runtime";
import type { MqttClient } from "mqtt";
import { fillBytesFromFiles } from "../call/bytes-files.js";
import {
  type DataSource,
  dataSource,
  type JsonDocument,
  jsonDocuments,
} from "../call/json-documents.js";
import { metadataLines, parseMetadata } from "../call/metadata-flags.js";
import { statusJson } from "../call/status-output.js";
import { formatBytes, UploadProgress } from "../call/upload-progress.js";
import {
  type BrokerConnection,
  connectMqtt,
  endMqtt,
  protocolName,
  resolveConnection,
} from "../connection.js";
import { debugRequested } from "../error-report.js";
import { CliError, EXIT_OK, exitCodeForStatus } from "../exit-codes.js";
import { writeOut } from "../output.js";
import { obtainSchema } from "../schema/obtain-schema.js";
import type { Schema } from "../schema/schema.js";
import { findMethod } from "../schema/schema.js";
import { needsReflection } from "../schema/schema-options.js";
import { listenForStop } from "../stop-signal.js";
import type { CallFlags } from "./call.js";

/** How long reflection may take when `--timeout` does not bound the command. */
const REFLECTION_TIMEOUT_MS = 10_000;

/**
 * Connects, gets the schema, runs the call and prints its responses;
 * resolves to the exit code (0, or 64 + the status code).
 *
 * Every RPC status it ends with, the call's or one before it (the broker
 * connection, reflection, `--timeout`), is printed on stderr as JSON.
 *
 * @throws CliError for bad input or an unknown method.
 */
export async function call(
  serverId: string,
  methodName: string,
  flags: CallFlags,
): Promise<number> {
  const connection = resolveConnection(flags);
  const header = parseMetadata(flags.header, "-H");
  const source = dataSource(flags.data);
  const verbose =
    flags.verbose === true ? (line: string) => process.stderr.write(`${line}\n`) : undefined;
  const started = performance.now();
  const deadline = flags.timeout === undefined ? undefined : Date.now() + flags.timeout;
  const remaining = (fallback?: number) =>
    deadline === undefined ? fallback : Math.max(1, deadline - Date.now());
  const stop = listenForStop();
  const timeout = flags.timeout === undefined ? undefined : AbortSignal.timeout(flags.timeout);
  const setup = timeout === undefined ? stop.signal : AbortSignal.any([stop.signal, timeout]);
  let client: MqttClient | undefined;
  let transport: MqttTransport | undefined;
  let reflectionTransport: MqttTransport | undefined;
  try {
    client = await connectMqtt(connection, setup);
    verbose?.(
      `* connected to ${connection.url} (${protocolName(connection.protocolVersion)}) as ` +
        `${client.options.clientId} in ${elapsed(started)}`,
    );
    const transportOptions = {
      mqtt: client,
      serverId,
      topicPrefix: connection.topicPrefix,
      ...(flags.waitForServer === true ? { waitForServer: true } : {}),
    };
    transport = createMqttTransport({
      ...transportOptions,
      ...(flags.maxMessageSize !== undefined ? { maxMessageBytes: flags.maxMessageSize } : {}),
    });
    // --max-message-size bounds the call's responses; the reflection
    // replies (the CLI's own traffic) get at least the default limit: a
    // small value must not fail the call before it starts. Transports on
    // one client share its subscriptions, so a second one costs little.
    if (needsReflection(flags) && (flags.maxMessageSize ?? Infinity) < DEFAULT_MAX_MESSAGE_BYTES) {
      reflectionTransport = createMqttTransport(transportOptions);
    }
    const schemaStarted = performance.now();
    const schema = await obtainSchema(flags, reflectionTransport ?? transport, {
      timeoutMs: remaining(REFLECTION_TIMEOUT_MS) ?? REFLECTION_TIMEOUT_MS,
      signal: stop.signal,
    });
    verbose?.(`* schema from ${schema.source} in ${elapsed(schemaStarted)}`);
    const method = findMethod(schema, methodName);
    return await runCall({
      serverId,
      method,
      schema,
      source,
      header,
      flags,
      connection,
      client,
      transport,
      stop: stop.signal,
      stopReceived: stop.received,
      timeoutMs: remaining(),
      verbose,
    });
  } catch (e) {
    if (stop.received() !== undefined) {
      if (stop.received() !== "SIGPIPE")
        process.stderr.write(`mqrpc: stopped by ${stop.received()}\n`);
      return EXIT_OK;
    }
    const code = e instanceof ConnectError ? e.code : undefined;
    if (timeout?.aborted === true && (code === Code.Canceled || code === Code.DeadlineExceeded)) {
      return printStatus(
        new ConnectError(
          `--timeout of ${flags.timeout} ms passed before the call started`,
          Code.DeadlineExceeded,
          undefined,
          undefined,
          e,
        ),
      );
    }
    // A status before the call (the broker, reflection) is printed as the
    // call's own would be: a script reads every exit 64 + code the same way.
    if (e instanceof ConnectError) return printStatus(e);
    throw e;
  } finally {
    await Promise.all([transport?.close(), reflectionTransport?.close()]);
    if (client !== undefined) await endMqtt(client);
    stop.dispose();
  }
}

interface CallPlan {
  readonly serverId: string;
  readonly method: DescMethod;
  readonly schema: Schema;
  readonly source: DataSource;
  readonly header: Headers;
  readonly flags: CallFlags;
  readonly connection: BrokerConnection;
  readonly client: MqttClient;
  readonly transport: MqttTransport;
  readonly stop: AbortSignal;
  readonly stopReceived: () => string | undefined;
  readonly timeoutMs: number | undefined;
  readonly verbose: ((line: string) => void) | undefined;
}

async function runCall(plan: CallPlan): Promise<number> {
  const { method, schema, flags, verbose } = plan;
  const service = method.parent.typeName;
  const kind = method.methodKind;
  const showProgress = flags.progress && process.stderr.isTTY === true;
  let progress: UploadProgress | undefined;
  let sentMessages = 0;
  let fileBytes = 0;

  /** One request document as protobuf binary, files read, the bar fed. */
  const encode = async (doc: JsonDocument | undefined): Promise<Uint8Array> => {
    const filled = await fillBytesFromFiles(method.input, doc?.value ?? {});
    let bytes: Uint8Array;
    try {
      const message = fromJson(method.input, filled.json as JsonValue, {
        registry: schema.registry,
      });
      bytes = toBinary(method.input, message);
    } catch (e) {
      throw new CliError(
        `request ${doc?.index ?? 1} is not a valid ${method.input.typeName}: ${(e as Error).message}`,
      );
    }
    fileBytes += filled.fileBytes;
    if (filled.fileBytes > 0 && showProgress && progress === undefined) {
      const base = `${plan.connection.topicPrefix}/s/${encodeTopicSegment(plan.serverId)}/`;
      progress = new UploadProgress(plan.client, base);
    }
    progress?.addMessage(bytes.byteLength);
    sentMessages++;
    return bytes;
  };

  // A call fails with the input's error, not the status a cancelled call gets.
  let inputError: unknown;
  const cancelForInput = new AbortController();
  let requests: AsyncIterable<Uint8Array>;
  if (kind === "unary" || kind === "server_streaming") {
    let first: JsonDocument | undefined;
    for await (const doc of jsonDocuments(plan.source)) {
      if (first !== undefined) {
        throw new CliError(
          `${service}/${method.name} is ${kind.replace("_", "-")}: give one request message, not ${doc.index}`,
        );
      }
      first = doc;
    }
    const bytes = await encode(first);
    requests = (async function* () {
      yield bytes;
    })();
  } else {
    requests = (async function* () {
      try {
        for await (const doc of jsonDocuments(plan.source)) yield await encode(doc);
      } catch (e) {
        inputError = e;
        cancelForInput.abort(new ConnectError("the request input failed", Code.Canceled));
      }
    })();
  }

  verbose?.(`* calling ${service}/${method.name} (${kind.replace("_", " ")}) on ${plan.serverId}`);
  for (const line of metadataLines(plan.header)) verbose?.(`> ${line}`);
  const started = performance.now();
  let headersAt: number | undefined;
  let received = 0;
  let failure: ConnectError | undefined;
  let response: RawStreamResponse | undefined;
  try {
    response = await plan.transport.rawStream({
      service,
      method: method.name,
      kind,
      message: requests,
      header: plan.header,
      ...(plan.timeoutMs !== undefined ? { timeoutMs: plan.timeoutMs } : {}),
      signal: AbortSignal.any([plan.stop, cancelForInput.signal]),
    });
    headersAt = performance.now();
    for (const line of metadataLines(response.header)) verbose?.(`< ${line}`);
    for await (const bytes of response.message) {
      const message = fromBinary(method.output, bytes);
      const json = toJson(method.output, message, {
        registry: schema.registry,
        alwaysEmitImplicit: flags.emitDefaults === true,
      });
      await writeOut(`${JSON.stringify(json)}\n`);
      received++;
    }
  } catch (e) {
    failure = withFlagForLimit(ConnectError.from(e));
  } finally {
    progress?.stop(failure === undefined);
  }
  if (response !== undefined) {
    for (const line of metadataLines(response.trailer)) verbose?.(`< (trailer) ${line}`);
  } else if (failure !== undefined) {
    for (const line of metadataLines(failure.metadata)) verbose?.(`< (metadata) ${line}`);
  }
  const timing =
    `after ${elapsed(started)}` +
    (headersAt !== undefined
      ? ` (response headers after ${(headersAt - started).toFixed(1)} ms)`
      : "") +
    `, ${sentMessages} request and ${received} response message${received === 1 ? "" : "s"}` +
    (fileBytes > 0 ? `, ${formatBytes(fileBytes)} from files` : "");
  if (inputError !== undefined) throw inputError;
  if (failure === undefined) {
    verbose?.(`* ok ${timing}`);
    return EXIT_OK;
  }
  verbose?.(`* ${codeToString(failure.code)} ${timing}`);
  if (plan.stop.aborted) {
    // Stopped by a signal: said on stderr; quietly when stdout's reader left (`| head`).
    if (plan.stopReceived() !== "SIGPIPE") {
      process.stderr.write(`mqrpc: call canceled: ${failure.rawMessage}\n`);
    }
    return EXIT_OK;
  }
  return printStatus(failure, schema.registry);
}

/**
 * Prints a failed status on stderr as JSON (status-output.ts), with
 * `MQRPC_DEBUG` the whole error after it; returns the exit code, 64 + code.
 */
function printStatus(error: ConnectError, registry?: Registry): number {
  process.stderr.write(`${JSON.stringify(statusJson(error, registry), null, 2)}\n`);
  if (debugRequested()) process.stderr.write(`${inspect(error, { depth: 4 })}\n`);
  return exitCodeForStatus(error.code);
}

/**
 * A response over the transport's limit fails with the runtime's words,
 * `… exceeds the transport's maxMessageBytes (N bytes)`: the user set that
 * limit (or left it at its default) with --max-message-size, so name the flag.
 */
function withFlagForLimit(error: ConnectError): ConnectError {
  if (error.code !== Code.ResourceExhausted) return error;
  const message = error.rawMessage.replace("the transport's maxMessageBytes", "--max-message-size");
  if (message === error.rawMessage) return error;
  const named = new ConnectError(message, error.code, error.metadata, undefined, error);
  named.details.push(...error.details);
  return named;
}

function elapsed(since: number): string {
  return `${(performance.now() - since).toFixed(1)} ms`;
}
