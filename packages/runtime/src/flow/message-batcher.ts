/**
 * Collects stream messages for one Batch frame, never more than fit in one
 * publish. Pure bookkeeping; when to flush is the sender's decision.
 */
import { MAX_BATCH_MESSAGES } from "../wire/frame-decoder.js";

/** Bytes a message adds to a Batch frame: field tag, length varint, data. */
export function batchEntryBytes(message: Uint8Array): number {
  const n = message.byteLength;
  return 1 + (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5) + n;
}

/** See the module comment; never more messages than a decoder takes (MAX_BATCH_MESSAGES). */
export class MessageBatcher {
  private messages: Uint8Array[] = [];
  private bytes = 0;

  /** Messages waiting. */
  get size(): number {
    return this.messages.length;
  }

  /** Encoded size of the waiting messages inside a Batch. */
  get encodedBytes(): number {
    return this.bytes;
  }

  /** Whether `message` can join without the batch exceeding `budget` bytes. */
  fits(message: Uint8Array, budget: number): boolean {
    return (
      this.messages.length < MAX_BATCH_MESSAGES && this.bytes + batchEntryBytes(message) <= budget
    );
  }

  /** Adds a message. */
  add(message: Uint8Array): void {
    this.messages.push(message);
    this.bytes += batchEntryBytes(message);
  }

  /** Removes and returns every waiting message. */
  take(): Uint8Array[] {
    const taken = this.messages;
    this.messages = [];
    this.bytes = 0;
    return taken;
  }
}
