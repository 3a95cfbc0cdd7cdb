/**
 * The protocol of a request that reaches the ingress, read from its method
 * and `content-type`, and how to answer it with an error before any
 * forwarding started (a missing `mqrpc-server-id`, a device whose schema
 * could not be had): each protocol's own error form, through Connect's
 * protocol helpers, so that a client of that protocol reads the right code.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { Code, type ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamToJson,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { copyMetadata, nodeHeaders, statusTrailer } from "./grpc-metadata.js";

/** A request as Node's HTTP/1.1 or HTTP/2 compatibility API hands it over. */
export type HttpRequest = IncomingMessage | Http2ServerRequest;

/** A response, as Node's HTTP/1.1 or HTTP/2 compatibility API hands it over. */
export type HttpResponse = ServerResponse | Http2ServerResponse;

/** The `grpc-accept-encoding` the ingress announces: request compression it decompresses. */
export const GRPC_ACCEPT_ENCODING = "gzip";

/** How a request's messages travel. */
export type IngressProtocol =
  /** gRPC over HTTP/2 (`application/grpc`, `application/grpc+<codec>`). */
  | "grpc"
  /** gRPC-Web, binary (`application/grpc-web`, `application/grpc-web+<codec>`). */
  | "grpc-web"
  /** gRPC-Web in base64 (`application/grpc-web-text`, `application/grpc-web-text+<codec>`). */
  | "grpc-web-text"
  /** Connect unary (`application/proto`, `application/json`, or a GET). */
  | "connect"
  /** Connect streaming (`application/connect+<codec>`). */
  | "connect-stream"
  /** Anything else: not an RPC. */
  | "unknown";

/** The protocol and codec of a request. */
export interface RequestKind {
  readonly protocol: IngressProtocol;
  /** The codec named in the content type: `proto` (the default for gRPC) or `json`, or another name. */
  readonly codec: string;
  /** The content type a response of this protocol carries. */
  readonly responseType: string;
}

const GRPC_TYPE = /^application\/(grpc|grpc-web|grpc-web-text)(?:\+([-\w.]+))?\s*(?:;.*)?$/i;
const CONNECT_STREAM_TYPE = /^application\/connect\+([-\w.]+)\s*(?:;.*)?$/i;
const CONNECT_UNARY_TYPE = /^application\/([-\w.]+)\s*(?:;.*)?$/i;

/** Reads a request's protocol from its method and headers. */
export function requestKind(method: string | undefined, headers: IncomingHttpHeaders): RequestKind {
  const contentType = headers["content-type"] ?? "";
  const grpc = GRPC_TYPE.exec(contentType);
  if (grpc !== null) {
    const protocol = (grpc[1] ?? "grpc").toLowerCase() as "grpc" | "grpc-web" | "grpc-web-text";
    const codec = (grpc[2] ?? "proto").toLowerCase();
    return { protocol, codec, responseType: `application/${protocol}+${codec}` };
  }
  const stream = CONNECT_STREAM_TYPE.exec(contentType);
  if (stream !== null) {
    const codec = (stream[1] ?? "").toLowerCase();
    return { protocol: "connect-stream", codec, responseType: `application/connect+${codec}` };
  }
  if (method === "GET") {
    return { protocol: "connect", codec: "json", responseType: "application/json" };
  }
  const unary = CONNECT_UNARY_TYPE.exec(contentType);
  if (unary !== null) {
    const codec = (unary[1] ?? "").toLowerCase();
    return { protocol: "connect", codec, responseType: `application/${codec}` };
  }
  return { protocol: "unknown", codec: "", responseType: "text/plain" };
}

/**
 * Answers a request with `error` in its own protocol, before any response
 * was sent: a trailers-only response for gRPC and gRPC-Web, an error body
 * for Connect, 415 for a request that is no RPC. The request body is left
 * unread (HTTP/2 resets the stream; HTTP/1.1 closes the connection).
 */
export function writeErrorResponse(
  req: HttpRequest,
  res: HttpResponse,
  kind: RequestKind,
  error: ConnectError,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  switch (kind.protocol) {
    case "grpc":
    case "grpc-web":
    case "grpc-web-text": {
      const headers = statusTrailer(undefined, error);
      headers.set("content-type", kind.responseType);
      headers.set("grpc-accept-encoding", GRPC_ACCEPT_ENCODING);
      endTrailersOnly(res, headers);
      break;
    }
    case "connect": {
      const headers = copyMetadata(error.metadata, new Headers());
      headers.set("content-type", "application/json");
      res.writeHead(codeToHttpStatus(error.code), nodeHeaders(headers));
      res.end(errorToJsonBytes(error, {}));
      break;
    }
    case "connect-stream": {
      const end = endStreamToJson(copyMetadata(error.metadata, new Headers()), error, {});
      res.writeHead(200, { "content-type": kind.responseType });
      res.end(encodeEnvelope(endStreamFlag, new TextEncoder().encode(JSON.stringify(end))));
      break;
    }
    default:
      res.writeHead(415, { "content-type": "text/plain; charset=utf-8" });
      res.end(
        `${req.headers["content-type"] ?? "no content-type"}: not a gRPC, gRPC-Web or Connect request (${Code[error.code]}: ${error.rawMessage})\n`,
      );
  }
}

/**
 * Ends a gRPC response with one header block and no body (trailers-only).
 * The headers are set one by one and sent by `end()`: `writeHead()` would
 * send them at once, and HTTP/2 would then end the stream with a second,
 * empty block that gRPC clients read as "no status".
 */
export function endTrailersOnly(res: HttpResponse, headers: Headers): void {
  res.statusCode = 200;
  headers.forEach((value, name) => {
    res.setHeader(name, value);
  });
  res.end();
}
