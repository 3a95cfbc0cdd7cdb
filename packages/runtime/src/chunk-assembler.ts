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
 * sequence order (the {@link ReorderWindow} runs first). Memory held is what
 * has arrived, never more than `maxMessageBytes`: a chunk announcing a larger
 * message is refused with RESOURCE_EXHAUSTED before its data is kept.
 */
export class ChunkAssembler {
  private pieces: Uint8Array[] = [];
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
    return this.pieces.length > 0;
  }

  /** Bytes held for the message in progress. */
  get bufferedBytes(): number {
    return this.received;
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
    this.budget?.release(this.received);
    this.pieces = [];
    this.totalSize = 0;
    this.received = 0;
  }

  private add(chunk: Chunk): Uint8Array | undefined {
    if (this.pieces.length === 0) {
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
      this.totalSize = chunk.totalSize;
    } else if (chunk.totalSize !== this.totalSize || chunk.offset !== this.received) {
      throw new ConnectError(
        `chunk (offset ${chunk.offset}, total ${chunk.totalSize}) does not continue the message (offset ${this.received}, total ${this.totalSize})`,
        Code.InvalidArgument,
      );
    }
    if (chunk.data.byteLength === 0 && chunk.totalSize !== 0) {
      throw new ConnectError("empty chunk", Code.InvalidArgument);
    }
    const end = this.received + chunk.data.byteLength;
    if (end > this.totalSize) {
      throw new ConnectError(
        `chunk data runs past the announced size of ${this.totalSize} bytes`,
        Code.InvalidArgument,
      );
    }
    if (this.budget !== undefined && !this.budget.reserve(chunk.data.byteLength)) {
      throw new ConnectError(
        `reassembly memory is exhausted (${this.budget.limit} bytes across calls)`,
        Code.ResourceExhausted,
      );
    }
    this.pieces.push(chunk.data);
    this.received = end;
    if (end < this.totalSize) {
      return undefined;
    }
    const message = concat(this.pieces, this.totalSize);
    this.reset();
    return message;
  }
}

function concat(pieces: Uint8Array[], size: number): Uint8Array {
  if (pieces.length === 1 && pieces[0] !== undefined) {
    return pieces[0];
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const piece of pieces) {
    out.set(piece, offset);
    offset += piece.byteLength;
  }
  return out;
}
