/**
 * The `HandlerContext` a handler receives, built for a call rate where
 * every allocation shows: the signal, the header objects and the context
 * values are made when the handler first touches them, not per call. Its
 * behaviour is Connect's: the signal aborts on deadline, cancellation,
 * server shutdown and when the call is over.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type { MetadataEntry } from "../gen/mqrpc/v1/wire_pb.js";
import { DeadlineTimer } from "../wire/deadline.js";
import { MAX_TIMER_MS } from "../wire/limits.js";
import { entriesToHeaders } from "../wire/metadata.js";
import type { RawCallContext } from "./raw-method.js";

/** What every call context is made from. */
export interface CallContextInit {
  readonly serverId: string;
  /** The caller's remaining time from the Open frame; 0 for none. */
  readonly timeoutMs: number;
  readonly requestHeader: readonly MetadataEntry[];
  /** Called once, with the reason, when the context aborts. */
  readonly onAbort: (reason: unknown) => void;
}

/** What a {@link ServerCallContext} is made from. */
export interface ServerCallContextInit extends CallContextInit {
  readonly method: DescMethod;
}

/** What a {@link RawServerCallContext} is made from. */
export interface RawCallContextInit extends CallContextInit {
  readonly service: string;
  readonly method: string;
  readonly clientKey: string;
}

/**
 * What a call's context does whatever serves it: the deadline, the signal,
 * the header objects. The lazy parts are getters on the prototype, so a
 * call costs one small object.
 */
export abstract class CallContext {
  readonly timeoutMs: () => number | undefined;

  private controller: AbortController | undefined;
  private reason: unknown;
  private isAborted = false;
  private deadlineTimer: ReturnType<typeof setTimeout> | DeadlineTimer | undefined;
  private headerIn: Headers | undefined;
  private headerOut: Headers | undefined;
  private trailerOut: Headers | undefined;
  private contextValues: ContextValues | undefined;
  private readonly onAbort: (reason: unknown) => void;
  private readonly requestEntries: readonly MetadataEntry[];

  constructor(init: CallContextInit) {
    this.onAbort = init.onAbort;
    this.requestEntries = init.requestHeader;
    if (init.timeoutMs > 0) {
      const deadline = Date.now() + init.timeoutMs;
      this.timeoutMs = () => deadline - Date.now();
      // Node's timers wrap delays of 2^31 ms and more to 1 ms: an Open from
      // another implementation may carry up to 2^32 - 1 ms.
      this.deadlineTimer =
        init.timeoutMs <= MAX_TIMER_MS
          ? setTimeout(this.onDeadline, init.timeoutMs)
          : new DeadlineTimer(deadline, this.onDeadline);
    } else {
      this.timeoutMs = noTimeout;
    }
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.isAborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  get requestHeader(): Headers {
    this.headerIn ??= entriesToHeaders(this.requestEntries);
    return this.headerIn;
  }

  get responseHeader(): Headers {
    this.headerOut ??= new Headers();
    return this.headerOut;
  }

  get responseTrailer(): Headers {
    this.trailerOut ??= new Headers();
    return this.trailerOut;
  }

  get values(): ContextValues {
    this.contextValues ??= createContextValues();
    return this.contextValues;
  }

  /** Whether the context aborted (deadline, cancellation, shutdown or the end). */
  get aborted(): boolean {
    return this.isAborted;
  }

  /** Why the context aborted, once it did. */
  get abortReason(): unknown {
    return this.reason;
  }

  /** Response headers the handler set, or undefined if it never touched them. */
  get responseHeaderIfSet(): Headers | undefined {
    return this.headerOut;
  }

  /** Response trailers the handler set, or undefined if it never touched them. */
  get responseTrailerIfSet(): Headers | undefined {
    return this.trailerOut;
  }

  /** Aborts the handler's signal once; later calls change nothing. */
  abort(reason: unknown): void {
    if (this.isAborted) return;
    this.isAborted = true;
    this.reason = reason;
    const timer = this.deadlineTimer;
    if (timer instanceof DeadlineTimer) timer.clear();
    else if (timer !== undefined) clearTimeout(timer);
    this.controller?.abort(reason);
    this.onAbort(reason);
  }

  private readonly onDeadline = (): void => {
    this.deadlineTimer = undefined;
    this.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
  };
}

/**
 * A Connect handler's `HandlerContext`. Connect's own helpers copy contexts
 * with `Object.assign`, which skips prototype getters: give them
 * {@link ServerCallContext.snapshot} instead.
 */
export class ServerCallContext extends CallContext implements HandlerContext {
  readonly method: DescMethod;
  readonly service: DescService;
  readonly requestMethod = "POST";
  readonly protocolName = "mqrpc";
  private readonly serverId: string;

  constructor(init: ServerCallContextInit) {
    super(init);
    this.method = init.method;
    this.service = init.method.parent;
    this.serverId = init.serverId;
  }

  get url(): string {
    return `mqtt://${encodeURIComponent(this.serverId)}/${this.service.typeName}/${this.method.name}`;
  }

  /**
   * The context as a plain object with every field its own property, for
   * Connect's interceptor and streaming helpers (they copy it). Shares the
   * signal and the header objects with this context.
   */
  snapshot(): HandlerContext {
    return {
      method: this.method,
      service: this.service,
      requestMethod: this.requestMethod,
      protocolName: this.protocolName,
      timeoutMs: this.timeoutMs,
      signal: this.signal,
      url: this.url,
      requestHeader: this.requestHeader,
      responseHeader: this.responseHeader,
      responseTrailer: this.responseTrailer,
      values: this.values,
    };
  }
}

/** The context of a raw method's call (see {@link RawCallContext}). */
export class RawServerCallContext extends CallContext implements RawCallContext {
  readonly service: string;
  readonly method: string;
  readonly clientKey: string;

  constructor(init: RawCallContextInit) {
    super(init);
    this.service = init.service;
    this.method = init.method;
    this.clientKey = init.clientKey;
  }
}

const noTimeout = () => undefined;
