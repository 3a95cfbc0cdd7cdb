import { describe, expect, it } from "vitest";
import { ReceiveCredit, SendCredit } from "./flow-credit.js";

describe("SendCredit", () => {
  it("waits until a grant covers the sequence number", async () => {
    const credit = new SendCredit(2);
    expect(credit.allows(1)).toBe(true);
    expect(credit.allows(2)).toBe(false);
    let sent = false;
    const waiting = credit.waitFor(2, new AbortController().signal).then(() => {
      sent = true;
    });
    await Promise.resolve();
    expect(sent).toBe(false);
    credit.grant(3);
    await waiting;
    expect(sent).toBe(true);
  });

  it("ignores stale and duplicate grants", () => {
    const credit = new SendCredit(5);
    credit.grant(3);
    expect(credit.current).toBe(5);
    credit.grant(8);
    credit.grant(8);
    expect(credit.current).toBe(8);
  });

  it("rejects a waiter when its signal aborts", async () => {
    const credit = new SendCredit(0);
    const controller = new AbortController();
    const waiting = credit.waitFor(0, controller.signal);
    controller.abort(new Error("gone"));
    await expect(waiting).rejects.toThrow("gone");
  });
});

describe("ReceiveCredit", () => {
  it("grants more once half a window is released", () => {
    const credit = new ReceiveCredit(4);
    credit.processedFrame(0, 1);
    credit.processedFrame(1, 1);
    expect(credit.nextGrant()).toBeUndefined();
    credit.took();
    expect(credit.nextGrant()).toBeUndefined();
    credit.took();
    expect(credit.nextGrant()).toBe(6);
    expect(credit.nextGrant()).toBeUndefined();
  });

  it("holds credit while a batch frame still has untaken messages", () => {
    const credit = new ReceiveCredit(2);
    credit.processedFrame(0, 3);
    credit.took();
    credit.took();
    expect(credit.released).toBe(0);
    credit.took();
    expect(credit.released).toBe(1);
  });

  it("releases frames without messages when processed", () => {
    const credit = new ReceiveCredit(2);
    credit.processedFrame(0, 0);
    credit.processedFrame(1, 0);
    expect(credit.released).toBe(2);
    expect(credit.nextGrant()).toBe(4);
  });
});
