/**
 * Call metadata between mqrpc (Connect `Headers`, `-bin` values base64) and
 * an upstream gRPC call (grpc-js `Metadata`, `-bin` values as bytes). What
 * gRPC reserves for the protocol itself is not copied either way: HTTP/2
 * pseudo-headers, `grpc-*` headers (timeout, encoding, status — the gateway
 * carries those its own way), and connection-level HTTP headers.
 */
import { Code, ConnectError, decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";
import { Metadata } from "@grpc/grpc-js";

/** HTTP headers that describe one HTTP/2 connection or exchange, not the call. */
const CONNECTION_HEADERS = new Set([
  "connection",
  "content-length",
  "content-type",
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
 * The caller's request headers as upstream metadata. A `-bin` header that
 * Connect joined from several values (`a, b`) becomes several values again.
 *
 * @throws ConnectError INVALID_ARGUMENT naming the header when a `-bin`
 *   value is not base64 or a key or text value is not one gRPC allows.
 */
export function headersToMetadata(headers: Headers): Metadata {
  const metadata = new Metadata();
  headers.forEach((value, key) => {
    if (!isCallMetadata(key)) return;
    try {
      if (key.endsWith("-bin")) {
        for (const part of value.split(",")) {
          metadata.add(key, Buffer.from(decodeBinaryHeader(part.trim())));
        }
      } else {
        metadata.add(key, value);
      }
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
 * Appends upstream metadata to `target` (`-bin` values base64-encoded, as
 * Connect keeps them), leaving out what gRPC reserves.
 */
export function appendMetadata(metadata: Metadata, target: Headers): void {
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    if (!isCallMetadata(key)) continue;
    for (const value of values) {
      try {
        target.append(key, typeof value === "string" ? value : encodeBinaryHeader(value));
      } catch {
        // A value `Headers` refuses (grpc-js accepts a few bytes it does not)
        // cannot be delivered; dropping it beats failing the whole call.
      }
    }
  }
}
