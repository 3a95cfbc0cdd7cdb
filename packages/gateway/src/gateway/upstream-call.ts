/**
 * One gRPC call to an upstream on an HTTP/2 stream of its channel
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md), with
 * message bytes passed through untouched: each request message goes out in
 * a 5-byte envelope (Connect's `encodeEnvelope`), each response message is
 * cut out of its envelope (envelope-reader.ts) and decompressed when the
 * upstream compressed it (gzip, deflate), never decoded. Every method kind travels
 * the same way, so no schema is needed.
 *
 * This is written on `node:http2` rather than `@grpc/grpc-js`, which would
 * forward the same bytes: grpc-js spends about twice the CPU per call
 * (channel, load balancing, interceptor and filter layers a forwarder does
 * not use), and the gateway process is the busiest of the path (issue 13's
 * bench rows).
 *
 * Flow control holds end to end: a request message is written only after
 * the stream took the previous one (`write()` / `'drain'`), and the
 * response stream is paused while 64 KiB of whole messages wait for the
 * caller to ask for them, so the HTTP/2 stream's window closes on a slow
 * caller.
 */
import {
  type ClientHttp2Stream,
  constants,
  type Http2Session,
  type IncomingHttpHeaders,
} from "node:http2";
import { promisify } from "node:util";
import * as zlib from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Compression, compressedFlag, encodeEnvelope } from "@connectrpc/connect/protocol";
import { codeFromHttpStatus, findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { compressionGzip } from "@connectrpc/connect-node";
import { type EnvelopedMessage, EnvelopeReader } from "./envelope-reader.js";
import type { UpstreamChannel } from "./upstream-channel.js";

/** One call's parameters. */
export interface UpstreamCallOptions {
  /** `/package.Service/Method` */
  readonly path: string;
  /** Call metadata as HTTP/2 headers (upstream-metadata.ts `metadataHeaders`). */
  readonly metadata: Readonly<Record<string, string | readonly string[]>>;
  /** The caller's remaining time in ms, sent as `grpc-timeout`; undefined for none. */
  readonly timeoutMs: number | undefined;
  /** Cancels the upstream call (RST_STREAM CANCEL) when it aborts. */
  readonly signal: AbortSignal;
  /** Largest response message accepted (after decompression), bytes. */
  readonly maxMessageBytes: number;
  /** Receives the upstream's response headers. */
  readonly onHeaders?: (headers: IncomingHttpHeaders) => void;
  /** Receives the upstream's trailers (also those of a trailers-only response). */
  readonly onTrailers?: (trailers: IncomingHttpHeaders) => void;
}

const inflate = promisify(zlib.inflate);

/** Response bytes a call holds before it stops reading its stream (whole messages the caller has not taken). */
const HIGH_WATER_BYTES = 64 * 1024;

/** `deflate` (zlib format), as gRPC names it. */
const compressionDeflate: Compression = {
  name: "deflate",
  compress: async () => {
    throw new Error("the gateway does not compress requests");
  },
  decompress: async (bytes, readMaxBytes) => {
    try {
      return new Uint8Array(await inflate(bytes, { maxOutputLength: readMaxBytes }));
    } catch (e) {
      if ((e as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE") {
        throw new ConnectError(
          `a response message is larger than the gateway's maxMessageBytes (${readMaxBytes} bytes) after decompression`,
          Code.ResourceExhausted,
        );
      }
      throw new ConnectError("cannot decompress a deflate message", Code.Internal);
    }
  },
};

const DECOMPRESSORS = new Map([
  ["gzip", compressionGzip],
  ["deflate", compressionDeflate],
]);

/** The `grpc-timeout` value for `ms` (at most 8 digits, in the coarsest unit that keeps them). */
export function grpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms) || 0);
  if (whole < 1e8) return `${whole}m`;
  const seconds = Math.ceil(whole / 1000);
  if (seconds < 1e8) return `${seconds}S`;
  return `${Math.min(99_999_999, Math.ceil(seconds / 3600))}H`;
}

/**
 * Calls the upstream: writes `requests`, yields the response messages, and
 * returns when the upstream ends the call with OK.
 *
 * @throws ConnectError with the upstream's status (message, details and
 *   trailers as sent) when it ends the call with another; UNAVAILABLE
 *   naming the upstream when it cannot be reached or resets the call
 *   without a status; the HTTP status's gRPC code when it answers other
 *   than 200; INTERNAL for a response encoding other than gzip or deflate;
 *   RESOURCE_EXHAUSTED for a response message over `maxMessageBytes`; the
 *   signal's reason when it aborts.
 */
export async function* callUpstream(
  channel: UpstreamChannel,
  requests: AsyncIterable<Uint8Array>,
  options: UpstreamCallOptions,
): AsyncGenerator<Uint8Array, void, undefined> {
  const { signal } = options;
  signal.throwIfAborted();
  const started = Date.now();
  const { timeoutMs } = options;
  const stream = await channel.request(
    options.path,
    () => ({
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-accept-encoding": "gzip,deflate",
      "user-agent": "mqrpc-gateway",
      // What is left once connected.
      ...(timeoutMs === undefined
        ? {}
        : { "grpc-timeout": grpcTimeout(timeoutMs - (Date.now() - started)) }),
      ...options.metadata,
    }),
    signal,
  );
  const call = new StreamState(stream, channel, options);
  const cancel = () => call.cancel();
  signal.addEventListener("abort", cancel, { once: true });
  void sendRequests(requests, stream, channel);
  try {
    let readError: unknown;
    try {
      for (let m = await call.nextMessage(); m !== undefined; m = await call.nextMessage()) {
        yield (m.flags & compressedFlag) === 0 ? m.data : await call.decompress(m.data);
      }
    } catch (e) {
      readError = e;
      // Reading stopped (a message over the limit, one that cannot be
      // decompressed, a reset): the upstream cannot finish a call nobody reads.
      call.cancel();
    }
    await call.closed;
    signal.throwIfAborted();
    const error = call.status(channel, readError);
    if (error !== undefined) throw error;
  } finally {
    signal.removeEventListener("abort", cancel);
    call.cancel();
  }
}

/** What one stream has told so far. */
class StreamState {
  readonly closed: Promise<void>;
  private headers: IncomingHttpHeaders | undefined;
  private trailers: IncomingHttpHeaders | undefined;
  private streamError: Error | undefined;
  private readonly reader: EnvelopeReader;
  private readonly session: Http2Session | undefined;
  /** The body ended (or the stream closed): no more bytes come. */
  private bodyOver = false;
  /** Set when the response is not a gRPC one: the call's outcome. */
  private protocolError: ConnectError | undefined;
  private wake: (() => void) | undefined;
  /** Set while a call past its deadline waits for the upstream to end it (see `cancel`). */
  private graceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly stream: ClientHttp2Stream,
    private readonly channel: UpstreamChannel,
    private readonly options: UpstreamCallOptions,
  ) {
    this.reader = new EnvelopeReader(options.maxMessageBytes, {
      message: "a response message",
      limit: "the gateway's maxMessageBytes",
    });
    // A closed stream forgets its session; kept to tell a lost connection from a reset.
    this.session = stream.session;
    this.closed = new Promise((resolve) => stream.once("close", resolve));
    stream.on("data", (chunk: Buffer) => {
      this.reader.push(chunk);
      channel.noteRead(stream);
      // Whole messages waiting for the caller: stop reading, so the
      // stream's window closes (nextMessage resumes when they are taken).
      if (this.reader.byteLength >= HIGH_WATER_BYTES) stream.pause();
      this.wake?.();
    });
    const over = () => {
      this.bodyOver = true;
      this.wake?.();
    };
    stream.once("end", over);
    stream.once("close", over);
    stream.once("response", (headers, flags) => {
      this.headers = headers;
      const notGrpc = notGrpcResponse(headers, channel);
      if (notGrpc !== undefined) {
        // Its body is not gRPC frames: reading it as such would pass junk
        // on as messages, or misread a length.
        this.protocolError = notGrpc;
        this.bodyOver = true;
        this.cancel();
        this.wake?.();
        return;
      }
      // A trailers-only response: its metadata are trailers (the status reads them).
      const trailersOnly =
        (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0 && headers["grpc-status"] !== undefined;
      if (!trailersOnly) options.onHeaders?.(headers);
    });
    stream.once("trailers", (trailers) => {
      this.trailers = trailers;
    });
    stream.on("error", (e) => {
      this.streamError ??= e;
    });
  }

  /**
   * The next response message, or undefined once the body is over.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED for a message over
   *   `maxMessageBytes`; INTERNAL for a body that ends inside a message.
   */
  async nextMessage(): Promise<EnvelopedMessage | undefined> {
    for (;;) {
      if (this.protocolError !== undefined) throw this.protocolError;
      const message = this.reader.next();
      if (message !== undefined) return message;
      if (this.bodyOver) {
        // Cut short by a reset: the status tells. Ended with trailers: the upstream's fault.
        if (this.reader.byteLength > 0 && this.trailers !== undefined) {
          throw new ConnectError(
            `upstream ended its response inside a message (${this.reader.byteLength} bytes of it)`,
            Code.Internal,
          );
        }
        return undefined;
      }
      if (this.stream.isPaused()) this.stream.resume();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }

  /** A compressed response message's bytes, decompressed by the response's encoding. */
  decompress(data: Uint8Array): Promise<Uint8Array> {
    const encoding = header(this.headers, "grpc-encoding") ?? "identity";
    const compression = DECOMPRESSORS.get(encoding);
    if (compression === undefined) {
      return Promise.reject(
        new ConnectError(
          `upstream sent a message compressed with "${encoding}", which the gateway cannot decompress (it accepts gzip and deflate)`,
          Code.Internal,
        ),
      );
    }
    return compression.decompress(data, this.options.maxMessageBytes);
  }

  /** The call's outcome once the stream closed: undefined for OK, else its error. */
  status(channel: UpstreamChannel, readError: unknown): ConnectError | undefined {
    const trailers = this.trailers ?? this.headers;
    const code = header(trailers, "grpc-status");
    if (code !== undefined && trailers !== undefined) {
      this.options.onTrailers?.(trailers);
      // OK, the common case, needs no parsing.
      const error = code === "0" ? undefined : findTrailerError(statusHeaders(trailers));
      // A message the stream could not deliver (too large, cannot be decompressed) wins over OK.
      if (error === undefined)
        return readError === undefined ? undefined : ConnectError.from(readError);
      // Its details travel as details; the trailers went by onTrailers.
      const plain = new ConnectError(error.rawMessage, error.code);
      plain.details.push(...error.details);
      return plain;
    }
    if (readError instanceof ConnectError) return readError;
    const httpStatus = Number(this.headers?.[":status"] ?? 200);
    if (httpStatus !== 200) {
      return new ConnectError(
        `upstream ${channel.address.url}: HTTP ${httpStatus} without a gRPC status`,
        codeFromHttpStatus(httpStatus),
      );
    }
    const reset = RESET_CODES.get(this.stream.rstCode ?? constants.NGHTTP2_NO_ERROR);
    if (reset !== undefined && sessionAlive(this.session)) {
      return new ConnectError(
        `upstream ${channel.address.url}: the call was reset with ${reset.name} (HTTP/2 error ${this.stream.rstCode})${reset.hint}`,
        reset.code,
      );
    }
    const session = this.session;
    const reason =
      (this.streamError === undefined
        ? undefined
        : channel.describeFailure(this.streamError, this.session)) ??
      (session === undefined || session.destroyed
        ? "the connection closed before the call ended"
        : this.stream.rstCode !== undefined && this.stream.rstCode !== constants.NGHTTP2_NO_ERROR
          ? `the upstream reset the call (HTTP/2 error ${this.stream.rstCode})`
          : "the call ended without a gRPC status");
    return channel.unavailable(reason);
  }

  /**
   * Cancels the stream (RST_STREAM CANCEL, paced by the channel) unless it
   * is closed already. A call whose deadline passed, on an upstream that
   * was told it (`grpc-timeout`), is given {@link DEADLINE_GRACE_MS} to end
   * by itself first, as it does at that same moment: resetting a stream
   * while the upstream resets or ends it can crash Node's HTTP/2 (nghttp2
   * assertions, heap corruption in the gateway process, seen in storms of
   * 1,000 calls sharing a deadline against a Python upstream); one still
   * open then is reset.
   */
  cancel(): void {
    if (this.stream.closed || this.stream.destroyed) return;
    const { signal, timeoutMs } = this.options;
    const deadline =
      signal.aborted &&
      signal.reason instanceof ConnectError &&
      signal.reason.code === Code.DeadlineExceeded;
    if (!deadline || timeoutMs === undefined) {
      this.channel.cancel(this.stream);
      return;
    }
    if (this.graceTimer !== undefined) return;
    const timer = setTimeout(() => this.channel.cancel(this.stream), DEADLINE_GRACE_MS);
    timer.unref();
    this.graceTimer = timer;
    this.stream.once("close", () => clearTimeout(timer));
  }
}

/**
 * How long a call past its deadline waits for the upstream, which has the
 * same deadline from `grpc-timeout`, to end it, before the gateway resets
 * it (ms).
 */
export const DEADLINE_GRACE_MS = 1_000;

/**
 * Why a 200 response with a body is not a gRPC one (its content-type is
 * not `application/grpc` or `application/grpc+…`), or undefined. gRPC maps
 * such a response to UNKNOWN; other HTTP statuses are mapped by code
 * (see `status`).
 */
function notGrpcResponse(
  headers: IncomingHttpHeaders,
  channel: UpstreamChannel,
): ConnectError | undefined {
  if (Number(headers[":status"] ?? 200) !== 200) return undefined;
  // Trailers-only (a status and no body) has nothing to misread.
  if (headers["grpc-status"] !== undefined) return undefined;
  const contentType = header(headers, "content-type");
  if (contentType !== undefined && /^application\/grpc(?:$|[+;])/i.test(contentType)) {
    return undefined;
  }
  return new ConnectError(
    `upstream ${channel.address.url} answered with ${
      contentType === undefined ? "no content-type" : `content-type "${contentType}"`
    }, not a gRPC response (application/grpc)`,
    Code.Unknown,
  );
}

/**
 * Stream resets gRPC maps to a code of their own (PROTOCOL-HTTP2.md,
 * "Errors"); any other reset, or a lost connection, is UNAVAILABLE.
 */
const RESET_CODES = new Map<number, { name: string; code: Code; hint: string }>([
  [
    constants.NGHTTP2_ENHANCE_YOUR_CALM,
    {
      name: "ENHANCE_YOUR_CALM",
      code: Code.ResourceExhausted,
      hint: ": more load than one side accepts, e.g. more or larger headers",
    },
  ],
  [
    constants.NGHTTP2_INADEQUATE_SECURITY,
    { name: "INADEQUATE_SECURITY", code: Code.PermissionDenied, hint: "" },
  ],
]);

/** Whether a stream's session still stood when it closed: a reset, not a lost connection. */
function sessionAlive(session: Http2Session | undefined): boolean {
  return session !== undefined && !session.destroyed;
}

/** A header's value (the first of several). */
function header(headers: IncomingHttpHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The status headers of `trailers`, as Connect's status parsing takes them. */
function statusHeaders(trailers: IncomingHttpHeaders): Headers {
  const headers = new Headers();
  for (const name of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) {
    const value = header(trailers, name);
    if (value !== undefined) headers.set(name, value);
  }
  return headers;
}

/**
 * Writes the caller's requests to the stream as it accepts them, then ends
 * it (half-close). Stops when the stream closes first; a caller's stream
 * that fails cancels the call.
 */
async function sendRequests(
  requests: AsyncIterable<Uint8Array>,
  stream: ClientHttp2Stream,
  channel: UpstreamChannel,
): Promise<void> {
  try {
    for await (const message of requests) {
      if (stream.closed || stream.destroyed) return;
      if (!stream.write(encodeEnvelope(0, message))) await drained(stream);
    }
    if (!stream.closed && !stream.destroyed) stream.end();
  } catch {
    channel.cancel(stream);
  }
}

/** Resolves on the stream's `drain`, or when it closes. */
function drained(stream: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
