/**
 * Splits messages into Chunk frames and reassembles them, with a cap on the
 * reassembled size that is enforced before anything is buffered.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Chunk } from "./gen/mqrpc/v1/wire_pb.js";

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
 * Bytes that all reassemblies of one server or transport may hold together.
 * A peer that opens many calls and leaves a large message half-sent in each
 * meets this bound, not the process's memory limit.
 */
export class ByteBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  /** Bytes currently held. */
  get inUse(): number {
    return this.used;
  }

  /** Takes `n` bytes if they are available. */
  reserve(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }

  /** Gives back `n` bytes. */
  release(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

/**
 * Reassembles one message at a time from Chunk frames that arrive in
 * sequence order (the {@link ReorderWindow} runs first), copying each chunk
 * into one buffer of the announced size as it arrives, so a message costs
 * its size once, not its pieces and then their concatenation. The announced
 * size is checked against `maxMessageBytes` and reserved from the shared
 * budget before anything is allocated: RESOURCE_EXHAUSTED otherwise.
 */
export class ChunkAssembler {
  private buffer: Uint8Array | undefined;
  private totalSize = 0;
  private received = 0;

  /**
   * @param maxMessageBytes cap on one message
   * @param budget shared cap on the bytes all reassemblies hold
   */
  constructor(
    private readonly maxMessageBytes: number,
    private readonly budget?: ByteBudget,
  ) {}

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
   * otherwise undefined. Throws a ConnectError (RESOURCE_EXHAUSTED for an
   * oversize message, INVALID_ARGUMENT for an inconsistent sequence) and
   * forgets the partial message.
   */
  push(chunk: Chunk): Uint8Array | undefined {
    try {
      return this.add(chunk);
    } catch (e) {
      this.reset();
      throw e;
    }
  }

  /** Drops a partly received message. */
  reset(): void {
    if (this.buffer !== undefined) this.budget?.release(this.totalSize);
    this.buffer = undefined;
    this.totalSize = 0;
    this.received = 0;
  }

  private add(chunk: Chunk): Uint8Array | undefined {
    if (this.buffer === undefined) {
      if (chunk.offset !== 0) {
        throw new ConnectError(
          `chunk sequence starts at offset ${chunk.offset}, not 0`,
          Code.InvalidArgument,
        );
      }
      if (chunk.totalSize > this.maxMessageBytes) {
        throw new ConnectError(
          `message of ${chunk.totalSize} bytes exceeds the limit of ${this.maxMessageBytes} bytes`,
          Code.ResourceExhausted,
        );
      }
      if (chunk.data.byteLength === chunk.totalSize) {
        // The whole message in one chunk: no copy.
        return chunk.data;
      }
      this.check(chunk);
      if (this.budget !== undefined && !this.budget.reserve(chunk.totalSize)) {
        throw new ConnectError(
          `reassembly memory is exhausted (${this.budget.limit} bytes across calls)`,
          Code.ResourceExhausted,
        );
      }
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
    this.reset();
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
