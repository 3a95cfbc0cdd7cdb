/**
 * Call metadata between mqrpc (Connect `Headers`) and an upstream gRPC call
 * (HTTP/2 headers), `-bin` values base64 on both sides. What
 * gRPC reserves for the protocol itself is not copied either way: HTTP/2
 * pseudo-headers, `grpc-*` headers (timeout, encoding, status — the gateway
 * carries those its own way), and connection-level HTTP headers.
 */

import type { IncomingHttpHeaders } from "node:http2";
import { Code, ConnectError, decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";

/** HTTP headers that describe one HTTP/2 connection or exchange, not the call. */
const CONNECTION_HEADERS = new Set([
  "connection",
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
  "user-agent",
]);

/** Whether a metadata key belongs to the call (and so is forwarded). */
export function isCallMetadata(key: string): boolean {
  return !key.startsWith(":") && !key.startsWith("grpc-") && !CONNECTION_HEADERS.has(key);
}

/**
 * The caller's request headers as the HTTP/2 headers of the upstream call.
 * `-bin` values stay base64 as gRPC carries them, each checked and written
 * padded; a `-bin` header that Connect joined from several values (`a, b`)
 * goes as that many header fields, as a gRPC client sends repeated
 * metadata.
 *
 * @throws ConnectError INVALID_ARGUMENT naming the header when a `-bin`
 *   value is not base64.
 */
export function metadataHeaders(headers: Headers): Record<string, string | string[]> {
  const metadata: Record<string, string | string[]> = {};
  headers.forEach((value, key) => {
    if (!isCallMetadata(key)) return;
    if (!key.endsWith("-bin")) {
      metadata[key] = value;
      return;
    }
    try {
      const values = value
        .split(",")
        .map((part) => encodeBinaryHeader(decodeBinaryHeader(part.trim())));
      metadata[key] = values.length === 1 ? (values[0] as string) : values;
    } catch (e) {
      throw new ConnectError(
        `request header "${key}" cannot travel as gRPC metadata: ${e instanceof Error ? e.message : String(e)}`,
        Code.InvalidArgument,
      );
    }
  });
  return metadata;
}

/**
 * Appends an upstream's response headers or trailers to the `Headers` that
 * `target` returns, leaving out what gRPC reserves. `-bin` values stay
 * base64, as Connect keeps them, written padded; one that is not base64 is
 * dropped. `target` is asked only when there is something to append: most
 * responses carry none, and a call context makes its `Headers` on demand.
 */
export function appendMetadata(headers: IncomingHttpHeaders, target: () => Headers): void {
  for (const key in headers) {
    if (!isCallMetadata(key)) continue;
    const value = headers[key];
    if (value === undefined) continue;
    const out = target();
    for (const item of Array.isArray(value) ? value : [value]) {
      try {
        if (!key.endsWith("-bin")) {
          out.append(key, item);
          continue;
        }
        for (const part of item.split(",")) {
          out.append(key, encodeBinaryHeader(decodeBinaryHeader(part.trim())));
        }
      } catch {
        // A value `Headers` refuses, or a `-bin` value that is not base64,
        // cannot be delivered; dropping it beats failing the whole call.
      }
    }
  }
}
