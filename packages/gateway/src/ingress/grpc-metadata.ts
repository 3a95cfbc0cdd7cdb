/**
 * Which HTTP headers of a gRPC, gRPC-Web or Connect call are the call's
 * metadata, and so travel over MQTT to the device and back: everything but
 * HTTP/2 pseudo-headers, hop-by-hop and content headers, the headers each
 * protocol reserves for itself (`grpc-*`, `connect-*`) and the ingress's
 * own routing header. `-bin` values stay base64, as they travel in HTTP/2
 * and as Connect's `Headers` and the mqrpc wire hold them.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

/** The request header that names the device (the mqrpc server id) a call goes to. */
export const SERVER_ID_HEADER = "mqrpc-server-id";

/** Headers that describe the HTTP exchange rather than the call (RFC 9113 8.2.2, RFC 9110 7.6.1). */
const NOT_METADATA = new Set([
  SERVER_ID_HEADER,
  "accept",
  "accept-encoding",
  "connection",
  "content-encoding",
  "content-length",
  "content-type",
  "date",
  "host",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "x-grpc-web",
]);

/**
 * Whether a header (lower case) is call metadata to forward. Reserved gRPC
 * headers (`grpc-timeout`, `grpc-encoding`, `grpc-status`, …) and the Connect
 * protocol's (`connect-timeout-ms`, `connect-protocol-version`, …) are
 * re-created by each side, never copied.
 */
export function isForwardedMetadata(name: string): boolean {
  return (
    !name.startsWith(":") &&
    !name.startsWith("grpc-") &&
    !name.startsWith("connect-") &&
    !NOT_METADATA.has(name)
  );
}

/** The metadata of an incoming HTTP request, as Connect `Headers`. */
export function requestMetadata(incoming: IncomingHttpHeaders): Headers {
  return new Headers(requestMetadataInit(incoming));
}

/**
 * The metadata of an incoming HTTP request as name-value pairs (a
 * `HeadersInit`): what {@link requestMetadata} holds, without building
 * `Headers` that the transport would copy again.
 */
export function requestMetadataInit(incoming: IncomingHttpHeaders): [string, string][] {
  const metadata: [string, string][] = [];
  for (const name in incoming) {
    const value = incoming[name];
    // A name that is not an HTTP token cannot be sent: dropped, as gRPC drops invalid metadata.
    if (value === undefined || !isForwardedMetadata(name) || !TOKEN.test(name)) continue;
    if (typeof value === "string") {
      if (!INVALID_VALUE.test(value)) metadata.push([name, value]);
    } else {
      for (const v of value) if (!INVALID_VALUE.test(v)) metadata.push([name, v]);
    }
  }
  return metadata;
}

/** Copies the metadata in `from` to `to`, leaving out what {@link isForwardedMetadata} rejects. */
export function copyMetadata(from: Headers, to: Headers): Headers {
  from.forEach((value, name) => {
    if (isForwardedMetadata(name)) appendValid(to, name, value);
  });
  return to;
}

/**
 * Adds the metadata in `from` to outgoing HTTP headers, leaving out what
 * {@link isForwardedMetadata} rejects: {@link copyMetadata} then
 * {@link nodeHeaders} without the `Headers` between them.
 */
export function addMetadataHeaders(from: Headers, to: OutgoingHttpHeaders): OutgoingHttpHeaders {
  from.forEach((value, name) => {
    if (isForwardedMetadata(name) && !INVALID_VALUE.test(value)) to[name] = value;
  });
  return to;
}

/** {@link statusTrailer} as outgoing HTTP headers; an OK status without building `Headers`. */
export function statusTrailerHeaders(
  trailer: Headers | undefined,
  error: ConnectError | undefined,
): OutgoingHttpHeaders {
  if (error !== undefined) return nodeHeaders(statusTrailer(trailer, error));
  const out: OutgoingHttpHeaders = {};
  if (trailer !== undefined) addMetadataHeaders(trailer, out);
  out["grpc-status"] = "0";
  return out;
}

/**
 * The trailers that end a gRPC call: the device's trailers, then
 * `grpc-status`, `grpc-message` and `grpc-status-details-bin` (a
 * `google.rpc.Status` holding the error's `{ type, value }` details), as
 * Connect's gRPC server writes them.
 */
export function statusTrailer(
  trailer: Headers | undefined,
  error: ConnectError | undefined,
): Headers {
  const out = trailer === undefined ? new Headers() : copyMetadata(trailer, new Headers());
  if (error !== undefined) {
    // The error's metadata holds the device's headers and trailers; the
    // headers already went out (or go out beside these in a trailers-only
    // response), so only keys not sent yet are added.
    error.metadata.forEach((value, name) => {
      if (isForwardedMetadata(name) && !out.has(name)) appendValid(out, name, value);
    });
  }
  // setTrailerStatus would copy the error's metadata again: give it a bare error view.
  const status = new Headers();
  setTrailerStatus(status, error === undefined ? undefined : withoutMetadata(error));
  status.forEach((value, name) => {
    out.set(name, value);
  });
  if (error !== undefined) out.set("grpc-message", percentEncode(error.rawMessage));
  return out;
}

/** Bytes a `grpc-message` carries as they are: space and visible ASCII but `%`. */
const PLAIN_MESSAGE = /^[\x20-\x24\x26-\x7e]*$/;

/**
 * `grpc-message` as the gRPC spec encodes it: UTF-8, with bytes outside
 * space and visible ASCII, and `%`, percent-encoded. (Connect's encoder
 * also escapes `:` and `/`, which grpc-js shows undecoded.)
 */
function percentEncode(message: string): string {
  if (PLAIN_MESSAGE.test(message)) return message;
  let out = "";
  for (const byte of new TextEncoder().encode(message)) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function withoutMetadata(error: ConnectError): ConnectError {
  const bare = new ConnectError(error.rawMessage, error.code);
  bare.details = error.details;
  return bare;
}

/** `Headers` as Node's outgoing header object (repeated names joined by commas, as `Headers` holds them). */
export function nodeHeaders(headers: Headers): OutgoingHttpHeaders {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name] = value;
  });
  return out;
}

/** Header values HTTP can carry: no CR, LF or NUL (RFC 9110 5.5). */
const INVALID_VALUE = /[\r\n\0]/;

/** A header name `Headers` takes: an HTTP token (RFC 9110 5.6.2). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function appendValid(to: Headers, name: string, value: string): void {
  if (INVALID_VALUE.test(value)) return;
  try {
    to.append(name, value);
  } catch {
    // A name that is not an HTTP token cannot be sent: dropped, as gRPC drops invalid metadata.
  }
}
