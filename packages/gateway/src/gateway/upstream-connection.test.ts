import { EventEmitter } from "node:events";
import type { ClientHttp2Stream } from "node:http2";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { DEFAULT_RESET_BUDGET } from "./reset-pacer.js";
import { UpstreamConnection } from "./upstream-connection.js";

/** A stream that closes when reset, or when the test ends it. */
class FakeStream extends EventEmitter {
  closed = false;
  destroyed = false;
  reset = false;
  close(): void {
    this.reset = true;
    this.end();
  }
  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit("close");
  }
}

function connection() {
  const aborted: unknown[] = [];
  const retired: UpstreamConnection[] = [];
  const sessions = { abort: (reason: unknown) => aborted.push(reason) };
  const c = new UpstreamConnection(sessions as unknown as Http2SessionManager, (r) =>
    retired.push(r),
  );
  const open = (n: number) =>
    Array.from({ length: n }, () => {
      const s = new FakeStream();
      c.track(s as unknown as ClientHttp2Stream);
      return s;
    });
  const cancel = (s: FakeStream) => c.cancel(s as unknown as ClientHttp2Stream);
  return { c, aborted, retired, open, cancel };
}

describe("UpstreamConnection", () => {
  it("cancels within the budget without retiring", () => {
    const { c, aborted, retired, open, cancel } = connection();
    const streams = open(10);
    for (const s of streams) cancel(s);
    expect(streams.every((s) => s.reset)).toBe(true);
    expect(retired).toEqual([]);
    expect(aborted).toEqual([]);
    expect(c.isClosed).toBe(false);
  });

  it("retires when a cancel must wait, and closes once only waiting cancels are left", () => {
    const { c, aborted, retired, open, cancel } = connection();
    const burst = DEFAULT_RESET_BUDGET.burst;
    const running = open(1)[0] as FakeStream;
    const storm = open(burst + 5);
    for (const s of storm) cancel(s);
    expect(storm.filter((s) => s.reset)).toHaveLength(burst);
    expect(retired).toEqual([c]);
    // A call still runs on it: the connection stays.
    expect(aborted).toEqual([]);
    running.end();
    expect(aborted).toHaveLength(1);
    expect(c.isClosed).toBe(true);
  });

  it("a waiting cancel whose stream ends by itself does not close the connection under a running call", () => {
    const { c, aborted, open, cancel } = connection();
    const burst = DEFAULT_RESET_BUDGET.burst;
    const running = open(1)[0] as FakeStream;
    const storm = open(burst + 1);
    for (const s of storm) cancel(s);
    // The one cancel that waits: its upstream finishes it meanwhile.
    const waiting = storm.find((s) => !s.reset) as FakeStream;
    waiting.end();
    expect(aborted).toEqual([]);
    running.end();
    expect(aborted).toHaveLength(1);
    expect(c.isClosed).toBe(true);
  });
});
