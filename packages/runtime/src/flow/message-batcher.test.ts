import { describe, expect, it } from "vitest";
import { MAX_BATCH_MESSAGES } from "../wire/frame-decoder.js";
import { MessageBatcher } from "./message-batcher.js";

describe("MessageBatcher", () => {
  it("never holds more messages than a decoder takes in one Batch, however small they are", () => {
    const batcher = new MessageBatcher();
    const empty = new Uint8Array(0);
    let added = 0;
    while (batcher.fits(empty, 1 << 20)) {
      batcher.add(empty);
      added++;
    }
    expect(added).toBe(MAX_BATCH_MESSAGES);
    expect(batcher.take().length).toBe(MAX_BATCH_MESSAGES);
    expect(batcher.fits(empty, 1 << 20)).toBe(true);
  });

  it("stops at the byte budget first for larger messages", () => {
    const batcher = new MessageBatcher();
    const message = new Uint8Array(100);
    let added = 0;
    while (batcher.fits(message, 1000)) {
      batcher.add(message);
      added++;
    }
    expect(added).toBe(9);
    expect(batcher.encodedBytes).toBeLessThanOrEqual(1000);
  });
});
