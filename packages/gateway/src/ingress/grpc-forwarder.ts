/**
 * Binary gRPC and gRPC-Web calls forwarded byte for byte: each request
 * message is cut out of its 5-byte envelope (Connect's envelope helpers)
 * and handed to `MqttTransport.rawStream`, each response message wrapped in
 * an envelope again, never decoded, so no schema is needed and unknown
 * fields survive. This is written on `node:http2` (and `node:http` for
 * gRPC-Web over HTTP/1.1) because no server library forwards gRPC bytes
 * untouched: grpc-js and Connect's handlers both need a schema or
 * serializers per method, and neither hands a proxy the raw envelope stream
 * with HTTP/2 flow control intact.
 *
 * Flow control is end to end: request bytes are read from the HTTP stream
 * only when the MQTT call asks for the next message (its credit window), and
 * the next response message is taken from the MQTT call only when the HTTP
 * response accepted the previous one (`write()` / `'drain'`), so a slow gRPC
 * client slows the device instead of filling the ingress's memory.
 */

import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Compression,
  compressedFlag,
  type EnvelopedMessage,
  encodeEnvelope,
  envelopeDecompress,
  transformSplitEnvelope,
} from "@connectrpc/connect/protocol";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { compressionGzip } from "@connectrpc/connect-node";
import type { MethodSettings, MqttTransport } from "@mqrpc/runtime";
import { copyMetadata, nodeHeaders, requestMetadata, statusTrailer } from "./grpc-metadata.js";
import { decodeBase64Body, encodeBase64 } from "./grpc-web-text.js";
import {
  endTrailersOnly,
  GRPC_ACCEPT_ENCODING,
  type HttpRequest,
  type HttpResponse,
  type RequestKind,
  writeErrorResponse,
} from "./ingress-protocol.js";

/** What the raw forwarder needs to know of one call. */
export interface RawCall {
  readonly req: HttpRequest;
  readonly res: HttpResponse;
  readonly kind: RequestKind;
  /** Fully qualified service name, from the request path. */
  readonly service: string;
  /** Method name, from the request path. */
  readonly method: string;
  /** The device's transport. */
  readonly transport: MqttTransport;
  /** The method's kind when a schema is at hand (saves a publish for unary calls). */
  readonly methodKind?: DescMethod["methodKind"];
  /** The method's MQTT settings when a schema is at hand. */
  readonly settings?: Partial<MethodSettings>;
  /** Largest request message accepted, in bytes (after decompression). */
  readonly maxMessageBytes: number;
  /** Aborts the call with its reason (UNAVAILABLE: the ingress is closing). */
  readonly shutdownSignal: AbortSignal;
}

/** Request compression the ingress decompresses: gzip (`grpc-encoding: gzip`), through Connect's. */
const ACCEPTED_ENCODINGS: readonly Compression[] = [compressionGzip];
const ACCEPT_ENCODING = GRPC_ACCEPT_ENCODING;

/** Why a call ends CANCELED when its client goes away. */
const CLIENT_GONE = "the gRPC client cancelled the call (its HTTP stream closed)";

/** The request path of a gRPC method: `/package.Service/Method`. */
const METHOD_PATH = /^\/([^/?]+)\/([^/?]+)$/;

/** Service and method named by a gRPC request path, or undefined. */
export function methodFromPath(
  url: string | undefined,
): { service: string; method: string } | undefined {
  const match = METHOD_PATH.exec(url ?? "");
  if (match === null) return undefined;
  return { service: match[1] ?? "", method: match[2] ?? "" };
}

/**
 * Forwards one binary gRPC or gRPC-Web call to its device and writes the
 * answer: trailers-only when the call fails before any response message,
 * otherwise headers, messages and trailers (gRPC-Web: a final 0x80 frame).
 * Never throws: every failure becomes the call's status.
 */
export async function forwardRawCall(call: RawCall): Promise<void> {
  const { req, res, kind } = call;
  if (kind.protocol === "grpc" && req.httpVersionMajor !== 2) {
    res.writeHead(505, { "content-type": "text/plain; charset=utf-8" });
    res.end("gRPC needs HTTP/2 (gRPC-Web works over HTTP/1.1)\n");
    return;
  }
  const timeout = parseTimeout(headerValue(req, "grpc-timeout"), Number.MAX_SAFE_INTEGER);
  if (timeout.error !== undefined) {
    writeErrorResponse(req, res, kind, timeout.error);
    return;
  }
  const encoding = headerValue(req, "grpc-encoding");
  let compression: Compression | null = null;
  if (encoding !== null && encoding !== "identity") {
    compression = ACCEPTED_ENCODINGS.find((c) => c.name === encoding) ?? null;
    if (compression === null) {
      const error = new ConnectError(
        `grpc-encoding ${encoding} is not supported (supported: identity, ${ACCEPT_ENCODING})`,
        Code.Unimplemented,
      );
      writeErrorResponse(req, res, kind, error);
      return;
    }
  }

  const abort = new AbortController();
  let ended = false;
  let clientGone = false;
  res.once("close", () => {
    if (ended) return;
    clientGone = true;
    abort.abort(new ConnectError(CLIENT_GONE, Code.Canceled));
  });
  const shutdown = call.shutdownSignal;
  const onShutdown = () => abort.abort(ConnectError.from(shutdown.reason, Code.Unavailable));
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener("abort", onShutdown);
  const requests = new RequestMessages(req, kind, compression, call.maxMessageBytes, abort);
  const web = kind.protocol !== "grpc";
  const text = kind.protocol === "grpc-web-text";
  const body = res as { write(chunk: Uint8Array | string): boolean };
  const send = (bytes: Uint8Array): boolean => body.write(text ? encodeBase64(bytes) : bytes);
  let headersOut = false;

  const finish = (trailer: Headers | undefined, error: ConnectError | undefined): void => {
    ended = true;
    shutdown.removeEventListener("abort", onShutdown);
    if (clientGone) {
      // Nothing can reach the client any more.
      if (!res.writableEnded) res.destroy();
      return;
    }
    const reason = abort.signal.aborted ? ConnectError.from(abort.signal.reason) : undefined;
    const status = statusTrailer(trailer, requests.error ?? reason ?? error);
    if (!headersOut) {
      // Trailers-only: one header block with the status, no body.
      status.set("content-type", kind.responseType);
      status.set("grpc-accept-encoding", ACCEPT_ENCODING);
      endTrailersOnly(res, status);
    } else if (web) {
      send(encodeEnvelope(trailerFlag, trailerSerialize(status)));
      res.end();
    } else {
      (res as { addTrailers(headers: Record<string, string | string[]>): void }).addTrailers(
        nodeHeaders(status) as Record<string, string | string[]>,
      );
      res.end();
    }
    requests.discardRest();
  };

  let response: Awaited<ReturnType<MqttTransport["rawStream"]>>;
  try {
    response = await call.transport.rawStream({
      service: call.service,
      method: call.method,
      message: requests,
      header: requestMetadata(req.headers),
      signal: abort.signal,
      ...(call.methodKind !== undefined ? { kind: call.methodKind } : {}),
      ...(call.settings !== undefined ? { settings: call.settings } : {}),
      ...(timeout.timeoutMs !== undefined ? { timeoutMs: timeout.timeoutMs } : {}),
    });
  } catch (e) {
    finish(undefined, ConnectError.from(e));
    return;
  }
  const messages = response.message[Symbol.asyncIterator]();
  try {
    // Headers go out with the first message, so that a call that fails
    // before any message is answered trailers-only, as gRPC servers do.
    let next = await messages.next();
    const head = copyMetadata(response.header, new Headers());
    head.set("content-type", kind.responseType);
    head.set("grpc-accept-encoding", ACCEPT_ENCODING);
    if (next.done === true) {
      finish(headerAndTrailer(response), undefined);
      return;
    }
    res.writeHead(200, nodeHeaders(head));
    headersOut = true;
    while (next.done !== true) {
      if (!send(encodeEnvelope(0, next.value))) await drained(res, abort.signal);
      if (abort.signal.aborted) break;
      next = await messages.next();
    }
    if (abort.signal.aborted) await messages.return?.();
    finish(response.trailer, undefined);
  } catch (e) {
    finish(headersOut ? response.trailer : headerAndTrailer(response), ConnectError.from(e));
  }
}

/** A trailers-only response's one header block: the device's headers and trailers. */
function headerAndTrailer(response: {
  readonly header: Headers;
  readonly trailer: Headers;
}): Headers {
  const merged = new Headers(response.trailer);
  response.header.forEach((value, name) => {
    if (!merged.has(name)) merged.append(name, value);
  });
  return merged;
}

/** Resolves when `res` can take more bytes, or when the call is over. */
function drained(res: HttpResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
    signal.addEventListener("abort", done);
  });
}

function headerValue(req: HttpRequest, name: string): string | null {
  const value = req.headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/**
 * The request messages of a call, read from the HTTP body only as the MQTT
 * call asks for them. A protocol error (a compressed message without
 * `grpc-encoding`, a message over the limit, a truncated envelope) fails
 * the call with its own status: it is kept in {@link error} and the call is
 * aborted. Returning early (a unary call takes one message) leaves the body
 * to be discarded, never destroys the HTTP stream the response still needs.
 */
class RequestMessages implements AsyncIterable<Uint8Array> {
  /** The protocol error that ended the request stream, if any. */
  error: ConnectError | undefined;
  private readonly envelopes: AsyncIterator<EnvelopedMessage>;

  constructor(
    private readonly req: HttpRequest,
    kind: RequestKind,
    private readonly compression: Compression | null,
    private readonly maxBytes: number,
    private readonly abort: AbortController,
  ) {
    // The body is read through an iterator without return(): Node destroys
    // a readable whose iterator returns, and with it the HTTP/2 stream.
    const bodyIterator = (req as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    const body: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({ next: () => bodyIterator.next() }),
    };
    const bytes = kind.protocol === "grpc-web-text" ? decodeBase64Body(body) : body;
    this.envelopes = transformSplitEnvelope(maxBytes)(bytes)[Symbol.asyncIterator]();
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: () => this.next(),
      return: () => {
        this.discardRest();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }

  /** Reads what is left of the body and drops it (the call no longer needs it). */
  discardRest(): void {
    if (!this.req.readableEnded) this.req.resume();
  }

  private async next(): Promise<IteratorResult<Uint8Array>> {
    try {
      const result = await this.envelopes.next();
      if (result.done === true) {
        // A body cut short by a dropped HTTP/1.1 connection (or a reset
        // already processed) cancels the call instead of half-closing it.
        // (grpc-js and Node's HTTP/2 client cancel by ending the request
        // stream, then resetting it: the device sees that half-close, then
        // the cancel, as a gRPC server would.)
        if (this.abort.signal.aborted || this.cutShort()) {
          throw new ConnectError(CLIENT_GONE, Code.Canceled);
        }
        return { done: true, value: undefined };
      }
      return { done: false, value: await this.open(result.value) };
    } catch (e) {
      if (!this.abort.signal.aborted) {
        this.error = ConnectError.from(e, Code.Internal);
        this.abort.abort(this.error);
      }
      throw this.abort.signal.reason;
    }
  }

  /** Whether the request body ended without the client's END_STREAM (or complete HTTP/1.1 body). */
  private cutShort(): boolean {
    const req = this.req as {
      aborted?: boolean;
      complete?: boolean;
      stream?: { destroyed: boolean };
    };
    if (req.aborted === true) return true;
    if (req.stream !== undefined) return req.stream.destroyed;
    return req.complete === false;
  }

  private async open(envelope: EnvelopedMessage): Promise<Uint8Array> {
    if ((envelope.flags & trailerFlag) !== 0) {
      throw new ConnectError("protocol error: a request carries a trailers frame", Code.Internal);
    }
    if ((envelope.flags & compressedFlag) === 0) return envelope.data;
    if (this.compression === null) {
      throw new ConnectError(
        "protocol error: a request message is compressed but the request has no grpc-encoding",
        Code.Internal,
      );
    }
    return (await envelopeDecompress(envelope, this.compression, this.maxBytes)).data;
  }
}
