/**
 * The client side of one call: sends the request frames, receives the reply
 * frames through a {@link FrameReceiver}, and exposes response headers, the
 * response messages and trailers to the transport. Cancels the server when
 * the caller's signal aborts (deadline or cancellation).
 */
import { Code, ConnectError } from "@connectrpc/connect";
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
import type { MqttLink } from "../link/mqtt-link.js";
import { publishError } from "../link/publish-error.js";
import type { MethodSettings } from "../method-settings.js";
import { openTimeoutMs, timerDelay } from "../wire/deadline.js";
import { type CallFrame, encodeFrame } from "../wire/frame-codec.js";
import { entriesToHeaders, headersToEntries } from "../wire/metadata.js";
import { endToError } from "../wire/status.js";
import type { TopicScheme } from "../wire/topic-scheme.js";
import type { ReplyRouter, RoutedCall } from "./reply-router.js";

/** Why credit waits end when a call finished without an error. */
const CALL_OVER = new ConnectError("the call is over", Code.Canceled);

/** MQTT fixed header, topic length, packet id and properties, roughly. */
const PACKET_OVERHEAD = 24;

/**
 * Heartbeat intervals without a word from the server after which a call
 * ends with UNAVAILABLE: the server's rule for a silent caller (three
 * intervals), plus one for the round trip.
 */
const SILENT_SERVER_INTERVALS = 4;

/** How long a call whose server presence calls gone waits for the server to answer a Ping. */
const PROBE_MS = 1000;
/** When a Cancel is sent again, ms after the first (PROTOCOL.md 13). */
const CANCEL_REPEAT_MS = 1000;

/**
 * The method a call goes to: a descriptor (`DescMethod` fits) or, for a raw
 * call, just its names.
 */
export interface MethodRef {
  readonly parent: { readonly typeName: string };
  readonly name: string;
}

/** Everything a call needs from its transport. */
export interface ClientCallInit {
  readonly link: MqttLink;
  readonly router: ReplyRouter;
  readonly scheme: TopicScheme;
  readonly serverId: string;
  readonly method: MethodRef;
  /** The method's request topic on any instance (the transport caches it). */
  readonly topic: string;
  /** The server's reply topic for this client (the transport caches it). */
  readonly replyTopic: string;
  /** The caller's cancellation, if it gave one. */
  readonly signal: AbortSignal | undefined;
  /** When the call's deadline expires (`Date.now()` time), if it has one. */
  readonly deadline: number | undefined;
  /** Unary calls keep their one response instead of queueing a stream. */
  readonly unary: boolean;
  readonly header: Headers;
  /** The cap on one response message (the transport makes it once). */
  readonly maxMessage: MessageLimit;
  readonly maxPublishBytes: number;
  /** Response frames the server may send ahead of the caller. */
  readonly window: number;
  /** The method's MQTT settings (batching of request messages). */
  readonly settings: MethodSettings;
  /** Shared cap on the bytes of partly received response messages. */
  readonly reassemblyBudget: ReassemblyBudget;
  /** Ping interval while the call lasts; 0 for none. */
  readonly heartbeatMs: number;
  /**
   * Set when the server is load-balanced through a shared subscription:
   * the online instances, any of which may have taken the call.
   */
  readonly sharedInstances: (() => string[]) | undefined;
  /**
   * The server instance the call goes to and its incarnation, when presence
   * names exactly one (a server that is not replicated).
   */
  readonly instance: string | undefined;
  readonly incarnation: number | undefined;
  /** Told once when the call is over, however it ended. */
  readonly onFinish?: (call: ClientCall) => void;
}

/** See the module comment. */
export class ClientCall implements RoutedCall, FrameOutput, ReceiverSink, SignalSource {
  readonly callId: number;
  /** RoutedCall: where the server the call went to publishes its replies. */
  readonly replyTopic: string;
  /** Response headers; filled when the server's first frame arrives. */
  readonly header = new Headers();
  /** Response trailers; filled by the End frame. */
  readonly trailer = new Headers();
  /**
   * Serialized response messages in order; ends with the call's status.
   * Unary calls leave it empty and keep their response in {@link unaryResponse}.
   */
  get responses(): MessageQueue<Uint8Array> {
    this.responseQueue ??= this.makeResponseQueue();
    return this.responseQueue;
  }
  /** Settles with the call's status. */
  readonly done: Promise<void>;
  /** A unary call's response message, once it arrived. */
  unaryResponse: Uint8Array | undefined;

  private responseQueue: MessageQueue<Uint8Array> | undefined;
  private readonly sender: FrameSender;
  private readonly receiver: FrameReceiver;
  private topic: string;
  /** The server instance that owns the call, once it said so. */
  private instance: string | undefined;
  private finished = false;
  /** The incarnation of the server instance that has the call, once known. */
  incarnation: number | undefined;
  private readonly startedAt = Date.now();
  /** When the server last said anything about this call (or the call started). */
  private lastHeard = this.startedAt;
  /** Frames heard from the server (news only, as for lastHeard): a probe compares counts, not clocks. */
  private heard = 0;
  private headerArrived = false;
  private headerWaiters: Array<() => void> | undefined;
  private settle!: (error: ConnectError | undefined) => void;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  /** Aborts waits for credit when the call ends; made only when a wait needs it. */
  private aborter: AbortController | undefined;
  private endReason: ConnectError | undefined;
  private abortListener: (() => void) | undefined;
  private openSentAt: number | undefined;

  constructor(private readonly init: ClientCallInit) {
    this.replyTopic = init.replyTopic;
    this.callId = init.router.register(this, init.heartbeatMs);
    this.topic = init.topic;
    this.done = new Promise((resolve, reject) => {
      this.settle = (error) => (error ? reject(error) : resolve());
    });
    this.done.catch(() => {});
    // The call is its sender's output and its receiver's sink: no adapter
    // objects or closures per call.
    this.sender = new FrameSender(this.callId, this, DEFAULT_WINDOW);
    this.receiver = new FrameReceiver(init.window, init.maxMessage, this, {
      budget: init.reassemblyBudget,
      owner: undefined,
    });
    this.incarnation = init.incarnation;
    // A stream's queue exists from the start, so that it ends with the call
    // even when the call ends before the caller starts reading.
    if (!init.unary) this.responseQueue = this.makeResponseQueue();
    if (init.settings.batchedStream) this.sender.enableBatching(init.settings.batchLingerMs);
    if (init.deadline !== undefined) {
      if (init.deadline - Date.now() <= 0) {
        this.onDeadline();
        return;
      }
      this.armDeadline(init.deadline);
    }
    const signal = init.signal;
    if (signal?.aborted) {
      this.onAbort();
    } else if (signal !== undefined) {
      this.abortListener = () => this.onAbort();
      signal.addEventListener("abort", this.abortListener, { once: true });
    }
  }

  private makeResponseQueue(): MessageQueue<Uint8Array> {
    return new MessageQueue<Uint8Array>(
      () => this.receiver.took(),
      () =>
        this.abandon(
          new ConnectError("the caller stopped reading the response stream", Code.Canceled),
        ),
    );
  }

  /** The server instance that has the call, once known. */
  get boundInstance(): string | undefined {
    return this.instance ?? this.init.instance;
  }

  /**
   * Whether the call went to a replicated server and no replica has said
   * yet that it took it (the first Headers frame names the replica).
   */
  get awaitsReplica(): boolean {
    return this.instance === undefined && this.init.sharedInstances !== undefined;
  }

  /** When the Open was handed to the link (`Date.now()` time), once it was. */
  get openedAt(): number | undefined {
    return this.openSentAt;
  }

  /** Whether the call is over (it may end in its constructor: an expired deadline). */
  get over(): boolean {
    return this.finished;
  }

  /** Resolves when headers (or the end) arrived; never rejects. */
  get headerReceived(): Promise<void> {
    if (this.headerArrived) return Promise.resolve();
    return new Promise((resolve) => {
      this.headerWaiters ??= [];
      this.headerWaiters.push(resolve);
    });
  }

  /**
   * Aborts when the call is over: what waits for flow-control credit on the
   * call's behalf listens to it. Made on first use.
   */
  get signal(): AbortSignal {
    if (this.aborter === undefined) {
      this.aborter = new AbortController();
      if (this.finished) this.aborter.abort(this.endReason ?? CALL_OVER);
    }
    return this.aborter.signal;
  }

  /**
   * Sends the Open frame, with the first request message inline if given.
   * Returns a promise only when sending must wait (a chunked message).
   */
  open(message: Uint8Array | undefined, halfClose: boolean): Promise<void> | undefined {
    if (this.finished) return undefined;
    const now = Date.now();
    this.openSentAt = now;
    return this.sender.sendOpen(
      {
        timeoutMs: openTimeoutMs(this.init.deadline, now),
        headers: headersToEntries(this.init.header),
        // 0 announces the protocol's default window in no bytes.
        window: this.init.window === DEFAULT_WINDOW ? 0 : this.init.window,
        heartbeatMs: this.init.heartbeatMs,
        session: this.init.router.session,
      },
      message,
      halfClose,
      this,
    );
  }

  /**
   * Sends one request message, waiting for flow-control credit. On a shared
   * server, the first message waits until the instance that took the call
   * names itself, so that every message reaches that instance.
   */
  async send(message: Uint8Array): Promise<void> {
    if (this.instance === undefined && this.init.sharedInstances !== undefined)
      await this.headerReceived;
    if (this.finished) return;
    await this.sender.sendMessage(message, this);
  }

  /** Tells the server no more request messages follow, after any waiting batch. */
  async halfClose(): Promise<void> {
    if (this.instance === undefined && this.init.sharedInstances !== undefined)
      await this.headerReceived;
    await this.sender.flush(this);
    if (!this.finished) this.sender.sendControl({ case: "halfClose", value: {} });
  }

  /** Ends the call from the caller's side, telling the server to stop. */
  abandon(error: ConnectError): void {
    if (this.finished) return;
    const code = error.code === Code.DeadlineExceeded ? Code.DeadlineExceeded : Code.Canceled;
    const shared = this.init.sharedInstances;
    if (this.sender.started) {
      // Which replica took the call may not be known yet: then tell each of them.
      const cancel = encodeFrame({
        callId: this.callId,
        kind: { case: "cancel", value: { code } },
      });
      const topics =
        this.instance === undefined && shared !== undefined
          ? shared().map((instance) => this.requestTopic(instance))
          : undefined;
      if (topics === undefined) {
        // On the call's topic, coalesced with what else goes there this turn.
        this.publish(cancel);
      } else {
        for (const topic of topics) this.init.link.publish(topic, cancel).catch(() => {});
      }
      // A broker may drop a burst of QoS 1 messages past a subscriber's queue
      // limit, and nothing else would tell the server before the heartbeat
      // silence (PROTOCOL.md 13): say it once more; a second Cancel is ignored.
      // The timer holds the frame and the topics, not the call.
      const { link } = this.init;
      const again = topics ?? [this.topic];
      const repeat = setTimeout(() => {
        for (const topic of again) link.publish(topic, cancel).catch(() => {});
      }, CANCEL_REPEAT_MS);
      (repeat as { unref?: () => void }).unref?.();
    }
    this.finish(error);
  }

  /**
   * RoutedCall: every heartbeat interval. Pings the server, asks again for
   * reply frames that seem lost, and ends the call with UNAVAILABLE when the
   * server has said nothing for {@link SILENT_SERVER_INTERVALS} intervals
   * although pinged (it is gone, or the link is down that long).
   */
  heartbeat(now: number, intervalMs: number, hearingSince = 0): void {
    if (this.finished || now - this.startedAt < intervalMs) return;
    const heard = Math.max(this.lastHeard, hearingSince);
    if (now - heard > SILENT_SERVER_INTERVALS * intervalMs) {
      this.abandon(
        new ConnectError(
          `server "${this.init.serverId}" did not answer heartbeats for ${now - heard} ms`,
          Code.Unavailable,
        ),
      );
      return;
    }
    this.sender.sendUnsequenced({ case: "ping", value: {} });
    this.receiver.checkProgress(true);
  }

  /**
   * Presence says the server instance that has this call is gone (closed,
   * dropped past its grace, or restarted). Presence can lag behind or lose
   * an announcement, so ask the server directly: the call ends with
   * `reason` unless the server answers a Ping (or sends anything new)
   * within {@link PROBE_MS}. A call whose Open never went out ends at once.
   *
   * A call on a replicated server that no replica has claimed yet asks every
   * online replica on its sticky topic: the one that took the call answers
   * (after its Headers, which it sent first), the others answer that they do
   * not know it, which keeps nothing alive (see {@link onFrame}).
   */
  probe(reason: ConnectError): void {
    if (this.finished || this.probeTimer !== undefined) return;
    if (!this.sender.started) {
      this.abandon(reason);
      return;
    }
    // Counted, not timed: an answer in the millisecond of the question (or
    // the call's start in it) must neither count nor be missed.
    const heardBefore = this.heard;
    const shared = this.init.sharedInstances;
    if (this.instance === undefined && shared !== undefined) {
      const ping = encodeFrame({ callId: this.callId, kind: { case: "ping", value: {} } });
      for (const instance of shared()) {
        this.init.link.publish(this.requestTopic(instance), ping).catch(() => {});
      }
    } else {
      this.sender.sendUnsequenced({ case: "ping", value: {} });
    }
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      // A question that could not be answered (the caller's own link went
      // down meanwhile) decides nothing: presence reviews the call again
      // once the link sees again.
      if (this.heard === heardBefore && this.init.link.subscriptionsCurrent) this.abandon(reason);
    }, PROBE_MS);
  }

  private probeTimer: ReturnType<typeof setTimeout> | undefined;

  /** RoutedCall: the link came back; ask the server about the call (see ReconnectResync). */
  resync(first: boolean): void {
    if (this.finished || !this.sender.started) return;
    this.sender.sendUnsequenced({ case: "ping", value: {} });
    if (first) this.receiver.requestResend();
    else this.receiver.checkProgress(true);
  }

  /** Reply frames for this call, routed by call id. */
  onFrame(frame: CallFrame): void {
    if (this.finished) return;
    switch (frame.kind.case) {
      case "credit": {
        this.heardNow();
        const { limit, received, resend } = frame.kind.value;
        this.sender.onCredit(limit, received, resend);
        return;
      }
      case "pong": {
        const { incarnation, unknown } = frame.kind.value;
        if (unknown && this.awaitsReplica) {
          // A replica asked by a probe does not have the call. Another may
          // have it, or one that died: either way nothing is learned, and
          // the Open must not go out again (a dead replica may have run it).
          return;
        }
        this.heardNow();
        if (!unknown) {
          // The instance that answers has the call: its incarnation is the call's.
          this.incarnation = incarnation;
          return;
        }
        if (this.incarnation !== undefined && incarnation !== this.incarnation) {
          // Another run of the server answers: the one that had the call is
          // gone, and the call may have run there. Never send it again.
          this.abandon(
            new ConnectError(
              `server "${this.init.serverId}" restarted while the call was in progress; it may or may not have run`,
              Code.Unavailable,
            ),
          );
          return;
        }
        // The same run of the server never saw the call: the Open was lost
        // on the way. Send everything again from the Open.
        this.incarnation ??= incarnation;
        this.sender.onCredit(0, 0, true);
        return;
      }
      case "ping":
      case "cancel":
      case "open":
      case "halfClose":
        return;
      default:
        // Only news counts as hearing from the server: a server that lost
        // the frames before an End it kept would otherwise keep a call alive
        // forever by answering every ping with that End again.
        if (this.receiver.accept(frame)) this.heardNow();
    }
  }

  private heardNow(): void {
    this.lastHeard = Date.now();
    this.heard++;
  }

  /** ReceiverSink: the server broke the protocol or a limit. */
  violation(error: ConnectError): void {
    this.abandon(error);
  }

  /** ReceiverSink: tells the server how much more it may send. */
  grant(limit: number, received: number, resend: boolean): void {
    this.sender.sendUnsequenced({ case: "credit", value: { limit, received, resend } });
  }

  /** ReceiverSink: the server's frames, in order. */
  event(event: ReceivedEvent): void {
    switch (event.type) {
      case "headers":
        entriesToHeaders(event.headers.headers, this.header);
        if (event.headers.incarnation !== 0) this.incarnation = event.headers.incarnation;
        if (event.headers.instance !== "") {
          this.instance = event.headers.instance;
          this.topic = this.requestTopic(event.headers.instance);
        }
        if (event.headers.window > 0) this.sender.grantWindow(event.headers.window);
        this.headerDone();
        return;
      case "message":
        if (!this.init.unary) {
          this.responses.push(event.data);
        } else if (this.unaryResponse === undefined) {
          this.unaryResponse = event.data;
        } else {
          this.abandon(
            new ConnectError("protocol error: more than one response message", Code.Internal),
          );
        }
        return;
      case "end":
        // The server keeps the call's last frames until told they arrived.
        if (event.end.ack) this.grant(this.receiver.announced, this.receiver.expected, false);
        entriesToHeaders(event.end.headers, this.header);
        entriesToHeaders(event.end.trailers, this.trailer);
        this.finish(endToError(event.end));
        return;
      default:
        return;
    }
  }

  private onAbort(): void {
    const reason = this.init.signal?.reason;
    this.abandon(ConnectError.from(reason, Code.Canceled));
  }

  /**
   * Arms the deadline timer. Timers run at most MAX_TIMER_MS (longer delays
   * wrap to 1 ms): a deadline further away is reached by re-arming, without
   * an object per call.
   */
  private armDeadline(deadline: number): void {
    const left = deadline - Date.now();
    const delay = timerDelay(left);
    this.deadlineTimer = setTimeout(
      delay < left ? () => this.armDeadline(deadline) : () => this.onDeadline(),
      delay,
    );
  }

  private onDeadline(): void {
    this.deadlineTimer = undefined;
    this.abandon(new ConnectError("the operation timed out", Code.DeadlineExceeded));
  }

  private headerDone(): void {
    this.headerArrived = true;
    const waiters = this.headerWaiters;
    this.headerWaiters = undefined;
    if (waiters !== undefined) for (const wake of waiters) wake();
  }

  private finish(error: ConnectError | undefined): void {
    if (this.finished) return;
    this.finished = true;
    this.endReason = error;
    this.receiver.dispose();
    this.init.router.unregister(this.callId);
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    if (this.probeTimer !== undefined) clearTimeout(this.probeTimer);
    if (this.abortListener !== undefined) {
      this.init.signal?.removeEventListener("abort", this.abortListener);
    }
    this.aborter?.abort(error ?? CALL_OVER);
    if (error) this.responseQueue?.fail(error);
    else this.responseQueue?.close();
    this.headerDone();
    this.init.onFinish?.(this);
    this.settle(error);
  }

  /** FrameOutput: publishes one of the call's frames on its request topic. */
  publish(frame: Uint8Array): void {
    // On a shared subscription the broker gives each publish to one replica:
    // Opens sharing a publish would all land on the same one, so until the
    // owning replica is known each frame goes alone.
    const alone = this.instance === undefined && this.init.sharedInstances !== undefined;
    this.init.link.sendFrame(this.topic, this.callId, frame, this.maxFrameBytes(), this, alone);
  }

  /** PublishFailureListener: the publish that carried one of the call's frames failed. */
  publishFailed(error: unknown, topic: string): void {
    this.finish(publishError(error, topic));
  }

  private requestTopic(instance: string | undefined): string {
    const { scheme, serverId, method, router } = this.init;
    return scheme.requestTopic(
      serverId,
      method.parent.typeName,
      method.name,
      router.clientKey,
      instance,
    );
  }

  /** FrameOutput: the largest frame that fits in one publish on the call's topic. */
  maxFrameBytes(): number {
    const brokerMax = this.init.link.brokerMaxPacketSize ?? Number.POSITIVE_INFINITY;
    return Math.min(this.init.maxPublishBytes, brokerMax) - this.topic.length - PACKET_OVERHEAD;
  }
}
