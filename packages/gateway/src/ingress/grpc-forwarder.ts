/**
 * Binary gRPC and gRPC-Web calls forwarded byte for byte: each request
 * message is cut out of its 5-byte envelope (the gateway's
 * envelope-reader.ts, fed from the body's `'data'` events) and handed to
 * `MqttTransport.rawStream`, each response message wrapped in an envelope
 * again (Connect's `encodeEnvelope`), never decoded, so no schema is needed
 * and unknown fields survive. This is written on `node:http2`'s core stream
 * API (and `node:http` for gRPC-Web over HTTP/1.1; raw-exchange.ts) because
 * no server library forwards gRPC bytes untouched: grpc-js and Connect's
 * handlers both need a schema or serializers per method, and neither hands
 * a proxy the raw envelope stream with HTTP/2 flow control intact.
 *
 * Flow control is end to end: request bytes are read from the HTTP stream
 * once the MQTT call asks for a message, and the stream is paused while
 * 64 KiB of messages wait unasked (the MQTT call asks as its credit window
 * allows), and the next response message is taken from the MQTT call only
 * when the HTTP response accepted the previous one (`write()` / `'drain'`),
 * so a slow gRPC client slows the device instead of filling the ingress's
 * memory, and a slow device the client.
 */

import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Compression, encodeEnvelope } from "@connectrpc/connect/protocol";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { compressionGzip } from "@connectrpc/connect-node";
import type { MethodSettings, MqttTransport } from "@mqrpc/runtime";
import {
  addMetadataHeaders,
  requestMetadataInit,
  statusTrailer,
  statusTrailerHeaders,
} from "./grpc-metadata.js";
import { encodeBase64 } from "./grpc-web-text.js";
import { GRPC_ACCEPT_ENCODING, type RequestKind } from "./ingress-protocol.js";
import type { RawExchange } from "./raw-exchange.js";
import { CLIENT_GONE, RequestMessages } from "./request-messages.js";

/** What the raw forwarder needs to know of one call. */
export interface RawCall {
  /** The call's HTTP exchange. */
  readonly exchange: RawExchange;
  readonly kind: RequestKind;
  /** Fully qualified service name, from the request path. */
  readonly service: string;
  /** Method name, from the request path. */
  readonly method: string;
  /** The device's transport. */
  readonly transport: MqttTransport;
  /** The method's kind when a schema is at hand (saves a publish for unary calls). */
  readonly methodKind: DescMethod["methodKind"] | undefined;
  /** The method's MQTT settings when a schema is at hand. */
  readonly settings: Partial<MethodSettings> | undefined;
  /** Largest request message accepted, in bytes (after decompression). */
  readonly maxMessageBytes: number;
  /**
   * Whether the device transport's limit on response messages is the
   * ingress's `maxMessageBytes` (no `transport.maxMessageBytes` of its own):
   * an error over it then names the option the user set.
   */
  readonly ingressLimitsResponses: boolean;
  /** Aborted when the ingress closes (the call then ends UNAVAILABLE). */
  readonly shutdownSignal: AbortSignal;
  /**
   * The raw calls in flight: the call's controller is in it until the call
   * ends, and the ingress aborts each one when it closes (a listener per call
   * on `shutdownSignal` costs more).
   */
  readonly inFlight: Set<AbortController>;
}

type RawStreamRequest = Parameters<MqttTransport["rawStream"]>[0];
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Request compression the ingress decompresses: gzip (`grpc-encoding: gzip`), through Connect's. */
const ACCEPTED_ENCODINGS: readonly Compression[] = [compressionGzip];
const ACCEPT_ENCODING = GRPC_ACCEPT_ENCODING;

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
 * Answers a binary gRPC or gRPC-Web call with `error` before it was
 * forwarded: a trailers-only response (a reset when headers went out
 * already). The request body is left unread: on HTTP/2 the exchange then
 * resets the stream with NO_ERROR so the client stops sending
 * (raw-exchange.ts); HTTP/1.1 discards it.
 */
export function rejectRawCall(exchange: RawExchange, kind: RequestKind, error: ConnectError): void {
  if (exchange.headersSent) {
    exchange.destroy();
    return;
  }
  const headers = statusTrailerHeaders(undefined, error);
  headers["content-type"] = kind.responseType;
  headers["grpc-accept-encoding"] = ACCEPT_ENCODING;
  exchange.endTrailersOnly(headers);
}

/**
 * Forwards one binary gRPC or gRPC-Web call to its device and writes the
 * answer: trailers-only when the call fails before any response message,
 * otherwise headers, messages and trailers (gRPC-Web: a final 0x80 frame).
 * Never throws: every failure becomes the call's status.
 */
export async function forwardRawCall(call: RawCall): Promise<void> {
  const { exchange, kind } = call;
  if (kind.protocol === "grpc" && !exchange.http2) {
    exchange.endPlain(505, "gRPC needs HTTP/2 (gRPC-Web works over HTTP/1.1)\n");
    return;
  }
  const timeout = parseTimeout(headerValue(exchange, "grpc-timeout"), Number.MAX_SAFE_INTEGER);
  if (timeout.error !== undefined) {
    rejectRawCall(exchange, kind, timeout.error);
    return;
  }
  const encoding = headerValue(exchange, "grpc-encoding");
  let compression: Compression | null = null;
  if (encoding !== null && encoding !== "identity") {
    compression = ACCEPTED_ENCODINGS.find((c) => c.name === encoding) ?? null;
    if (compression === null) {
      const error = new ConnectError(
        `grpc-encoding ${encoding} is not supported (supported: identity, ${ACCEPT_ENCODING})`,
        Code.Unimplemented,
      );
      rejectRawCall(exchange, kind, error);
      return;
    }
  }

  const abort = new AbortController();
  let ended = false;
  let clientGone = false;
  exchange.events.on("close", () => {
    if (ended) return;
    clientGone = true;
    abort.abort(new ConnectError(CLIENT_GONE, Code.Canceled));
  });
  const shutdown = call.shutdownSignal;
  if (shutdown.aborted) abort.abort(ConnectError.from(shutdown.reason, Code.Unavailable));
  else call.inFlight.add(abort);
  const requests = new RequestMessages(exchange.body, {
    text: kind.protocol === "grpc-web-text",
    compression,
    maxBytes: call.maxMessageBytes,
    abort,
  });
  const web = kind.protocol !== "grpc";
  const text = kind.protocol === "grpc-web-text";
  const send = (bytes: Uint8Array): boolean => exchange.write(text ? encodeBase64(bytes) : bytes);
  let headersOut = false;

  const finish = (trailer: Headers | undefined, error: ConnectError | undefined): void => {
    ended = true;
    call.inFlight.delete(abort);
    if (clientGone) {
      // Nothing can reach the client any more.
      exchange.destroy();
      return;
    }
    const reason = abort.signal.aborted ? ConnectError.from(abort.signal.reason) : undefined;
    const outcome =
      requests.error ??
      reason ??
      (error !== undefined && call.ingressLimitsResponses ? inIngressTerms(error) : error);
    if (!headersOut) {
      // Trailers-only: one header block with the status, no body.
      const status = statusTrailerHeaders(trailer, outcome);
      status["content-type"] = kind.responseType;
      status["grpc-accept-encoding"] = ACCEPT_ENCODING;
      exchange.endTrailersOnly(status);
    } else if (web) {
      send(encodeEnvelope(trailerFlag, trailerSerialize(statusTrailer(trailer, outcome))));
      exchange.end();
    } else {
      exchange.end(statusTrailerHeaders(trailer, outcome));
    }
    requests.discardRest();
  };

  const request: Mutable<RawStreamRequest> = {
    service: call.service,
    method: call.method,
    message: requests,
    header: requestMetadataInit(exchange.headers),
    signal: abort.signal,
  };
  if (call.methodKind !== undefined) request.kind = call.methodKind;
  if (call.settings !== undefined) request.settings = call.settings;
  if (timeout.timeoutMs !== undefined) request.timeoutMs = timeout.timeoutMs;
  let response: Awaited<ReturnType<MqttTransport["rawStream"]>>;
  try {
    response = await call.transport.rawStream(request);
  } catch (e) {
    finish(undefined, ConnectError.from(e));
    return;
  }
  const messages = response.message[Symbol.asyncIterator]();
  try {
    // Headers go out with the first message, so that a call that fails
    // before any message is answered trailers-only, as gRPC servers do.
    let next = await messages.next();
    if (next.done === true) {
      finish(headerAndTrailer(response), undefined);
      return;
    }
    const head = addMetadataHeaders(response.header, {});
    head["content-type"] = kind.responseType;
    head["grpc-accept-encoding"] = ACCEPT_ENCODING;
    exchange.respond(head, !web);
    headersOut = true;
    while (next.done !== true) {
      if (!send(encodeEnvelope(0, next.value))) await drained(exchange, abort.signal);
      if (abort.signal.aborted) break;
      next = await messages.next();
    }
    if (abort.signal.aborted) await messages.return?.();
    finish(response.trailer, undefined);
  } catch (e) {
    finish(headersOut ? response.trailer : headerAndTrailer(response), ConnectError.from(e));
  }
}

/** How the runtime names a transport's limit on the messages it receives. */
const TRANSPORT_LIMIT = "the transport's maxMessageBytes";

/**
 * `error` with the device transport's message limit named as the ingress's
 * option that set it ("a message of N bytes exceeds the ingress's
 * maxMessageBytes (M bytes)"); other errors as they are.
 */
export function inIngressTerms(error: ConnectError): ConnectError {
  if (error.code !== Code.ResourceExhausted || !error.rawMessage.includes(TRANSPORT_LIMIT)) {
    return error;
  }
  return new ConnectError(
    error.rawMessage.replace(TRANSPORT_LIMIT, "the ingress's maxMessageBytes"),
    error.code,
    error.metadata,
  );
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

/** Resolves when the exchange can take more bytes, or when the call is over. */
function drained(exchange: RawExchange, signal: AbortSignal): Promise<void> {
  if (exchange.closed || signal.aborted) return Promise.resolve();
  const events = exchange.events;
  return new Promise((resolve) => {
    const done = () => {
      events.off("drain", done);
      events.off("close", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    events.on("drain", done);
    events.on("close", done);
    signal.addEventListener("abort", done);
  });
}

function headerValue(exchange: RawExchange, name: string): string | null {
  const value = exchange.headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}
