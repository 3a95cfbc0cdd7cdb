/**
 * Splits messages into Chunk frames and reassembles them, with a cap on the
 * reassembled size that is enforced before anything is buffered.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Chunk } from "../gen/mqrpc/v1/wire_pb.js";
import type { BudgetWait, MessageReservation, ReassemblyBudget } from "./reassembly-budget.js";

/**
 * What {@link ChunkAssembler.push} returns when the budget has no room for
 * the bytes a chunk brings: the chunk was not taken
 * ({@link ChunkAssembler.waitForRoom} queues for the room).
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
 * Room a reassembly buffer starts with, unless the first chunk is larger
 * (then twice that chunk) or the message smaller.
 */
export const FIRST_BUFFER_BYTES = 64 * 1024;

/**
 * Reassembles one message at a time from Chunk frames that arrive in
 * sequence order (the {@link ReorderWindow} runs first), copying each chunk
 * into one buffer as it arrives. The announced size is checked against
 * `maxMessageBytes` (RESOURCE_EXHAUSTED above it) but not trusted: the
 * buffer starts at twice the first chunk (at least {@link FIRST_BUFFER_BYTES})
 * and doubles as bytes arrive, up to the announced size, and each step is
 * reserved from the shared budget first. So a message holds at most twice
 * the bytes received (plus the first step), and an honest large message is
 * copied about once more in total than with one buffer of its size. When
 * the budget has no room for a step, the chunk is refused with
 * {@link NO_ROOM}; the receiver queues ({@link ChunkAssembler.waitForRoom})
 * and asks for the chunk again once the room is reserved.
 */
export class ChunkAssembler {
  private buffer: Uint8Array | undefined;
  private totalSize = 0;
  private received = 0;
  /** The message's room in the budget: made at its first chunk, closed when it ends. */
  private reservation: MessageReservation | undefined;
  /** Bytes the chunk refused with NO_ROOM needs reserved. */
  private missing = 0;

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

  /** True while a message is partly received. */
  get inProgress(): boolean {
    return this.buffer !== undefined;
  }

  /** Bytes allocated for the message in progress (at most twice what arrived, or the first step). */
  get bufferedBytes(): number {
    return this.buffer?.byteLength ?? 0;
  }

  /** Bytes of the message in progress received so far. */
  get receivedBytes(): number {
    return this.received;
  }

  /** Bytes reserved in the budget for the message in progress (or about to start). */
  get reservedBytes(): number {
    return this.reservation?.held ?? 0;
  }

  /**
   * Adds a chunk. Returns the whole message when this chunk completes it,
   * {@link NO_ROOM} when the budget has no room for its bytes now (nothing
   * was taken), otherwise undefined. Throws a ConnectError
   * (RESOURCE_EXHAUSTED for an oversize message, INVALID_ARGUMENT for an
   * inconsistent sequence) and forgets the partial message.
   */
  push(chunk: Chunk): Uint8Array | undefined | typeof NO_ROOM {
    try {
      return this.add(chunk);
    } catch (e) {
      this.reset();
      throw e;
    }
  }

  /**
   * After {@link NO_ROOM}: queues for the room the refused chunk needs;
   * `granted` is called once it is reserved, and the chunk then fits.
   * Undefined when there is no budget to wait for.
   */
  waitForRoom(granted: () => void): BudgetWait | undefined {
    const reservation = this.reservation;
    if (reservation === undefined || this.missing <= 0) return undefined;
    return reservation.wait(this.missing, granted);
  }

  /** Drops a partly received message and the room it held or waited for. */
  reset(): void {
    this.reservation?.close();
    this.reservation = undefined;
    this.buffer = undefined;
    this.totalSize = 0;
    this.received = 0;
    this.missing = 0;
  }

  /** Makes sure `bytes` are reserved for the message; false when the budget has no room now. */
  private reserve(bytes: number): boolean {
    const reservation = this.reservation;
    if (reservation === undefined) return true;
    const more = bytes - reservation.held;
    if (more <= 0 || reservation.grow(more)) return true;
    this.missing = more;
    return false;
  }

  private add(chunk: Chunk): Uint8Array | undefined | typeof NO_ROOM {
    const size = chunk.data.byteLength;
    if (this.received === 0) {
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
      if (this.reservation !== undefined && this.reservation.size !== chunk.totalSize) {
        // Not the message room was queued for (a peer that changed its mind).
        this.reset();
      }
      if (size === chunk.totalSize) {
        // The whole message in one chunk: no copy, no room.
        this.reset();
        return chunk.data;
      }
      this.check(chunk);
      if (this.budget !== undefined && this.reservation === undefined) {
        this.reservation = this.budget.open(chunk.totalSize, this.owner);
      }
      this.totalSize = chunk.totalSize;
      const first = Math.min(chunk.totalSize, Math.max(FIRST_BUFFER_BYTES, 2 * size));
      if (!this.reserve(first)) return NO_ROOM;
      this.buffer = new Uint8Array(first);
    } else if (chunk.totalSize !== this.totalSize || chunk.offset !== this.received) {
      throw new ConnectError(
        `chunk (offset ${chunk.offset}, total ${chunk.totalSize}) does not continue the message (offset ${this.received}, total ${this.totalSize})`,
        Code.InvalidArgument,
      );
    } else {
      this.check(chunk);
    }
    let buffer = this.buffer as Uint8Array;
    const end = this.received + size;
    if (end > buffer.byteLength) {
      const next = Math.min(this.totalSize, Math.max(2 * buffer.byteLength, end));
      if (!this.reserve(next)) return NO_ROOM;
      const grown = new Uint8Array(next);
      grown.set(buffer.subarray(0, this.received));
      buffer = grown;
      this.buffer = grown;
    }
    buffer.set(chunk.data, this.received);
    this.received = end;
    if (this.received < this.totalSize) return undefined;
    // The budget stops counting the message: it is the application's now.
    this.reset();
    return buffer;
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
