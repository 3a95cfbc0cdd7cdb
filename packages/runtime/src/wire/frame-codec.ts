/**
 * Encodes and decodes the one protobuf {@link Frame} that every call publish
 * carries, and rejects what is not a valid frame of this protocol version before any call
 * state sees it.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Frame, FrameSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { readFrame } from "./frame-decoder.js";
import { PROTOCOL_VERSION, writeFrame } from "./frame-encoder.js";

export { PROTOCOL_VERSION };

/** What a caller fills in to build a frame; the version is added here. */
export type FrameInit = Omit<MessageInitShape<typeof FrameSchema>, "version" | "$typeName">;

/** The kind of a frame that belongs to a call: every `Frame.kind` but `coalesced`. */
export type FrameKind = Exclude<NonNullable<Frame["kind"]["case"]>, "coalesced">;

/** A validated frame of one call. */
export type CallFrame = Frame & { kind: { case: FrameKind } };

/** A validated frame as published: one call's, or several calls' coalesced. */
export type PublishedFrame = Frame & { kind: { case: FrameKind | "coalesced" } };

/** Thrown by {@link decodeFrame} for bytes that are not a valid frame of this version. */
export class FrameDecodeError extends Error {
  override name = "FrameDecodeError";
}

/** Serializes a frame, stamping the protocol version. */
export function encodeFrame(init: FrameInit): Uint8Array {
  return writeFrame(init, PROTOCOL_VERSION);
}

/**
 * Parses and validates a publish's frame: protobuf well-formedness, the
 * protocol version, a kind, and a non-zero call id; a coalesced frame's
 * inner frames each the same way.
 */
export function decodeFrame(bytes: Uint8Array): PublishedFrame {
  let frame: Frame;
  try {
    frame = readFrame(bytes);
  } catch (e) {
    throw new FrameDecodeError(
      `not a protobuf Frame: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (frame.kind.case === "coalesced") {
    checkVersion(frame);
    if (frame.kind.value.frames.length === 0) {
      throw new FrameDecodeError("coalesced frame carries no frames");
    }
    for (const inner of frame.kind.value.frames) checkCallFrame(inner);
    return frame as PublishedFrame;
  }
  return checkCallFrame(frame);
}

/** The call frames a publish carries, in order: one, or those coalesced. */
export function decodeCallFrames(bytes: Uint8Array): readonly CallFrame[] {
  const frame = decodeFrame(bytes);
  return frame.kind.case === "coalesced"
    ? (frame.kind.value.frames as CallFrame[])
    : [frame as CallFrame];
}

function checkVersion(frame: Frame): void {
  if (frame.version !== PROTOCOL_VERSION) {
    throw new FrameDecodeError(`unsupported protocol version ${frame.version}`);
  }
}

function checkCallFrame(frame: Frame): CallFrame {
  checkVersion(frame);
  if (frame.kind.case === undefined) {
    throw new FrameDecodeError("frame has no kind");
  }
  if (frame.callId === 0) {
    throw new FrameDecodeError("frame has call id 0");
  }
  return frame as CallFrame;
}
