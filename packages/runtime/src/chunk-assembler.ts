/**
 * Splits messages into Chunk frames and reassembles them, with a cap on the
 * reassembled size that is enforced before anything is buffered.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Chunk } from "./gen/mqrpc/v1/wire_pb.js";
import type { ReassemblyBudget } from "./reassembly-budget.js";

/**
 * What {@link ChunkAssembler.push} returns when the budget has no room for
 * the message a first chunk starts: the chunk was not taken.
 */
export const NO_ROOM: unique symbol = Symbol("no room for the message");

/** One piece of a message, ready to put into a Chunk frame. */
export interface ChunkPiece {
  readonly totalSize: number;
  readonly offset: number;
  readonly data: Uint8Array;
}

/**
 * Cuts `message` into pieces of at most `maxChunkBytes` bytes of data. The
 * pieces are views of `message`, not copies.
 */
export function splitIntoChunks(message: Uint8Array, maxChunkBytes: number): ChunkPiece[] {
  if (!Number.isInteger(maxChunkBytes) || maxChunkBytes < 1) {
    throw new Error(`maxChunkBytes must be a positive integer, got ${maxChunkBytes}`);
  }
  const pieces: ChunkPiece[] = [];
  const totalSize = message.byteLength;
  for (let offset = 0; offset < totalSize; offset += maxChunkBytes) {
    pieces.push({
      totalSize,
      offset,
      data: message.subarray(offset, Math.min(totalSize, offset + maxChunkBytes)),
    });
  }
  return pieces;
}

/**
 * Reassembles one message at a time from Chunk frames that arrive in
 * sequence order (the {@link ReorderWindow} runs first), copying each chunk
 * into one buffer of the announced size as it arrives, so a message costs
 * its size once, not its pieces and then their concatenation. The announced
 * size is checked against `maxMessageBytes` (RESOURCE_EXHAUSTED above it)
 * and reserved from the shared budget before anything is allocated; when the
 * budget has no room the chunk is refused with {@link NO_ROOM}, and the
 * receiver waits for room ({@link ChunkAssembler.hold}) and asks again.
 */
export class ChunkAssembler {
  private buffer: Uint8Array | undefined;
  private totalSize = 0;
  private received = 0;
  /** Bytes the budget set aside for the next message, before its first chunk came back. */
  private held = 0;

  /**
   * @param maxMessageBytes cap on one message
   * @param budget shared cap on the bytes all reassemblies hold
   * @param owner whose share of the budget this assembler draws on
   * @param limitName how errors name the limit, e.g. "the server's maxMessageBytes"
   */
  constructor(
    private readonly maxMessageBytes: number,
    private readonly budget?: ReassemblyBudget,
    private readonly owner?: string,
    private readonly limitName = "maxMessageBytes",
  ) {}

  /** Takes over `bytes` the budget reserved for this assembler's next message. */
  hold(bytes: number): void {
    this.held += bytes;
  }

  /** True while a message is partly received. */
  get inProgress(): boolean {
    return this.buffer !== undefined;
  }

  /** Bytes held for the message in progress (its announced size). */
  get bufferedBytes(): number {
    return this.buffer === undefined ? 0 : this.totalSize;
  }

  /**
   * Adds a chunk. Returns the whole message when this chunk completes it,
   * {@link NO_ROOM} when it starts a message the budget has no room for
   * now, otherwise undefined. Throws a ConnectError (RESOURCE_EXHAUSTED for
   * an oversize message, INVALID_ARGUMENT for an inconsistent sequence) and
   * forgets the partial message.
   */
  push(chunk: Chunk): Uint8Array | undefined | typeof NO_ROOM {
    try {
      return this.add(chunk);
    } catch (e) {
      this.reset();
      throw e;
    }
  }

  /** Drops a partly received message and any room held for the next one. */
  reset(): void {
    this.finishMessage();
    if (this.held > 0) this.budget?.release(this.held, this.owner);
    this.held = 0;
  }

  private finishMessage(): void {
    if (this.buffer !== undefined) this.budget?.release(this.totalSize, this.owner);
    this.buffer = undefined;
    this.totalSize = 0;
    this.received = 0;
  }

  /** Reserves room for a message of `size` bytes, from what is held first. */
  private reserve(size: number): boolean {
    if (this.held >= size) {
      if (this.held > size) this.budget?.release(this.held - size, this.owner);
      this.held = 0;
      return true;
    }
    if (this.held > 0) {
      this.budget?.release(this.held, this.owner);
      this.held = 0;
    }
    return this.budget === undefined || this.budget.reserve(size, this.owner);
  }

  private add(chunk: Chunk): Uint8Array | undefined | typeof NO_ROOM {
    if (this.buffer === undefined) {
      if (chunk.offset !== 0) {
        throw new ConnectError(
          `chunk sequence starts at offset ${chunk.offset}, not 0`,
          Code.InvalidArgument,
        );
      }
      if (chunk.totalSize > this.maxMessageBytes) {
        throw new ConnectError(
          `a message of ${chunk.totalSize} bytes exceeds ${this.limitName} (${this.maxMessageBytes} bytes)`,
          Code.ResourceExhausted,
        );
      }
      if (chunk.data.byteLength === chunk.totalSize) {
        // The whole message in one chunk: no copy.
        return chunk.data;
      }
      this.check(chunk);
      if (!this.reserve(chunk.totalSize)) return NO_ROOM;
      this.totalSize = chunk.totalSize;
      this.buffer = new Uint8Array(chunk.totalSize);
    } else if (chunk.totalSize !== this.totalSize || chunk.offset !== this.received) {
      throw new ConnectError(
        `chunk (offset ${chunk.offset}, total ${chunk.totalSize}) does not continue the message (offset ${this.received}, total ${this.totalSize})`,
        Code.InvalidArgument,
      );
    } else {
      this.check(chunk);
    }
    this.buffer.set(chunk.data, this.received);
    this.received += chunk.data.byteLength;
    if (this.received < this.totalSize) {
      return undefined;
    }
    const message = this.buffer;
    this.finishMessage();
    return message;
  }

  private check(chunk: Chunk): void {
    if (chunk.data.byteLength === 0) {
      throw new ConnectError("empty chunk", Code.InvalidArgument);
    }
    if (chunk.offset + chunk.data.byteLength > chunk.totalSize) {
      throw new ConnectError(
        `chunk data runs past the announced size of ${chunk.totalSize} bytes`,
        Code.InvalidArgument,
      );
    }
  }
}
