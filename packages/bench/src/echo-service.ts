/**
 * What every contender serves: a 32-byte echo, a stream of N 64-byte
 * messages, and a sink for one large request. Same work everywhere, so the
 * comparison measures the transports.
 */
import { fileURLToPath } from "node:url";

export const ECHO_BYTES = 32;
export const STREAM_MESSAGE_BYTES = 64;
export const LARGE_BYTES = 16 * 1024 * 1024;

/** The proto tree, for @grpc/proto-loader (the way grpc-js documents). */
export const PROTO_ROOT = fileURLToPath(new URL("../../../proto", import.meta.url));
export const INTEROP_PROTO = "mqrpc/interop/v1/test.proto";

/** Peak resident set size so far, in bytes. */
export function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}
