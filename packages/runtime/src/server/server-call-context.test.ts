import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { TestService } from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { ServerCallContext } from "./server-call-context.js";

const method = TestService.method.unaryCall;

function context(timeoutMs = 0) {
  const aborts: unknown[] = [];
  const ctx = new ServerCallContext({
    method,
    serverId: "dev 1",
    timeoutMs,
    requestHeader: [
      { $typeName: "mqrpc.v1.MetadataEntry", key: "x-a", value: { case: "text", value: "1" } },
    ],
    onAbort: (reason) => aborts.push(reason),
  });
  return { ctx, aborts };
}

describe("ServerCallContext deadline", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  // An Open carries up to 2^32 - 1 ms; Node's timers hold 2^31 - 1.
  for (const ms of [5_000, 2 ** 31 - 1, 2 ** 31, 3_000_000_000, 2 ** 32 - 1]) {
    it(`an Open timeout of ${ms} ms aborts with DEADLINE_EXCEEDED exactly then`, () => {
      vi.useFakeTimers({ now: 1_000_000 });
      const { ctx, aborts } = context(ms);
      vi.advanceTimersByTime(ms - 1);
      expect(aborts).toEqual([]);
      expect(ctx.timeoutMs()).toBe(1);
      vi.advanceTimersByTime(1);
      expect(aborts).toHaveLength(1);
      expect(ConnectError.from(aborts[0]).code).toBe(Code.DeadlineExceeded);
    });
  }

  it("an abort before the deadline stops a long deadline's timer", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { ctx, aborts } = context(3_000_000_000);
    vi.advanceTimersByTime(2 ** 31);
    ctx.abort(new ConnectError("gone", Code.Canceled));
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(3_000_000_000);
    expect(aborts).toHaveLength(1);
  });
});

describe("ServerCallContext", () => {
  it("describes the call like Connect's context", () => {
    const { ctx } = context();
    expect(ctx.method).toBe(method);
    expect(ctx.service).toBe(TestService);
    expect(ctx.protocolName).toBe("mqrpc");
    expect(ctx.requestMethod).toBe("POST");
    expect(ctx.url).toBe("mqtt://dev%201/mqrpc.interop.v1.TestService/UnaryCall");
    expect(ctx.requestHeader.get("x-a")).toBe("1");
    expect(ctx.timeoutMs()).toBeUndefined();
    expect(ctx.values.get({ id: Symbol(), defaultValue: 7 })).toBe(7);
  });

  it("makes headers and the signal only when touched, and reports what the handler set", () => {
    const { ctx } = context();
    expect(ctx.responseHeaderIfSet).toBeUndefined();
    expect(ctx.responseTrailerIfSet).toBeUndefined();
    ctx.responseTrailer.set("x-t", "2");
    expect(ctx.responseTrailerIfSet?.get("x-t")).toBe("2");
    expect(ctx.responseHeaderIfSet).toBeUndefined();
  });

  it("aborts once, telling the call, and a signal made later is already aborted", () => {
    const { ctx, aborts } = context();
    const reason = new ConnectError("gone", Code.Canceled);
    ctx.abort(reason);
    ctx.abort(new Error("second"));
    expect(aborts).toEqual([reason]);
    expect(ctx.aborted).toBe(true);
    expect(ctx.abortReason).toBe(reason);
    expect(ctx.signal.aborted).toBe(true);
    expect(ctx.signal.reason).toBe(reason);
  });

  it("a signal taken before the abort fires with the reason", () => {
    const { ctx } = context();
    const signal = ctx.signal;
    let fired: unknown;
    signal.addEventListener("abort", () => {
      fired = signal.reason;
    });
    ctx.abort("why");
    expect(fired).toBe("why");
  });

  it("aborts with DEADLINE_EXCEEDED when the caller's time runs out", async () => {
    const { ctx, aborts } = context(20);
    expect(ctx.timeoutMs()).toBeGreaterThan(0);
    await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
    expect(ConnectError.from(aborts[0]).code).toBe(Code.DeadlineExceeded);
  });

  it("gives Connect's helpers a plain snapshot that shares signal and headers", () => {
    const { ctx } = context();
    const plain = { ...ctx.snapshot() };
    expect(Object.keys(plain).sort()).toEqual(
      [
        "method",
        "protocolName",
        "requestHeader",
        "requestMethod",
        "responseHeader",
        "responseTrailer",
        "service",
        "signal",
        "timeoutMs",
        "url",
        "values",
      ].sort(),
    );
    plain.responseHeader.set("x-h", "3");
    expect(ctx.responseHeaderIfSet?.get("x-h")).toBe("3");
    expect(plain.signal).toBe(ctx.signal);
  });
});
