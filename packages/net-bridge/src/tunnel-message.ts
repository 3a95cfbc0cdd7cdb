/**
 * The wire names of a byte-stream connection (docs/PROTOCOL.md section 23):
 * the virtual service `mqrpc.v1.Tunnel`, one bidi method per virtual port
 * (`Port22`, `Port50051`), and `mqrpc.v1.TunnelMessage` in every message.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DEFAULT_MAX_PUBLISH_BYTES } from "@mqrpc/runtime";
import {
  type TunnelMessage,
  TunnelMessageSchema,
} from "@mqrpc/runtime/proto/mqrpc/v1/tunnel_pb.js";

/** The service every byte-stream connection is a call of. */
export const TUNNEL_SERVICE = "mqrpc.v1.Tunnel";

/** Request header that carries the caller's source port (its `localPort`), in decimal. */
export const SOURCE_PORT_HEADER = "mqrpc-source-port";

const PORT_METHOD = /^Port([1-9][0-9]{0,4})$/;

/**
 * Checks a virtual port: an integer from 1 to 65535.
 *
 * @throws Error naming `option` otherwise.
 */
export function checkPort(port: unknown, option = "port"): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`${option} must be an integer from 1 to 65535, got ${String(port)}`);
  }
  return port;
}

/** The method of `mqrpc.v1.Tunnel` that serves virtual port `port`: `Port{port}`. */
export function portMethod(port: number): string {
  return `Port${port}`;
}

/** The virtual port a method of `mqrpc.v1.Tunnel` serves, or undefined for any other name. */
export function methodPort(method: string): number | undefined {
  const m = PORT_METHOD.exec(method);
  if (m === null) return undefined;
  const port = Number(m[1]);
  return port <= 65535 ? port : undefined;
}

/** Encodes one TunnelMessage: `data` (may be empty) and, when set, end of stream. */
export function encodeTunnelMessage(data: Uint8Array, endOfStream: boolean): Uint8Array {
  return encodeTunnelParts([data], data.byteLength, endOfStream);
}

/**
 * Encodes one TunnelMessage whose `data` is `parts` joined (`size` bytes in
 * all), copying each byte once: field 1 (tag `0a`, length, bytes) unless
 * empty, then field 2 (`10 01`) when the stream ends, the canonical proto3
 * encoding protobuf-es writes (the test vectors hold the two equal).
 */
export function encodeTunnelParts(
  parts: readonly Uint8Array[],
  size: number,
  endOfStream: boolean,
): Uint8Array {
  const header = size === 0 ? 0 : 1 + varintLength(size);
  const out = Buffer.allocUnsafe(header + size + (endOfStream ? 2 : 0));
  let at = 0;
  if (size > 0) {
    out[at++] = 0x0a;
    for (let n = size; ; ) {
      if (n < 0x80) {
        out[at++] = n;
        break;
      }
      out[at++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    for (const part of parts) {
      out.set(part, at);
      at += part.byteLength;
    }
  }
  if (endOfStream) {
    out[at++] = 0x10;
    out[at++] = 0x01;
  }
  return out;
}

function varintLength(n: number): number {
  let length = 1;
  while (n >= 0x80) {
    n >>>= 7;
    length++;
  }
  return length;
}

/** The same encoding by protobuf-es, for tests that hold {@link encodeTunnelParts} to it. */
export function encodeTunnelMessageWithSchema(data: Uint8Array, endOfStream: boolean): Uint8Array {
  return toBinary(TunnelMessageSchema, create(TunnelMessageSchema, { data, endOfStream }));
}

/**
 * Decodes one TunnelMessage; `data` is a view into `bytes`, not a copy.
 *
 * @throws Error when `bytes` is not a TunnelMessage.
 */
export function decodeTunnelMessage(bytes: Uint8Array): TunnelMessage {
  return fromBinary(TunnelMessageSchema, bytes);
}

/** Bytes a publish keeps for the topic, the MQTT header and the frame around a message. */
const PUBLISH_HEADROOM = 2048;

/**
 * The most bytes of a stream one message carries, for a given largest
 * publish: a message that fits in one publish travels as one frame (no
 * chunking, nothing to reassemble), with room left for a topic of up to
 * about 1900 bytes.
 */
export function segmentBytes(maxPublishBytes: number | undefined): number {
  const publish = maxPublishBytes ?? DEFAULT_MAX_PUBLISH_BYTES;
  return publish - Math.min(PUBLISH_HEADROOM, Math.floor(publish / 2));
}
