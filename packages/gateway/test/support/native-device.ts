/**
 * A native mqrpc server with the interop TestService, as the device behind
 * the ingress in its tests: the interop implementation, watched (which
 * handlers started, and how they ended) and recording what EmptyCall saw of
 * its call (metadata, deadline).
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  type Code,
  ConnectError,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import type { MqttServer, MqttServerOptions } from "@mqrpc/runtime";
import type { BrokerTarget } from "../../../../test/brokers/targets.js";
import { PayloadSchema, TestService } from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "../../../../test/support/interop-service.js";
import { type Closer, startServer, uniqueServerId } from "../../../../test/support/rpc-fixture.js";
import type { HandlerEnd, HandlerWatch } from "./grpc-js-interop.js";

/** A message that makes UnaryCall fail with {@link DETAILS}. */
export const FAIL_WITH_DETAILS = "fail with details";

/** The details UnaryCall fails with when asked to: one Payload, as bytes. */
export const DETAILS = {
  type: "mqrpc.interop.v1.Payload",
  value: toBinary(PayloadSchema, create(PayloadSchema, { body: new Uint8Array([1, 2, 3]) })),
};

/** What EmptyCall saw of its last call. */
export interface SeenCall {
  readonly requestHeader: Headers;
  readonly timeoutMs: number | undefined;
}

/** The device: its server id and what the tests watch of it. */
export interface NativeDevice {
  readonly serverId: string;
  readonly server: MqttServer;
  watchHandler(method: string): HandlerWatch;
  /** EmptyCall's last call. */
  lastEmptyCall(): SeenCall | undefined;
}

/** Starts the device on `target`; closed by `closer`. */
export async function startNativeDevice(
  closer: Closer,
  target: BrokerTarget,
  options: Partial<MqttServerOptions> = {},
): Promise<NativeDevice> {
  const serverId = uniqueServerId("ingress-dev");
  const server = await startServer(closer, target, { serverId, ...options });
  const watches = new HandlerWatches();
  let lastEmpty: SeenCall | undefined;
  const impl: Partial<ServiceImpl<typeof TestService>> = {
    ...interopService,
    emptyCall(req, ctx) {
      lastEmpty = { requestHeader: new Headers(ctx.requestHeader), timeoutMs: ctx.timeoutMs() };
      return interopService.emptyCall?.(req, ctx) ?? {};
    },
    unaryCall(req, ctx) {
      if (req.responseStatus?.message === FAIL_WITH_DETAILS) {
        const error = new ConnectError(FAIL_WITH_DETAILS, req.responseStatus.code as Code);
        error.details = [DETAILS];
        throw error;
      }
      return interopService.unaryCall!(req, ctx);
    },
    async streamingInputCall(reqs, ctx) {
      const finished = watches.started("StreamingInputCall", ctx);
      const response = await interopService.streamingInputCall!(reqs, ctx);
      finished();
      return response;
    },
    async *streamingOutputCall(req, ctx) {
      // The interop implementation, with sleeps that end with the call.
      const finished = watches.started("StreamingOutputCall", ctx);
      const initial = ctx.requestHeader.get("x-grpc-test-echo-initial");
      if (initial !== null) ctx.responseHeader.set("x-grpc-test-echo-initial", initial);
      for (const p of req.responseParameters) {
        if (p.intervalUs > 0) await sleep(p.intervalUs / 1000, ctx.signal);
        yield { payload: { body: new Uint8Array(p.size) } };
      }
      if (req.responseStatus !== undefined && req.responseStatus.code !== 0) {
        throw new ConnectError(req.responseStatus.message, req.responseStatus.code as Code);
      }
      finished();
    },
    async *fullDuplexCall(reqs, ctx) {
      const finished = watches.started("FullDuplexCall", ctx);
      yield* interopService.fullDuplexCall!(reqs, ctx);
      finished();
    },
  };
  server.service(TestService, impl);
  return {
    serverId,
    server,
    watchHandler: (method) => watches.watch(method),
    lastEmptyCall: () => lastEmpty,
  };
}

interface Watcher {
  readonly start: () => void;
  readonly end: (how: HandlerEnd) => void;
}

/** Handler calls the tests wait for, by method, in call order. */
class HandlerWatches {
  private readonly waiting = new Map<string, Watcher[]>();

  watch(method: string): HandlerWatch {
    let start!: () => void;
    let end!: (how: HandlerEnd) => void;
    const started = new Promise<void>((resolve) => {
      start = resolve;
    });
    const ended = new Promise<HandlerEnd>((resolve) => {
      end = resolve;
    });
    const list = this.waiting.get(method) ?? [];
    list.push({ start, end });
    this.waiting.set(method, list);
    return { started, ended };
  }

  /**
   * A handler of `method` started: the oldest watch of it follows this
   * call. Returns what the handler calls when it returns by itself (its
   * signal fires then too, once the call is over).
   */
  started(method: string, ctx: HandlerContext): () => void {
    const watcher = this.waiting.get(method)?.shift();
    if (watcher === undefined) return () => {};
    watcher.start();
    let finished = false;
    ctx.signal.addEventListener("abort", () => watcher.end(finished ? "finished" : "cancelled"));
    return () => {
      finished = true;
    };
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it fires first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
