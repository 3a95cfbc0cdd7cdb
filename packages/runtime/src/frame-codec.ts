/**
 * Encodes and decodes the one protobuf {@link Frame} that every call publish
 * carries, and rejects what is not a valid protocol-v1 frame before any call
 * state sees it.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { readFrame } from "./frame-decoder.js";
import { writeFrame } from "./frame-encoder.js";
import type { Frame, FrameSchema } from "./gen/mqrpc/v1/wire_pb.js";

/** The protocol version this runtime speaks; frames with another are rejected. */
export const PROTOCOL_VERSION = 1;

/** What a caller fills in to build a frame; the version is added here. */
export type FrameInit = Omit<MessageInitShape<typeof FrameSchema>, "version" | "$typeName">;

/** A frame's kind, the name of the `Frame.kind` oneof case. */
export type FrameKind = NonNullable<Frame["kind"]["case"]>;

/** Thrown by {@link decodeFrame} for bytes that are not a valid v1 frame. */
export class FrameDecodeError extends Error {
  override name = "FrameDecodeError";
}

/** Serializes a frame, stamping the protocol version. */
export function encodeFrame(init: FrameInit): Uint8Array {
  return writeFrame({ ...init, version: PROTOCOL_VERSION });
}

/**
 * Parses and validates a frame: protobuf well-formedness, the protocol
 * version, a kind, and a non-zero call id.
 */
export function decodeFrame(bytes: Uint8Array): Frame & { kind: { case: FrameKind } } {
  let frame: Frame;
  try {
    frame = readFrame(bytes);
  } catch (e) {
    throw new FrameDecodeError(
      `not a protobuf Frame: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (frame.version !== PROTOCOL_VERSION) {
    throw new FrameDecodeError(`unsupported protocol version ${frame.version}`);
  }
  if (frame.kind.case === undefined) {
    throw new FrameDecodeError("frame has no kind");
  }
  if (frame.callId === 0) {
    throw new FrameDecodeError("frame has call id 0");
  }
  return frame as Frame & { kind: { case: FrameKind } };
}

/** Whether frames of this kind carry a meaningful sequence number. */
export function isSequenced(kind: FrameKind): boolean {
  return kind !== "cancel" && kind !== "credit" && kind !== "ping" && kind !== "pong";
}
