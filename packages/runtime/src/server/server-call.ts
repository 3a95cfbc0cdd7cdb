/**
 * The server side of one call: receives the request frames in order, runs the
 * handler through Connect's implementation helpers (so server interceptors
 * and `HandlerContext` behave as in connect-node), and sends the response
 * frames, ending every call with exactly one End frame unless the caller
 * cancelled it.
 */
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type MethodImplSpec } from "@connectrpc/connect";
import {
  invokeUnaryImplementation,
  transformInvokeImplementation,
} from "@connectrpc/connect/protocol";
import { abortable } from "../client/abortable.js";
import { DEFAULT_WINDOW } from "../flow/flow-credit.js";
import {
  FrameReceiver,
  type MessageLimit,
  type ReceivedEvent,
  type ReceiverSink,
} from "../flow/frame-receiver.js";
import { type FrameOutput, FrameSender, type SignalSource } from "../flow/frame-sender.js";
import { MessageQueue } from "../flow/message-queue.js";
import type { ReassemblyBudget } from "../flow/reassembly-budget.js";
import { type MetadataEntry, StatusSchema } from "../gen/mqrpc/v1/wire_pb.js";
import type { PublishFailureListener } from "../link/publish-coalescer.js";
import type { MethodSettings } from "../method-settings.js";
import type { CallFrame } from "../wire/frame-codec.js";
import { MessageGroupEncoder } from "../wire/message-group-encoder.js";
import { responseHeadersToEntries } from "../wire/metadata.js";
import { errorToEnd } from "../wire/status.js";
import type { RequestAddress } from "../wire/topic-scheme.js";
import { isTooLargeForBroker, oversizedReplyMessage } from "./oversized-reply.js";
import type { RawMethod } from "./raw-method.js";
import {
  type CallContext,
  RawServerCallContext,
  ServerCallContext,
} from "./server-call-context.js";

/** The reason the handler's signal carries after the call finished normally. */
const CALL_FINISHED = new ConnectError("the call finished", Code.Canceled);

/** The status of every successful call. */
const OK = create(StatusSchema, { code: 0 });

/** How often a call without heartbeats checks for lost request frames. */
const DEFAULT_PROGRESS_CHECK_MS = 10_000;

/**
 * How long an ended call whose caller sends no heartbeats keeps its
 * unacknowledged frames for a caller that may still ask for them.
 */
const DRAIN_WITHOUT_HEARTBEAT_MS = 60_000;

/** What a call needs from the server that runs it. */
export interface ServerCallHost {
  readonly serverId: string;
  readonly instanceId: string;
  /** This server process's incarnation (Presence.incarnation). */
  readonly incarnation: number;
  readonly shared: boolean;
  readonly interceptors: Interceptor[];
  /** The cap on one request message, named as errors should name it. */
  readonly maxMessageLimit: MessageLimit;
  readonly receiveWindow: number;
  /** Shared cap on the bytes of partly received request messages. */
  readonly reassemblyBudget: ReassemblyBudget;
  /** Aborts every handler when the server shuts down. */
  readonly shutdownSource: SignalSource;
  /** How long a call whose caller sends no heartbeats may go without a word from it, in ms. */
  readonly callIdleTimeoutMs: number;
  /**
   * Told once when the handler's part is over, or when a call that waited
   * for a slot ended before it got one: the call no longer holds a slot (or
   * its place in the queue).
   */
  callEnded(call: ServerCall): void;
  /**
   * Told once when the call is over and forgotten: its End frame was handed
   * to MQTT and, when End.ack asked for it, acknowledged (or given up on).
   */
  callFinished(call: ServerCall): void;
  /**
   * Publishes a frame of call `callId` to the caller's reply topic;
   * `onError` is told if the publish fails.
   */
  publishReply(
    clientKey: string,
    callId: number,
    frame: Uint8Array,
    onError: PublishFailureListener,
  ): void;
  /** Reports a reply publish that failed, and what the call did about it (`consequence`). */
  publishFailed(error: unknown, topic: string, consequence?: string): void;
  /** The largest frame that fits in a publish to the caller's reply topic. */
  maxReplyFrameBytes(clientKey: string): number;
  /** The Maximum Packet Size of the broker's MQTT 5 CONNACK, if it announced one. */
  readonly brokerAnnouncedMaxPacketSize: number | undefined;
}

/**
 * A method a call runs: Connect's spec of the user's implementation, or a
 * raw method (bytes in, bytes out) for a service registered without a
 * schema; plus its MQTT settings.
 */
export type MethodEntry =
  | { readonly spec: MethodImplSpec; readonly raw?: undefined; readonly settings: MethodSettings }
  | { readonly spec?: undefined; readonly raw: RawMethod; readonly settings: MethodSettings };

/** See the module comment. */
export class ServerCall implements FrameOutput, ReceiverSink, PublishFailureListener {
  private readonly sender: FrameSender;
  private readonly receiver: FrameReceiver;
  private requestQueue: MessageQueue<unknown> | undefined;
  /** The caller cancelled (or vanished): no End goes out. */
  private cancelled = false;
  /** A reply frame too large for the broker was replaced by an End (see publishFailed). */
  private replaced = false;
  private context: CallContext | undefined;
  /**
   * Unary and server-streaming calls without interceptors skip Connect's
   * generic invocation and the request queue: the one request is kept here
   * until the half-close.
   */
  private direct = false;
  private directInput: MessageShape<DescMessage> | undefined;
  private headersSent = false;
  private heartbeatMs = 0;
  private lastHeard = Date.now();
  private lastProgressCheck = Date.now();
  private requestsComplete = false;
  /** The handler's part is over: its End went out (or the caller cancelled). */
  private ended = false;
  /** When the End went out, while the call waits for the caller's acknowledgement. */
  private drainingSince: number | undefined;
  private isFinished = false;
  private finishedWaiters: Array<() => void> | undefined;
  private endedWaiters: Array<() => void> | undefined;

  /**
   * @param key the call's key on its server (client key and call id)
   * @param waitingForSlot the call waits for a slot (docs/PROTOCOL.md 17.1):
   *   it takes frames, answers Pings, keeps its deadline and can be
   *   cancelled, but its handler runs only from {@link start}.
   */
  constructor(
    private readonly host: ServerCallHost,
    readonly key: string,
    readonly address: RequestAddress,
    readonly callId: number,
    private readonly entry: MethodEntry,
    private waitingForSlot = false,
  ) {
    // The call is its sender's output and its receiver's sink: no adapter
    // objects or closures per call.
    this.sender = new FrameSender(callId, this, DEFAULT_WINDOW);
    this.receiver = new FrameReceiver(host.receiveWindow, host.maxMessageLimit, this, {
      budget: host.reassemblyBudget,
      owner: address.clientKey,
    });
    if (entry.settings.batchedStream) this.sender.enableBatching(entry.settings.batchLingerMs);
  }

  /**
   * The call got a slot: its handler runs now (a unary or server-streaming
   * call's once its request is complete). Nothing when it was not waiting
   * or has ended already.
   */
  start(): void {
    if (!this.waitingForSlot) return;
    this.waitingForSlot = false;
    const context = this.context;
    if (this.ended || context === undefined) return;
    if (!this.direct) void this.run(context);
    else if (this.requestsComplete) this.runDirect();
  }

  /** Settles when the call is over and its End frame was handed to MQTT. */
  get finished(): Promise<void> {
    if (this.isFinished) return Promise.resolve();
    return new Promise((resolve) => {
      this.finishedWaiters ??= [];
      this.finishedWaiters.push(resolve);
    });
  }

  /**
   * Settles when the handler's part is over: its End was handed to MQTT
   * (acknowledged by the caller or not), or the call finished otherwise.
   */
  get handlerOver(): Promise<void> {
    if (this.drainingSince !== undefined || this.isFinished) return Promise.resolve();
    return new Promise((resolve) => {
      this.endedWaiters ??= [];
      this.endedWaiters.push(resolve);
    });
  }

  private wakeEnded(): void {
    const waiters = this.endedWaiters;
    this.endedWaiters = undefined;
    if (waiters !== undefined) for (const wake of waiters) wake();
  }

  /** FrameOutput: publishes one of the call's frames to the caller's reply topic. */
  publish(frame: Uint8Array): void {
    this.host.publishReply(this.address.clientKey, this.callId, frame, this);
  }

  /**
   * PublishFailureListener: a publish that carried frames of this call
   * failed. A frame larger than the broker accepts fails again however
   * often it is sent (headers, an End with its metadata: nothing that is
   * chunked), so the call ends in its place: see {@link replaceOversized}.
   * Any other failure is only reported: the frames are kept, and the
   * caller asks for them again (section 11.2) or for the End (8.2).
   */
  publishFailed(error: unknown, topic: string): void {
    const consequence = isTooLargeForBroker(error) ? this.replaceOversized(error) : undefined;
    this.host.publishFailed(error, topic, consequence);
  }

  /**
   * Ends the call with RESOURCE_EXHAUSTED in place of the first frame kept
   * for the caller that is larger than a publish may now be (the link
   * learned or was told the broker's limit): a small End, without the
   * metadata, at that frame's seq, so the caller, which never got it,
   * processes the End next; later frames are dropped. A handler still
   * running is aborted with that status and its slot freed; the End
   * replaces the one kept for a caller that missed it. Once per call, and
   * not after the caller cancelled. Returns what it did, for the log.
   */
  private replaceOversized(error: unknown): string | undefined {
    if (this.cancelled || this.replaced) return undefined;
    const oversized = this.sender.oversizedFrame(this.maxFrameBytes());
    if (oversized === undefined) return undefined;
    this.replaced = true;
    const reason = new ConnectError(
      oversizedReplyMessage(oversized.frame, error, this.host.brokerAnnouncedMaxPacketSize),
      Code.ResourceExhausted,
    );
    this.sender.replaceWithEnd(oversized.seq, errorToEnd(reason, new Headers()));
    if (!this.ended) {
      // The handler's part ends here, as end() would end it.
      this.ended = true;
      this.receiver.dispose();
      this.requestQueue?.close();
      this.context?.abort(reason);
      this.markEnded();
    } else if (this.isFinished) {
      // Forgotten already (an End not waited for): keep the new End instead.
      this.host.callFinished(this);
    } else if (this.drainingSince !== undefined) {
      // Its End is this one now: wait for its acknowledgement only if it asks.
      if (!this.sender.endNeedsAck) this.markFinished();
    } else {
      // end() is still sending (waiting for credit for a message before
      // its End): stop it; it then ends the call with this End.
      this.context?.abort(reason);
    }
    return `call ${this.callId} ended with RESOURCE_EXHAUSTED: ${reason.rawMessage}`;
  }

  /** FrameOutput: the largest frame that fits in one publish to the caller. */
  maxFrameBytes(): number {
    return this.host.maxReplyFrameBytes(this.address.clientKey);
  }

  /** ReceiverSink: the caller broke the protocol or a limit. */
  violation(error: ConnectError): void {
    this.fail(error);
  }

  /** ReceiverSink: tells the caller how much more it may send. */
  grant(limit: number, received: number, resend: boolean): void {
    this.sender.sendUnsequenced({ case: "credit", value: { limit, received, resend } });
  }

  private get requests(): MessageQueue<unknown> {
    this.requestQueue ??= new MessageQueue(() => this.receiver.took());
    return this.requestQueue;
  }

  /** Whether the call waits for the caller to acknowledge its End. */
  get draining(): boolean {
    return this.drainingSince !== undefined;
  }

  /** The handler's part is over; the call is finished now, or once its End is acknowledged. */
  private markEnded(): void {
    this.host.callEnded(this);
    if (
      !this.cancelled &&
      !this.shuttingDown &&
      this.sender.endNeedsAck &&
      this.sender.endFrame !== undefined
    ) {
      this.drainingSince = Date.now();
      this.sender.onAcknowledged(() => {
        if (this.sender.allAcknowledged) this.markFinished();
      });
      this.wakeEnded();
      return;
    }
    this.markFinished();
  }

  private markFinished(): void {
    if (this.isFinished) return;
    this.isFinished = true;
    this.drainingSince = undefined;
    this.host.callFinished(this);
    this.wakeEnded();
    const waiters = this.finishedWaiters;
    this.finishedWaiters = undefined;
    if (waiters !== undefined) for (const wake of waiters) wake();
  }

  /**
   * Called by the server's sweep every second (not while its link is down;
   * `hearingSince`: when it came back). A running call whose caller
   * has been silent for three heartbeat intervals is ended with UNAVAILABLE
   * (the End waits in the caller's session, and is kept, for when it comes
   * back); a draining call whose caller went silent, or that waited long
   * enough, is forgotten. Otherwise, once per heartbeat interval, asks the
   * caller to send again what seems lost (FrameReceiver.checkProgress).
   */
  sweep(now: number, hearingSince = 0): void {
    if (this.isFinished) return;
    // Time the server could not hear (its own link down) is not the caller's silence.
    const heard = Math.max(this.lastHeard, hearingSince);
    const silent = this.heartbeatMs > 0 && now - heard > 3 * this.heartbeatMs;
    if (this.drainingSince !== undefined) {
      if (silent || now - this.drainingSince > DRAIN_WITHOUT_HEARTBEAT_MS) this.markFinished();
      return;
    }
    if (this.ended) return;
    if (silent) {
      this.expire(
        new ConnectError(
          `the server ended the call: no heartbeat from the caller for ${now - heard} ms`,
          Code.Unavailable,
        ),
      );
      return;
    }
    if (this.heartbeatMs === 0 && now - heard > this.host.callIdleTimeoutMs) {
      // A caller that promised no heartbeats must still say something now
      // and then, or its call could hold a slot for as long as it likes.
      this.expire(
        new ConnectError(
          `the server ended the call: nothing from the caller (which sends no heartbeats) for ${now - heard} ms (callIdleTimeoutMs)`,
          Code.Unavailable,
        ),
      );
      return;
    }
    this.checkProgress(now);
  }

  /**
   * The server's link to the broker came back: asks the caller for the
   * request frames that may be lost, at once (`first`), or again where
   * nothing new arrived since (see ReconnectResync).
   */
  resync(first: boolean): void {
    if (this.ended || this.requestsComplete) return;
    if (first) this.receiver.requestResend();
    else this.receiver.checkProgress(true);
  }

  private checkProgress(now: number): void {
    const interval = this.heartbeatMs > 0 ? this.heartbeatMs : DEFAULT_PROGRESS_CHECK_MS;
    if (now - this.lastProgressCheck < interval) return;
    this.lastProgressCheck = now;
    this.receiver.checkProgress(!this.requestsComplete);
  }

  /** The End frame as sent, for answering a caller that missed it. */
  get endFrame(): Uint8Array | undefined {
    return this.sender.endFrame;
  }

  /**
   * Aborts the handler because the server shuts down; the caller gets an End
   * with `reason`. (The server calls this per call rather than linking every
   * handler to one shared signal.)
   */
  shutdown(reason: ConnectError): void {
    this.shuttingDown = true;
    if (this.drainingSince !== undefined) this.markFinished();
    else if (this.context !== undefined) this.context.abort(reason);
    else this.fail(reason);
  }

  /** Set by {@link shutdown}: the End goes out, but nobody waits for its acknowledgement. */
  private shuttingDown = false;

  /** Cancels the handler, as a Cancel frame from the caller would; no End is sent. */
  cancel(reason: ConnectError): void {
    if (this.ended) {
      if (this.drainingSince !== undefined) {
        // The caller gave up on a call that was over: stop waiting for its acknowledgement.
        this.markFinished();
      } else if (!this.isFinished) {
        // The End is still on its way out (a large response): stop sending it.
        this.cancelled = true;
        this.context?.abort(reason);
      }
      return;
    }
    this.cancelled = true;
    if (this.context !== undefined) {
      this.context.abort(reason);
    } else {
      this.ended = true;
      this.receiver.dispose();
      this.markEnded();
    }
  }

  /** Ends the call with `reason` as its status, as a deadline would. */
  private expire(reason: ConnectError): void {
    if (this.context !== undefined) {
      this.context.abort(reason);
    } else {
      this.fail(reason);
    }
  }

  /** A frame the caller published for this call. */
  onFrame(frame: CallFrame): void {
    if (this.isFinished) return;
    this.lastHeard = Date.now();
    if (this.ended) {
      // Over, but its last frames may still be asked for or acknowledged.
      const kind = frame.kind;
      if (kind.case === "credit") {
        this.sender.onCredit(kind.value.limit, kind.value.received, kind.value.resend);
      } else if (kind.case === "ping") {
        this.sendPong();
      } else if (kind.case === "cancel") {
        this.cancel(new ConnectError("the caller cancelled the call", Code.Canceled));
      }
      return;
    }
    switch (frame.kind.case) {
      case "cancel":
        this.cancel(
          frame.kind.value.code === Code.DeadlineExceeded
            ? new ConnectError("the caller's deadline expired", Code.DeadlineExceeded)
            : new ConnectError("the caller cancelled the call", Code.Canceled),
        );
        return;
      case "credit": {
        const { limit, received, resend } = frame.kind.value;
        this.sender.onCredit(limit, received, resend);
        return;
      }
      case "ping":
        this.sendPong();
        return;
      case "pong":
      case "headers":
      case "end":
        return;
      default:
        this.receiver.accept(frame);
    }
  }

  /** ReceiverSink: the caller's frames, in order. */
  event(event: ReceivedEvent): void {
    switch (event.type) {
      case "open": {
        if (this.context !== undefined) {
          this.fail(
            new ConnectError("protocol error: a second Open in one call", Code.InvalidArgument),
          );
          return;
        }
        const spec = this.entry.spec;
        const init = {
          serverId: this.host.serverId,
          timeoutMs: event.open.timeoutMs,
          requestHeader: event.open.headers,
          onAbort: (reason: unknown) => {
            // Deadline, cancellation or shutdown while the handler runs: the
            // call ends now, whatever the handler does later.
            if (!this.ended) void this.end(reason, undefined, context);
          },
        };
        const context: CallContext =
          spec !== undefined
            ? new ServerCallContext({ ...init, method: spec.method })
            : new RawServerCallContext({
                ...init,
                service: this.address.service,
                method: this.address.method,
                clientKey: this.address.clientKey,
              });
        this.context = context;
        this.direct =
          spec !== undefined &&
          (spec.kind === "unary" || spec.kind === "server_streaming") &&
          this.host.interceptors.length === 0;
        if (event.open.window > 0) this.sender.grantWindow(event.open.window);
        this.heartbeatMs = event.open.heartbeatMs;
        if (this.host.shared) {
          // Tell the caller which replica owns the call before it sends more
          // (messages, half-close, pings): its later frames then come to this
          // instance's sticky topic. Handler headers follow in the End frame.
          this.sendAccept();
        }
        if (!this.direct && !this.waitingForSlot) void this.run(context);
        return;
      }
      case "message": {
        const spec = this.entry.spec;
        if (spec === undefined) {
          this.requests.push(event.data);
          return;
        }
        let message: MessageShape<DescMessage>;
        try {
          message = fromBinary(spec.method.input, event.data);
        } catch (e) {
          this.fail(
            new ConnectError(
              `failed to parse ${spec.method.input.typeName}: ${e instanceof Error ? e.message : String(e)}`,
              Code.InvalidArgument,
            ),
          );
          return;
        }
        if (!this.direct) {
          this.requests.push(message);
        } else if (this.directInput === undefined) {
          this.directInput = message;
        } else {
          this.fail(
            new ConnectError(
              `protocol error: more than one request message for ${spec.kind.replace("_", "-")} method`,
              Code.InvalidArgument,
            ),
          );
        }
        return;
      }
      case "halfClose":
        this.requestsComplete = true;
        if (!this.direct) this.requests.close();
        else if (!this.waitingForSlot) this.runDirect();
        return;
      default:
        return;
    }
  }

  /**
   * Runs a unary or server-streaming handler without interceptors on the
   * one request it got: what Connect's invoke helpers do (normalize each
   * response with `create`), without their generic async-iterable plumbing.
   */
  private runDirect(): void {
    const context = this.context as ServerCallContext | undefined;
    const input = this.directInput;
    const entrySpec = this.entry.spec;
    if (context === undefined || this.ended || entrySpec === undefined) return;
    if (input === undefined) {
      this.fail(
        new ConnectError(
          `protocol error: missing request message for ${entrySpec.kind.replace("_", "-")} method`,
          Code.InvalidArgument,
        ),
      );
      return;
    }
    if (entrySpec.kind === "server_streaming") {
      void this.runServerStream(entrySpec, context, input);
      return;
    }
    const spec = entrySpec as MethodImplSpec & { kind: "unary" };
    const output = spec.method.output;
    const respond = (response: unknown) => {
      if (this.ended) return;
      let bytes: Uint8Array;
      try {
        bytes = toBinary(output, create(output, response as MessageShape<DescMessage>));
      } catch (e) {
        void this.end(e, undefined, context);
        return;
      }
      void this.end(undefined, bytes, context);
    };
    const failed = (error: unknown) => {
      if (!this.ended) void this.end(error, undefined, context);
    };
    let result: unknown;
    try {
      result = spec.impl(input, context);
    } catch (e) {
      failed(e);
      return;
    }
    if (result instanceof Promise) result.then(respond, failed);
    else respond(result);
  }

  private async runServerStream(
    spec: MethodImplSpec & { kind: "server_streaming" },
    context: ServerCallContext,
    input: MessageShape<DescMessage>,
  ): Promise<void> {
    const output = spec.method.output;
    const send = (bytes: Uint8Array) => this.sender.sendMessage(bytes, context);
    // Batched streams serialize their messages a group at a time.
    const group = this.entry.settings.batchedStream
      ? new MessageGroupEncoder(output, send, (e) => {
          void this.end(e, undefined, context);
        })
      : undefined;
    let it: AsyncIterator<unknown> | undefined;
    let done = false;
    try {
      it = spec.impl(input, context)[Symbol.asyncIterator]();
      for (;;) {
        // A deadline, cancellation or shutdown ends the call through the
        // context's abort hook; the loop only has to notice.
        const next = await it.next();
        if (next.done === true) done = true;
        if (this.ended || done) break;
        if (!this.headersSent) this.sendHeaders(context.responseHeader);
        const message = create(output, next.value as MessageShape<DescMessage>);
        const sending = group !== undefined ? group.add(message) : send(toBinary(output, message));
        if (sending !== undefined) await sending;
        if (this.ended) break;
      }
      if (!this.ended) {
        const rest = group?.flush();
        if (rest !== undefined) await rest;
        await this.end(undefined, undefined, context);
      }
    } catch (e) {
      await this.end(e, undefined, context);
    } finally {
      // However the loop ended (the call was cancelled while the handler
      // waited for credit, a send failed, the server shut down), a generator
      // that did not finish is closed, so its finally blocks run.
      if (!done) closeQuietly(it);
    }
  }

  private run(context: CallContext): Promise<void> {
    const spec = this.entry.spec;
    if (spec === undefined) return this.runRaw(context as RawServerCallContext);
    return this.runSpec(spec, context as ServerCallContext);
  }

  /**
   * Runs a raw method: request bytes in as they arrive, response bytes out
   * as credit allows. A method known to answer once (unary, client
   * streaming) sends its response inside the End frame.
   */
  private async runRaw(context: RawServerCallContext): Promise<void> {
    const raw = this.entry.raw;
    if (raw === undefined) return;
    const single = raw.kind === "unary" || raw.kind === "client_streaming";
    let it: AsyncIterator<Uint8Array> | undefined;
    let done = false;
    let held: Uint8Array | undefined;
    try {
      it = raw.handler(this.requests as AsyncIterable<Uint8Array>, context)[Symbol.asyncIterator]();
      for (;;) {
        const next = await it.next();
        if (next.done === true) done = true;
        if (this.ended || done) break;
        const bytes = next.value;
        if (!(bytes instanceof Uint8Array)) {
          throw new ConnectError(
            `the handler of ${context.service}/${context.method} yielded a ${typeof bytes}, not a Uint8Array`,
            Code.Internal,
          );
        }
        if (single) {
          if (held !== undefined) {
            throw new ConnectError(
              `protocol error: more than one response message for ${raw.kind?.replace("_", "-")} method`,
              Code.Internal,
            );
          }
          held = bytes;
          continue;
        }
        if (!this.headersSent) this.sendHeaders(context.responseHeader);
        const sending = this.sender.sendMessage(bytes, context);
        if (sending !== undefined) await sending;
        if (this.ended) break;
      }
      if (!this.ended) {
        if (single && held === undefined) {
          throw new ConnectError(
            `protocol error: missing response message for ${raw.kind?.replace("_", "-")} method`,
            Code.Internal,
          );
        }
        await this.end(undefined, held, context);
      }
    } catch (e) {
      await this.end(e, undefined, context);
    } finally {
      if (!done) closeQuietly(it);
    }
  }

  private async runSpec(spec: MethodImplSpec, context: ServerCallContext): Promise<void> {
    const output = spec.method.output;
    const requests = this.requests as AsyncIterable<MessageShape<DescMessage>>;
    // Connect's helpers copy the context: they get a plain snapshot of it.
    const plain = context.snapshot();
    let it: AsyncIterator<MessageShape<DescMessage>> | undefined;
    let done = false;
    try {
      if (spec.kind === "unary") {
        done = true;
        const input = await abortable(single(requests), plain.signal);
        const response = await abortable(
          invokeUnaryImplementation(spec, plain, input, this.host.interceptors),
          plain.signal,
        );
        await this.end(undefined, toBinary(output, response), context);
        return;
      }
      const responses = transformInvokeImplementation(
        spec,
        plain,
        this.host.interceptors,
      )(requests);
      it = responses[Symbol.asyncIterator]();
      for (;;) {
        // A deadline, cancellation or shutdown ends the call through the
        // context's abort hook; the loop only has to notice.
        const next = await it.next();
        if (next.done === true) done = true;
        if (this.ended || done) break;
        const bytes = toBinary(output, next.value);
        if (spec.kind === "client_streaming") {
          await this.end(undefined, bytes, context);
          break;
        }
        if (!this.headersSent) this.sendHeaders(plain.responseHeader);
        const sending = this.sender.sendMessage(bytes, plain);
        if (sending !== undefined) await sending;
        if (this.ended) break;
      }
      if (!this.ended) await this.end(undefined, undefined, context);
    } catch (e) {
      await this.end(e, undefined, context);
    } finally {
      if (!done) closeQuietly(it);
    }
  }

  private sendAccept(): void {
    this.sender.sendControl({
      case: "headers",
      value: {
        headers: [],
        instance: this.host.instanceId,
        window: this.host.receiveWindow === DEFAULT_WINDOW ? 0 : this.host.receiveWindow,
        incarnation: this.host.incarnation,
      },
    });
  }

  private sendHeaders(headers: Headers): void {
    this.headersSent = true;
    this.sender.sendControl({
      case: "headers",
      value: {
        headers: responseHeadersToEntries(headers),
        instance: this.host.shared ? this.host.instanceId : "",
        window: this.host.receiveWindow === DEFAULT_WINDOW ? 0 : this.host.receiveWindow,
        incarnation: this.host.incarnation,
      },
    });
  }

  /**
   * Sends the End frame (unless the caller cancelled) and releases the
   * handler's slot; the call is forgotten once the End is acknowledged when
   * it asked to be (End.ack).
   */
  private async end(
    error: unknown,
    message: Uint8Array | undefined,
    context: CallContext,
  ): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    try {
      if (!this.cancelled) {
        const headers = this.headersSent ? undefined : context.responseHeaderIfSet;
        const trailers = context.responseTrailerIfSet;
        if (error !== undefined) {
          const reason =
            context.aborted && !(error instanceof ConnectError) ? context.abortReason : error;
          this.sender.sendEndNow(errorToEnd(reason, trailers ?? new Headers(), headers));
        } else {
          let metadata: { headers: MetadataEntry[]; trailers: MetadataEntry[] } | ConnectError;
          try {
            metadata = {
              headers: headers ? responseHeadersToEntries(headers) : [],
              trailers: trailers ? responseHeadersToEntries(trailers) : [],
            };
          } catch (e) {
            metadata = ConnectError.from(e);
          }
          if (metadata instanceof ConnectError) {
            // The handler succeeded, but its metadata cannot travel: the
            // caller must hear so, not wait for an End that never comes.
            this.sender.sendEndNow(errorToEnd(metadata, new Headers()));
          } else {
            // A caller's Cancel (or the deadline) while a large response is
            // still being chunked aborts the context, and with it this send.
            await this.sender.sendEnd({ status: OK, ...metadata }, message, context);
          }
        }
      }
    } catch {
      // The reply could not be encoded or sent; nothing more can reach the caller.
    } finally {
      this.receiver.dispose();
      this.requestQueue?.close();
      // Connect's contract: the handler's signal also fires when the call is
      // done. A reason object avoids a DOMException per call.
      context.abort(CALL_FINISHED);
      this.markEnded();
    }
  }

  /** Ends the call because of a protocol violation or bad input. */
  private fail(error: ConnectError): void {
    if (this.ended) return;
    if (this.context === undefined) {
      this.ended = true;
      this.receiver.dispose();
      this.sender.sendEndNow(errorToEnd(error, new Headers()));
      this.markEnded();
      return;
    }
    this.requestQueue?.fail(error);
    void this.end(error, undefined, this.context);
  }

  private sendPong(): void {
    this.sender.sendUnsequenced({
      case: "pong",
      value: { incarnation: this.host.incarnation, unknown: false },
    });
  }
}

/** Closes an iterator that did not finish; what its return() throws is dropped. */
function closeQuietly(it: AsyncIterator<unknown> | undefined): void {
  try {
    it?.return?.()?.catch(() => {});
  } catch {
    // A return() that throws synchronously is the handler's problem, not the call's.
  }
}

async function single<T>(requests: AsyncIterable<T>): Promise<T> {
  const it = requests[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) {
    throw new ConnectError(
      "protocol error: missing request message for unary method",
      Code.InvalidArgument,
    );
  }
  const second = await it.next();
  if (second.done !== true) {
    throw new ConnectError(
      "protocol error: more than one request message for unary method",
      Code.InvalidArgument,
    );
  }
  return first.value;
}
