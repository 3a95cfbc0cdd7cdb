/**
 * The HTTP side of one binary gRPC or gRPC-Web call, as grpc-forwarder.ts
 * drives it: an HTTP/2 stream through `node:http2`'s core API (`respond`,
 * `sendTrailers`), or a request and response of `node:http` (gRPC-Web over
 * HTTP/1.1).
 *
 * HTTP/2 calls use the core API rather than the compatibility API's
 * request and response objects: those wrap each stream in two more streams
 * and cost the ingress about a tenth of its CPU per unary call, with nothing
 * a byte forwarder needs in return.
 */
import type { EventEmitter } from "node:events";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { constants, type ServerHttp2Stream } from "node:http2";
import type { Readable } from "node:stream";
import type { HttpRequest, HttpResponse } from "./ingress-protocol.js";

/** One call's HTTP exchange. */
export interface RawExchange {
  /** The request headers (lower-case names, HTTP/2 pseudo-headers included). */
  readonly headers: IncomingHttpHeaders;
  /**
   * The request body, read through its `'data'`, `'end'` and `'close'`
   * events and paused to hold the client back. It ended complete when
   * `'end'` came; `'close'` (or `'error'`) first means it was cut short.
   */
  readonly body: Readable;
  /** Whether the exchange is HTTP/2 (gRPC needs it; gRPC-Web does not). */
  readonly http2: boolean;
  /** Whether the response headers went out. */
  readonly headersSent: boolean;
  /** Whether the exchange closed: the response ended, or the client went away. */
  readonly closed: boolean;
  /** Emits `'drain'` when the response takes more bytes and `'close'` when the exchange closes. */
  readonly events: EventEmitter;
  /**
   * Sends status 200 and `headers`. `trailers`: the response ends with
   * HTTP trailers, given to {@link end} (gRPC over HTTP/2).
   */
  respond(headers: OutgoingHttpHeaders, trailers: boolean): void;
  /** Writes response bytes; false when the caller should wait for `'drain'`. */
  write(chunk: Uint8Array | string): boolean;
  /** Ends the response, with `trailers` when {@link respond} announced them. */
  end(trailers?: OutgoingHttpHeaders): void;
  /** Answers status 200 with one header block and no body (a gRPC trailers-only response). */
  endTrailersOnly(headers: OutgoingHttpHeaders): void;
  /** Answers a plain-text HTTP error. */
  endPlain(status: number, text: string): void;
  /** Resets the exchange (HTTP/2: RST_STREAM; HTTP/1.1: closes the connection). */
  destroy(): void;
}

/**
 * Whether the client's request stream is over (END_STREAM received, read
 * or not). Node has no public flag for END_STREAM that arrived while the
 * body is unread, hence the readable state.
 */
function requestEnded(stream: ServerHttp2Stream): boolean {
  if (stream.readableEnded || stream.endAfterHeaders) return true;
  const state = (stream as unknown as { _readableState?: { ended?: boolean } })._readableState;
  return state?.ended === true;
}

/** An HTTP/2 stream as a {@link RawExchange}. */
export function http2Exchange(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
): RawExchange {
  return new Http2Exchange(stream, headers);
}

/** An HTTP/1.1 (or compatibility API) request and response as a {@link RawExchange}. */
export function httpExchange(req: HttpRequest, res: HttpResponse): RawExchange {
  return new HttpExchange(req, res);
}

/** A stream error (a reset with an error code) is read as the stream closing; the call tells the outcome. */
const ignore = (): void => {};

class Http2Exchange implements RawExchange {
  readonly http2 = true;
  private withTrailers = false;

  constructor(
    private readonly stream: ServerHttp2Stream,
    readonly headers: IncomingHttpHeaders,
  ) {
    stream.on("error", ignore);
  }

  get body(): Readable {
    return this.stream;
  }

  get events(): EventEmitter {
    return this.stream;
  }

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get closed(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  respond(headers: OutgoingHttpHeaders, trailers: boolean): void {
    if (this.closed) return;
    headers[":status"] = 200;
    this.withTrailers = trailers;
    this.stream.respond(headers, { waitForTrailers: trailers });
  }

  write(chunk: Uint8Array | string): boolean {
    if (this.closed) return false;
    return this.stream.write(chunk);
  }

  end(trailers?: OutgoingHttpHeaders): void {
    if (this.closed) return;
    const stream = this.stream;
    if (this.withTrailers) {
      stream.once("wantTrailers", () => {
        stream.sendTrailers(trailers ?? {});
        this.stopRequest();
      });
      stream.end();
      return;
    }
    stream.end();
    this.stopRequest();
  }

  endTrailersOnly(headers: OutgoingHttpHeaders): void {
    if (this.closed || this.stream.headersSent) return;
    headers[":status"] = 200;
    this.stream.respond(headers, { endStream: true });
    this.stopRequest();
  }

  endPlain(status: number, text: string): void {
    if (this.closed || this.stream.headersSent) return;
    this.stream.respond({ ":status": status, "content-type": "text/plain; charset=utf-8" });
    this.stream.end(text);
    this.stopRequest();
  }

  /**
   * Once the response is complete (its last frame handed to nghttp2), tells
   * a client that is still sending to stop: RST_STREAM(NO_ERROR), as RFC
   * 9113 section 8.1 lets a server that responded before the request ended.
   * Without it a client writing a long request (Go's HTTP/2 client: buf
   * curl, grpc-go) waits for flow-control credit or keeps sending, and never
   * finishes. Node sends the reset after the response's frames (`close`
   * waits for the writable side to finish), so the client reads the status
   * first; gRPC clients take the status and ignore the NO_ERROR reset.
   */
  private stopRequest(): void {
    const stream = this.stream;
    if (this.closed || requestEnded(stream)) return;
    stream.close(constants.NGHTTP2_NO_ERROR);
  }

  destroy(): void {
    this.stream.destroy();
  }
}

class HttpExchange implements RawExchange {
  private isClosed = false;

  constructor(
    private readonly req: HttpRequest,
    private readonly res: HttpResponse,
  ) {
    req.on("error", ignore);
    res.once("close", () => {
      this.isClosed = true;
    });
  }

  get headers(): IncomingHttpHeaders {
    return this.req.headers;
  }

  get body(): Readable {
    return this.req;
  }

  get http2(): boolean {
    return this.req.httpVersionMajor === 2;
  }

  get events(): EventEmitter {
    return this.res;
  }

  get headersSent(): boolean {
    return this.res.headersSent;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  respond(headers: OutgoingHttpHeaders): void {
    this.res.writeHead(200, headers);
  }

  write(chunk: Uint8Array | string): boolean {
    return (this.res as { write(chunk: Uint8Array | string): boolean }).write(chunk);
  }

  end(trailers?: OutgoingHttpHeaders): void {
    if (trailers !== undefined) {
      (this.res as { addTrailers(headers: OutgoingHttpHeaders): void }).addTrailers(trailers);
    }
    this.res.end();
  }

  /**
   * The headers are set one by one and sent by `end()`: `writeHead()` would
   * send them at once, and HTTP/2's compatibility API would then end the
   * stream with a second, empty block that gRPC clients read as "no status".
   */
  endTrailersOnly(headers: OutgoingHttpHeaders): void {
    const res = this.res;
    res.statusCode = 200;
    for (const name in headers) {
      const value = headers[name];
      if (value !== undefined) res.setHeader(name, value);
    }
    res.end();
  }

  endPlain(status: number, text: string): void {
    this.res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
    this.res.end(text);
  }

  destroy(): void {
    this.res.destroy();
  }
}
