/**
 * A reply frame no publish can carry: larger than the broker's maximum
 * packet size. Sending it again cannot help (the broker refuses it every
 * time), so the server ends the call in its place with RESOURCE_EXHAUSTED,
 * and the status message, built here, says what was too large and the
 * limit (docs/PROTOCOL.md section 17.2).
 */
import { fromBinary } from "@bufbuild/protobuf";
import { type Frame, FrameSchema, type MetadataEntry } from "../gen/mqrpc/v1/wire_pb.js";
import { PacketTooLargeError } from "../link/publish-error.js";

/** The MQTT 5 reason code "Packet too large" (PUBACK or DISCONNECT). */
const PACKET_TOO_LARGE = 0x95;

/**
 * Whether a failed publish failed for its size: the link refused it over a
 * known limit or dropped it after the broker closed the connection on it
 * ({@link PacketTooLargeError}), or an MQTT 5 broker refused it (0x95).
 */
export function isTooLargeForBroker(error: unknown): boolean {
  return (
    error instanceof PacketTooLargeError ||
    (error as { code?: unknown } | undefined)?.code === PACKET_TOO_LARGE
  );
}

/**
 * The status message for a reply frame (encoded, `frame`) that could not be
 * published because of its size, `error` being what the publish failed
 * with: names the metadata when it is what makes the frame large (it
 * cannot be chunked), else the frame, and the broker's limit as far as it
 * is known. `announcedLimit` is the Maximum Packet Size of the broker's
 * MQTT 5 CONNACK, if any: a limit the link learned instead (MQTT 3.1.1)
 * is only this server's estimate, and said to be one.
 */
export function oversizedReplyMessage(
  frame: Uint8Array,
  error: unknown,
  announcedLimit?: number,
): string {
  const limit = limitOf(error, announcedLimit);
  const decoded = decodeQuietly(frame);
  const parts = metadataParts(decoded);
  const metadata = parts.reduce((sum, [, bytes]) => sum + bytes, 0);
  if (metadata > 0 && metadata >= messageBytesOf(decoded)) {
    const which = parts
      .filter(([, bytes]) => bytes > 0)
      .map(([name]) => name)
      .join(" and ");
    return `the reply's metadata (${metadata} bytes of ${which}) exceeds the broker's maximum packet size (${limit})`;
  }
  return (
    `a reply frame of ${frame.byteLength} bytes exceeds the broker's maximum packet size (${limit}); ` +
    "set the server's maxPublishBytes to the broker's maximum packet size so that large messages are chunked"
  );
}

/** What is known of the limit the publish ran into. */
function limitOf(error: unknown, announcedLimit: number | undefined): string {
  if (!(error instanceof PacketTooLargeError)) return "the broker refused the publish as too large";
  if (error.closedByBroker)
    return `the broker closed the connection on a publish of ${error.packetBytes} bytes`;
  if (error.limitBytes === announcedLimit) return `${error.limitBytes} bytes`;
  return `this server publishes at most ${error.limitBytes} bytes to it, learned when the broker closed the connection on a larger publish`;
}

type Part = readonly [name: string, bytes: number];

/** The metadata a frame carries, by part, in bytes (keys and values). */
function metadataParts(decoded: Frame | undefined): Part[] {
  switch (decoded?.kind.case) {
    case "headers":
      return [["response headers", entriesBytes(decoded.kind.value.headers)]];
    case "end": {
      const end = decoded.kind.value;
      const status = end.status;
      let statusBytes = status === undefined ? 0 : utf8Bytes(status.message);
      for (const detail of status?.details ?? [])
        statusBytes += utf8Bytes(detail.type) + detail.value.byteLength;
      return [
        ["response headers", entriesBytes(end.headers)],
        ["response trailers", entriesBytes(end.trailers)],
        ["status message and details", statusBytes],
      ];
    }
    default:
      return [];
  }
}

/** The bytes of response messages a frame carries (inline, batched or a chunk). */
function messageBytesOf(decoded: Frame | undefined): number {
  switch (decoded?.kind.case) {
    case "end":
      return decoded.kind.value.message?.byteLength ?? 0;
    case "message":
      return decoded.kind.value.byteLength;
    case "chunk":
      return decoded.kind.value.data.byteLength;
    case "batch":
      return decoded.kind.value.messages.reduce((sum, m) => sum + m.byteLength, 0);
    default:
      return 0;
  }
}

/**
 * The frame as protobuf, without the receiving side's limits (this one is
 * ours, and may be over them), or undefined if it does not parse.
 */
function decodeQuietly(frame: Uint8Array): Frame | undefined {
  try {
    return fromBinary(FrameSchema, frame);
  } catch {
    return undefined;
  }
}

function entriesBytes(entries: readonly MetadataEntry[]): number {
  let bytes = 0;
  for (const entry of entries) {
    bytes += utf8Bytes(entry.key);
    const value = entry.value;
    if (value.case === "binary") bytes += value.value.byteLength;
    else if (value.case === "text") bytes += utf8Bytes(value.value);
  }
  return bytes;
}

const encoder = new TextEncoder();

function utf8Bytes(text: string): number {
  return encoder.encode(text).byteLength;
}
