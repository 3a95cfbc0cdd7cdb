/**
 * The `HandlerContext` a handler receives, built for a call rate where
 * every allocation shows: the signal, the header objects and the context
 * values are made when the handler first touches them, not per call. Its
 * behaviour is Connect's: the signal aborts on deadline, cancellation,
 * server shutdown and when the call is over.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type { MetadataEntry } from "./gen/mqrpc/v1/wire_pb.js";
import { entriesToHeaders } from "./metadata.js";

/** What a {@link ServerCallContext} is made from. */
export interface ServerCallContextInit {
  readonly method: DescMethod;
  readonly serverId: string;
  /** The caller's remaining time from the Open frame; 0 for none. */
  readonly timeoutMs: number;
  readonly requestHeader: readonly MetadataEntry[];
  /** Called once, with the reason, when the context aborts. */
  readonly onAbort: (reason: unknown) => void;
}

/**
 * A handler's context plus what the call needs to drive it. The lazy parts
 * are own enumerable getters, so spreading or `Object.assign`-ing the
 * context (Connect's interceptor helpers do) copies real values.
 */
export interface ServerCallContext extends HandlerContext {
  /** Whether the context aborted (deadline, cancellation, shutdown or the end). */
  readonly aborted: boolean;
  /** Why the context aborted, once it did. */
  readonly abortReason: unknown;
  /** Response headers the handler set, or undefined if it never touched them. */
  readonly responseHeaderIfSet: Headers | undefined;
  /** Response trailers the handler set, or undefined if it never touched them. */
  readonly responseTrailerIfSet: Headers | undefined;
  /** Aborts the handler's signal once; later calls change nothing. */
  abort(reason: unknown): void;
}

/** See the module comment. */
export function createServerCallContext(init: ServerCallContextInit): ServerCallContext {
  let controller: AbortController | undefined;
  let reason: unknown;
  let aborted = false;
  let deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  let headerIn: Headers | undefined;
  let headerOut: Headers | undefined;
  let trailerOut: Headers | undefined;
  let values: ContextValues | undefined;
  let timeoutMs: () => number | undefined = noTimeout;
  const abort = (why: unknown): void => {
    if (aborted) return;
    aborted = true;
    reason = why;
    if (deadlineTimer !== undefined) clearTimeout(deadlineTimer);
    controller?.abort(why);
    init.onAbort(why);
  };
  if (init.timeoutMs > 0) {
    const deadline = Date.now() + init.timeoutMs;
    timeoutMs = () => deadline - Date.now();
    deadlineTimer = setTimeout(() => {
      deadlineTimer = undefined;
      abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    }, init.timeoutMs);
  }
  const method = init.method;
  return {
    method,
    service: method.parent,
    requestMethod: "POST",
    protocolName: "mqrpc",
    timeoutMs,
    get signal() {
      if (controller === undefined) {
        controller = new AbortController();
        if (aborted) controller.abort(reason);
      }
      return controller.signal;
    },
    get url() {
      return `mqtt://${encodeURIComponent(init.serverId)}/${method.parent.typeName}/${method.name}`;
    },
    get requestHeader() {
      headerIn ??= entriesToHeaders(init.requestHeader);
      return headerIn;
    },
    get responseHeader() {
      headerOut ??= new Headers();
      return headerOut;
    },
    get responseTrailer() {
      trailerOut ??= new Headers();
      return trailerOut;
    },
    get values() {
      values ??= createContextValues();
      return values;
    },
    get aborted() {
      return aborted;
    },
    get abortReason() {
      return reason;
    },
    get responseHeaderIfSet() {
      return headerOut;
    },
    get responseTrailerIfSet() {
      return trailerOut;
    },
    abort,
  };
}

const noTimeout = () => undefined;
