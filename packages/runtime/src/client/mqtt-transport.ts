/**
 * `createMqttTransport`: a Connect `Transport` that carries calls over MQTT,
 * so `createClient`, interceptors and everything built on Connect work
 * unchanged. Portable: no Node-only imports on this path.
 */

import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextKey,
  createContextValues,
  type Interceptor,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { runStreamingCall, runUnaryCall } from "@connectrpc/connect/protocol";
import { DEFAULT_WINDOW } from "../flow/flow-credit.js";
import type { MessageLimit } from "../flow/frame-receiver.js";
import { ReassemblyBudget } from "../flow/reassembly-budget.js";
import { mqttInputProblem } from "../link/broker-url.js";
import { type MqttConnectionInput, MqttLink } from "../link/mqtt-link.js";
import { flatString, PresenceBoard, type PresenceWatch } from "../link/presence.js";
import {
  completeMethodSettings,
  type MethodSettings,
  sameMethodSettings,
  settingsForCall,
} from "../method-settings.js";
import {
  optionalBoolean,
  optionalFunctions,
  optionNames,
  refuseUnknownOptions,
} from "../option-check.js";
import { DeadlineTimer, deadlineOf, timerSafeTimeout } from "../wire/deadline.js";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_PUBLISH_BYTES,
  defaultReassemblyBytes,
  MAX_TIMER_MS,
  MIN_PUBLISH_BYTES,
  positiveInteger,
} from "../wire/limits.js";
import { clientIdProblem, encodeTopicSegment, TopicScheme } from "../wire/topic-scheme.js";
import { abortable } from "./abortable.js";
import { CallLiveness } from "./call-liveness.js";
import { ClientCall, type MethodRef } from "./client-call.js";
import type { RawStreamRequest, RawStreamResponse } from "./raw-stream.js";
import { ReplyRouter } from "./reply-router.js";

/** Options of {@link createMqttTransport}. */
export interface MqttTransportOptions {
  /** The broker: URL, MQTT.js options or an existing `MqttClient` to share. */
  readonly mqtt: MqttConnectionInput;
  /** The server id the calls go to (a device id, or a replicated service's id). */
  readonly serverId: string;
  /** First topic levels of every mqrpc topic; default `mqrpc`. Must match the server's. */
  readonly topicPrefix?: string;
  /** Connect interceptors, run for every call as with any Connect transport. */
  readonly interceptors?: Interceptor[];
  /**
   * Largest response message accepted, in bytes (default 4 MiB). A larger
   * one fails the call with RESOURCE_EXHAUSTED before it is buffered.
   */
  readonly maxMessageBytes?: number;
  /**
   * Largest MQTT packet published, in bytes (default 128 KiB); bigger
   * request messages are chunked. Lowered to the broker's maximum packet size
   * on MQTT 5.
   */
  readonly maxPublishBytes?: number;
  /**
   * Wait for the server to come online instead of failing fast with
   * UNAVAILABLE (like gRPC's wait-for-ready). The call's deadline still
   * applies. Per call: set {@link waitForServerKey} in `contextValues`.
   */
  readonly waitForServer?: boolean;
  /**
   * How long to wait for retained presence before deciding a server that has
   * never announced itself is unavailable, in milliseconds (default 1000;
   * like every duration here, a value over 2³¹−1, the longest timer, counts
   * as 2³¹−1).
   */
  readonly presenceTimeoutMs?: number;
  /**
   * Bytes that partly received (chunked) response messages may hold across
   * all calls of this transport (default 64 MiB, at least twice
   * maxMessageBytes; must be at least maxMessageBytes). When it is full, a
   * call's response waits (the server is asked to send it again once there
   * is room): backpressure, not an error.
   */
  readonly maxReassemblyBytes?: number;
  /** Response frames the server may send ahead of the reader (default 64). */
  readonly receiveWindow?: number;
  /**
   * How often each call in flight pings its server, in milliseconds (default
   * 10000; 0 turns heartbeats off). A server ends a call whose caller was
   * silent for three intervals (UNAVAILABLE), so a caller that vanished
   * frees the server's resources; the caller ends a call with UNAVAILABLE
   * when the server said nothing for four intervals (the server is gone, or
   * the broker link was down that long); a server that never saw the call
   * or restarted answers the ping so the call is sent again or fails
   * (docs/PROTOCOL.md section 15.3). Also the interval at which lost reply
   * frames are asked for again. At most 2³¹−1 (a larger value counts as that).
   */
  readonly heartbeatMs?: number;
  /**
   * How long a server that was online may be offline before its calls fail
   * with UNAVAILABLE, in milliseconds (default 3000). A server whose link
   * drops and comes back within this time (its last will announces it
   * offline meanwhile) keeps its calls, and new calls wait for it.
   */
  readonly offlineGraceMs?: number;
  /**
   * How long a new call waits for the broker connection when it is down
   * (or not up yet) before failing with UNAVAILABLE, in milliseconds
   * (default 3000). Calls that wait for the server ({@link waitForServer})
   * wait for the connection as long as their deadline allows.
   */
  readonly connectGraceMs?: number;
}

/** A Connect transport over MQTT that can also be closed. */
export interface MqttTransport extends Transport {
  /**
   * Calls a method by name with serialized messages, for callers without
   * its schema (a gRPC ingress forwarding bytes). Resolves once the
   * server's response headers arrived, or the call ended; a failed call's
   * status is thrown by iterating the response's `message` (as with
   * Connect's `Transport.stream`). Interceptors do not run for raw calls.
   *
   * @throws ConnectError INVALID_ARGUMENT for an empty service or method
   *   name; UNAVAILABLE, CANCELED, DEADLINE_EXCEEDED as any call.
   */
  rawStream(request: RawStreamRequest): Promise<RawStreamResponse>;
  /**
   * Fails calls in flight with CANCELED and releases the MQTT connection.
   * Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

/**
 * Per-call override of {@link MqttTransportOptions.waitForServer}:
 * `client.method(req, { contextValues: createContextValues().set(waitForServerKey, true) })`.
 */
export const waitForServerKey = createContextKey<boolean | undefined>(undefined, {
  description: "mqrpc wait for server",
});

/**
 * Creates a Connect `Transport` that calls `serverId` through an MQTT broker.
 * The connection, reply subscription and presence watch start at once; calls
 * made before they are ready wait for them.
 *
 * Transports given equal connection options share one connection, one reply
 * subscription and one presence watch per server id (see
 * {@link TransportHub}); what a transport keeps of its own is small, so that
 * a process calling thousands of devices, one transport each, stays small.
 */
export function createMqttTransport(options: MqttTransportOptions): MqttTransport {
  const settings = checkedSettings(options);
  const link = MqttLink.acquire(options.mqtt);
  const problem = clientIdProblem(link.clientId);
  if (problem !== undefined) {
    void link.release();
    throw new Error(`mqtt option: ${problem}`);
  }
  let hub: TransportHub | undefined;
  try {
    hub = TransportHub.join(link, options.topicPrefix ?? DEFAULT_TOPIC_PREFIX);
    return new MqttTransportImpl(hub, options.serverId, settings);
  } catch (e) {
    const left = hub?.release() ?? Promise.resolve();
    void left.finally(() => link.release());
    throw e;
  }
}

/** The options' settings, after the checks that need no connection. */
function checkedSettings(options: MqttTransportOptions): TransportSettings {
  if (typeof options !== "object" || options === null) {
    throw new Error("createMqttTransport needs options { mqtt, serverId }");
  }
  refuseUnknownOptions("createMqttTransport", options, TRANSPORT_OPTIONS);
  if (typeof options.serverId !== "string" || options.serverId === "") {
    throw new Error("serverId must be a non-empty string");
  }
  return transportSettings(options);
}

/**
 * Checks `options` as {@link createMqttTransport} does, without
 * connecting: for a package that makes transports later from options it
 * was given (the gRPC ingress makes one per device on its first call, and
 * checks its `transport` option at start).
 *
 * @throws Error naming the option for an unknown key or a bad value, and
 *   `mqtt option: …` for a broker URL whose scheme is not an MQTT one.
 */
export function checkMqttTransportOptions(options: MqttTransportOptions): void {
  checkedSettings(options);
  // Checks the prefix (the scheme throws naming it).
  new TopicScheme(options.topicPrefix);
  const problem = mqttInputProblem(options.mqtt);
  if (problem !== undefined) throw new Error(`mqtt option: ${problem}`);
}

/** Every option of {@link createMqttTransport}; others are refused. */
const TRANSPORT_OPTIONS = optionNames<MqttTransportOptions>({
  mqtt: true,
  serverId: true,
  topicPrefix: true,
  interceptors: true,
  maxMessageBytes: true,
  maxPublishBytes: true,
  waitForServer: true,
  presenceTimeoutMs: true,
  maxReassemblyBytes: true,
  receiveWindow: true,
  heartbeatMs: true,
  offlineGraceMs: true,
  connectGraceMs: true,
});

/** The default topic prefix, as TopicScheme has it. */
const DEFAULT_TOPIC_PREFIX = new TopicScheme().prefix;

/** What a transport makes of its options; transports with default options share one. */
interface TransportSettings {
  readonly maxMessage: MessageLimit;
  readonly maxPublishBytes: number;
  readonly presenceTimeoutMs: number;
  readonly window: number;
  readonly maxReassemblyBytes: number;
  readonly heartbeatMs: number;
  readonly offlineGraceMs: number;
  readonly connectGraceMs: number;
  readonly waitForServer: boolean;
  readonly interceptors: Interceptor[];
}

let defaultSettings: TransportSettings | undefined;

/**
 * Validates a duration option that runs a timer (and, for heartbeatMs, goes
 * in the Open's uint32 field): a non-negative integer, capped at
 * MAX_TIMER_MS (about 24.8 days), past which timers would wrap to 1 ms.
 */
function timerMs(name: string, value: number | undefined, fallback: number): number {
  return Math.min(positiveInteger(name, value, fallback, 0), MAX_TIMER_MS);
}

/** Validates the options of a transport (errors name the option). */
function transportSettings(options: MqttTransportOptions): TransportSettings {
  const defaults =
    options.maxMessageBytes === undefined &&
    options.maxPublishBytes === undefined &&
    options.presenceTimeoutMs === undefined &&
    options.receiveWindow === undefined &&
    options.maxReassemblyBytes === undefined &&
    options.heartbeatMs === undefined &&
    options.offlineGraceMs === undefined &&
    options.connectGraceMs === undefined &&
    options.waitForServer === undefined &&
    options.interceptors === undefined;
  if (defaults && defaultSettings !== undefined) return defaultSettings;
  const maxMessageBytes = positiveInteger(
    "maxMessageBytes",
    options.maxMessageBytes,
    DEFAULT_MAX_MESSAGE_BYTES,
  );
  const settings: TransportSettings = {
    maxMessage: { bytes: maxMessageBytes, name: "the transport's maxMessageBytes" },
    maxPublishBytes: positiveInteger(
      "maxPublishBytes",
      options.maxPublishBytes,
      DEFAULT_MAX_PUBLISH_BYTES,
      MIN_PUBLISH_BYTES,
    ),
    presenceTimeoutMs: timerMs("presenceTimeoutMs", options.presenceTimeoutMs, 1000),
    window: positiveInteger("receiveWindow", options.receiveWindow, DEFAULT_WINDOW),
    maxReassemblyBytes: positiveInteger(
      "maxReassemblyBytes",
      options.maxReassemblyBytes,
      defaultReassemblyBytes(maxMessageBytes),
      maxMessageBytes,
    ),
    heartbeatMs: timerMs("heartbeatMs", options.heartbeatMs, 10_000),
    offlineGraceMs: timerMs("offlineGraceMs", options.offlineGraceMs, 3000),
    connectGraceMs: timerMs("connectGraceMs", options.connectGraceMs, 3000),
    waitForServer: optionalBoolean("waitForServer", options.waitForServer) ?? false,
    interceptors: optionalFunctions<Interceptor>("interceptors", options.interceptors) ?? [],
  };
  if (defaults) defaultSettings = settings;
  return settings;
}

/**
 * What a transport holds while it has calls in flight, and lets go with the
 * last one: the watch over its calls (CallLiveness) and the budget of their
 * partly received response messages (an idle budget is as good as a new one).
 */
interface CallsInFlight {
  readonly liveness: CallLiveness;
  readonly reassemblyBudget: ReassemblyBudget;
  /** ClientCall's onFinish. */
  readonly forget: (call: ClientCall) => void;
}

/**
 * The transport {@link createMqttTransport} returns. Its state is a handful
 * of fields, its behaviour methods on the prototype: a process holds one
 * per device it calls.
 */
class MqttTransportImpl implements MqttTransport {
  private readonly link: MqttLink;
  private readonly presence: PresenceWatch;
  /** Where this client's replies from the server come (PROTOCOL.md 3.1). */
  private readonly replyTopic: string;
  /** The request topic of the first method called, and of others once there are others. */
  private firstMethod: MethodRef | undefined;
  private firstTopic = "";
  private topics: WeakMap<MethodRef, string> | undefined;
  /** Raw calls' methods by "service/method", so that their topics are cached too. */
  private rawMethods: Map<string, RawMethodRef> | undefined;
  private calls: CallsInFlight | undefined;
  /** Calls waiting for the connection or the server; aborted by close(). */
  private waiting: Set<CallWait> | undefined;
  private closedWith: ConnectError | undefined;
  private closing: Promise<void> | undefined;
  private sharedInstances: (() => string[]) | undefined;

  constructor(
    private readonly hub: TransportHub,
    private readonly serverId: string,
    private readonly settings: TransportSettings,
  ) {
    this.link = hub.link;
    // scheme.replyTopic without its cache, which would keep a map per device.
    this.replyTopic = flatString(
      `${hub.scheme.replyBase(hub.router.clientKey)}${encodeTopicSegment(serverId)}`,
    );
    this.presence = hub.board.acquire(serverId, settings.presenceTimeoutMs);
  }

  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    const interceptors = this.settings.interceptors;
    if (interceptors.length === 0) {
      return this.directUnary(method, signal, timeoutMs, header, input, contextValues);
    }
    const deadline = deadlineOf(timeoutMs, Date.now());
    return runUnaryCall({
      ...this.callOptions(signal, timeoutMs),
      req: {
        stream: false,
        ...this.requestCommon(method, header, contextValues),
        method,
        message: input,
      },
      next: async (req) => {
        const call = await this.startCall(
          req.method,
          req.signal,
          deadline,
          req.header,
          req.contextValues,
          true,
        );
        await call.open(toBinary(method.input, req.message), true);
        await call.done;
        return unaryResponse(call, method);
      },
    });
  }

  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    const deadline = deadlineOf(timeoutMs, Date.now());
    return runStreamingCall({
      ...this.callOptions(signal, timeoutMs),
      req: {
        stream: true,
        ...this.requestCommon(method, header, contextValues),
        method,
        message: input,
      },
      next: async (req) => {
        const call = await this.startCall(
          req.method,
          req.signal,
          deadline,
          req.header,
          req.contextValues,
          false,
        );
        if (method.methodKind === "server_streaming") {
          const single = await requestOf(call, req.message);
          await call.open(toBinary(method.input, single), true);
        } else {
          await call.open(undefined, false);
          pumpRequests(call, req.message, (message) => toBinary(method.input, message));
        }
        await call.headerReceived;
        return {
          stream: true,
          service: method.parent,
          method,
          header: call.header,
          trailer: call.trailer,
          message: mapMessages(call, (bytes) => decode(method.output, bytes)),
        };
      },
    });
  }

  async rawStream(request: RawStreamRequest): Promise<RawStreamResponse> {
    const { service, method: name, kind } = request;
    if (typeof service !== "string" || service === "" || typeof name !== "string" || name === "") {
      throw new ConnectError(
        "rawStream: service and method must be non-empty strings",
        Code.InvalidArgument,
      );
    }
    const deadline = deadlineOf(request.timeoutMs, Date.now());
    const method = this.rawMethodRef(service, name, request.settings);
    const signal = request.signal;
    let call: ClientCall | undefined;
    try {
      const starting = this.startCall(
        method,
        signal,
        deadline,
        new Headers(request.header),
        undefined,
        false,
      );
      call = starting instanceof Promise ? await starting : starting;
      if (kind === "unary" || kind === "server_streaming") {
        const single = await requestOf(call, request.message);
        const opening = call.open(single, true);
        if (opening !== undefined) await opening;
      } else {
        const opening = call.open(undefined, false);
        if (opening !== undefined) await opening;
        pumpRequests(call, request.message, identity);
      }
      await call.headerReceived;
      return {
        service,
        method: name,
        header: call.header,
        trailer: call.trailer,
        message: mapMessages(call, identity),
      };
    } catch (e) {
      throw abandoned(call, signal, e);
    }
  }

  /** The method of a raw call, made once per name (at most 1024 kept). */
  private rawMethodRef(
    service: string,
    name: string,
    settings: Partial<MethodSettings> | undefined,
  ): RawMethodRef {
    const complete = completeMethodSettings(settings);
    const key = `${service}/${name}`;
    this.rawMethods ??= new Map();
    let ref = this.rawMethods.get(key);
    // Settings equal field by field keep the ref, and so its cached topic.
    if (ref === undefined || !sameMethodSettings(ref.settings, complete)) {
      if (this.rawMethods.size >= 1024) this.rawMethods.clear();
      ref = { parent: { typeName: service }, name, settings: complete };
      this.rawMethods.set(key, ref);
    }
    return ref;
  }

  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    const closed = new ConnectError("the transport was closed", Code.Canceled);
    this.closedWith = closed;
    const calls = this.calls;
    this.calls = undefined;
    calls?.liveness.close();
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting !== undefined) for (const wait of waiting) wait.abort(closed);
    if (calls !== undefined) for (const call of calls.liveness.inFlight()) call.abandon(closed);
    await Promise.all([this.hub.board.release(this.presence), this.hub.release()]);
    await this.link.release();
  }

  /** Whether the reply subscription and the presence subscription were granted. */
  private get started(): boolean {
    return this.hub.router.subscribed && this.presence.subscribed;
  }

  /** Whether presence says some instance serves now (read afresh: messages change it). */
  private serverOnline(): boolean {
    return this.presence.availability === "online";
  }

  /** How long `serverId` may still be reconnecting after it went offline, in ms (0: not). */
  private recentlyOnline(): number {
    const since = this.presence.offlineSince;
    return since === undefined ? 0 : Math.max(0, since + this.settings.offlineGraceMs - Date.now());
  }

  /**
   * Starts a call once the connection and the server's presence allow it.
   * Only calls that must wait for either build a signal of their own
   * (caller, transport closing, deadline); calls in flight are tracked and
   * cancelled by close() directly, which keeps the hot path free of listeners.
   */
  private startCall(
    method: DescMethod | RawMethodRef,
    signal: AbortSignal | undefined,
    deadline: number | undefined,
    header: Headers,
    values: ContextValues | undefined,
    unary: boolean,
  ): ClientCall | Promise<ClientCall> {
    if (this.closedWith !== undefined) throw this.closedWith;
    if (
      this.started &&
      this.serverOnline() &&
      this.link.client.connected &&
      this.presence.gate.tryEnter()
    ) {
      return this.createCall(method, signal, deadline, header, values, unary);
    }
    const wait = new CallWait(signal, deadline);
    this.waiting ??= new Set();
    this.waiting.add(wait);
    return this.untilAdmitted(wait, values)
      .finally(() => this.endWait(wait))
      .then(() => this.createCall(method, signal, deadline, header, values, unary));
  }

  /**
   * Waits for the server (untilServerReady) and then for the call's turn
   * among this connection's calls to it (the presence watch's gate,
   * PROTOCOL.md 17.1): a call beyond the server's `max_calls_per_caller`
   * waits here, bounded by its deadline and signal, rather than be refused
   * there. Resolves entered in the gate.
   */
  private async untilAdmitted(wait: CallWait, values: ContextValues | undefined): Promise<void> {
    const gate = this.presence.gate;
    for (;;) {
      await this.untilServerReady(wait, values);
      await gate.enter(wait.signal);
      if (this.serverOnline() && this.link.client.connected) return;
      // The server went away while the call waited for its turn: the turn
      // goes to the next (which finds the same at once), and the call waits
      // for the server again, or fails as a new call would.
      gate.leave();
    }
  }

  /** The request topic of `method` (made once per method). */
  private topicOf(method: MethodRef): string {
    if (method === this.firstMethod) return this.firstTopic;
    let topic = this.topics?.get(method);
    if (topic === undefined) {
      topic = flatString(
        this.hub.scheme.requestTopic(
          this.serverId,
          method.parent.typeName,
          method.name,
          this.hub.router.clientKey,
        ),
      );
      if (this.firstMethod === undefined) {
        this.firstMethod = method;
        this.firstTopic = topic;
      } else {
        this.topics ??= new WeakMap();
        this.topics.set(method, topic);
      }
    }
    return topic;
  }

  /** Lists the online instances of a replicated server, for its calls (made once). */
  private onlineInstances(): () => string[] {
    if (this.sharedInstances === undefined) {
      const presence = this.presence;
      this.sharedInstances = () => presence.onlineInstances();
    }
    return this.sharedInstances;
  }

  /** What the transport holds while calls are in flight, made with the first. */
  private inFlight(): CallsInFlight {
    if (this.calls !== undefined) return this.calls;
    const gate = this.presence.gate;
    const liveness = new CallLiveness(
      this.presence,
      `server "${this.serverId}"`,
      this.settings.offlineGraceMs,
      this.link,
    );
    const calls: CallsInFlight = {
      liveness,
      reassemblyBudget: new ReassemblyBudget(this.settings.maxReassemblyBytes),
      forget: (call) => {
        liveness.forget(call);
        gate.leave();
        this.letGo(calls);
      },
    };
    this.calls = calls;
    return calls;
  }

  /** Lets go of what calls in flight need once none is left (and no bytes are held). */
  private letGo(calls: CallsInFlight): void {
    if (this.calls !== calls || calls.liveness.size > 0) return;
    const budget = calls.reassemblyBudget;
    if (budget.inUse > 0 || budget.messages > 0) return;
    calls.liveness.close();
    this.calls = undefined;
  }

  private createCall(
    method: DescMethod | RawMethodRef,
    signal: AbortSignal | undefined,
    deadline: number | undefined,
    header: Headers,
    values: ContextValues | undefined,
    unary: boolean,
  ): ClientCall {
    if (this.closedWith !== undefined) {
      this.presence.gate.leave();
      throw this.closedWith;
    }
    const calls = this.inFlight();
    const { presence, settings } = this;
    let call: ClientCall;
    try {
      call = new ClientCall({
        link: this.link,
        router: this.hub.router,
        scheme: this.hub.scheme,
        serverId: this.serverId,
        method,
        topic: this.topicOf(method),
        replyTopic: this.replyTopic,
        signal,
        deadline,
        unary,
        header,
        maxMessage: settings.maxMessage,
        maxPublishBytes: settings.maxPublishBytes,
        window: settings.window,
        settings: "settings" in method ? method.settings : settingsForCall(method, values),
        heartbeatMs: settings.heartbeatMs,
        reassemblyBudget: calls.reassemblyBudget,
        sharedInstances: presence.shared ? this.onlineInstances() : undefined,
        instance: presence.soleInstance,
        incarnation: presence.soleIncarnation,
        onFinish: calls.forget,
      });
    } catch (e) {
      // Not made, so never finished: the gate entry is given back here.
      presence.gate.leave();
      throw e;
    }
    if (!call.over) calls.liveness.add(call);
    else this.letGo(calls);
    return call;
  }

  /**
   * Waits for the broker connection (at most connectGraceMs, unless the
   * call waits for its server) and, per the wait-for-server setting, the
   * server.
   */
  private async untilServerReady(
    callWait: CallWait,
    values: ContextValues | undefined,
  ): Promise<void> {
    const { presence, link, settings } = this;
    const linked = callWait.signal;
    const wait = values?.get(waitForServerKey) ?? settings.waitForServer;
    if (!this.started || !link.client.connected) {
      if (!wait) callWait.startGrace(settings.connectGraceMs);
      const pending: Promise<unknown>[] = [link.connected(linked)];
      if (!this.hub.router.subscribed) pending.push(this.hub.router.ready);
      if (!presence.subscribed) pending.push(presence.ready);
      await abortable(Promise.all(pending), linked).catch((e: unknown) => {
        if (linked.aborted && !callWait.graceOver) throw e;
        throw new ConnectError(this.hub.unreachable(e, settings.connectGraceMs), Code.Unavailable);
      });
      callWait.endGrace();
    }
    if (this.serverOnline()) return;
    const grace = this.recentlyOnline();
    if (wait) {
      await presence.online(linked);
    } else if (grace > 0) {
      const limited = timeLimited(linked, grace);
      await presence
        .online(limited.signal)
        .catch((e: unknown) => {
          if (!limited.timedOut() || linked.aborted) throw e;
        })
        .finally(limited.cleanup);
      if (!this.serverOnline()) await abortable(presence.recheck(), linked);
      if (!this.serverOnline()) {
        throw new ConnectError(`server "${this.serverId}" is offline`, Code.Unavailable);
      }
    } else {
      await abortable(presence.settle(), linked);
      // An announcement may have been lost while this connection stalled.
      if (!this.serverOnline()) await abortable(presence.recheck(), linked);
      const availability = presence.availability;
      if (availability === "offline") {
        throw new ConnectError(`server "${this.serverId}" is offline`, Code.Unavailable);
      }
      if (availability === "unknown") {
        throw new ConnectError(
          `server "${this.serverId}" has not announced itself on this broker`,
          Code.Unavailable,
        );
      }
    }
  }

  private endWait(wait: CallWait): void {
    wait.end();
    const waiting = this.waiting;
    if (waiting === undefined) return;
    waiting.delete(wait);
    if (waiting.size === 0) this.waiting = undefined;
  }

  /**
   * What runUnaryCall and runStreamingCall take besides the request. Their
   * deadline is one plain timer, which would fire after 1 ms for a timeout
   * of 2³¹ ms or more (or NaN): such a timeout is left to the call's own
   * deadline (`deadline` of startCall), which enforces every one.
   */
  private callOptions(signal: AbortSignal | undefined, timeoutMs: number | undefined) {
    const safeMs = timerSafeTimeout(timeoutMs);
    return {
      interceptors: this.settings.interceptors,
      ...(signal !== undefined ? { signal } : {}),
      ...(safeMs !== undefined ? { timeoutMs: safeMs } : {}),
    };
  }

  /** The request fields shared by unary and streaming calls. */
  private requestCommon(
    method: DescMethod,
    header: HeadersInit | undefined,
    values: ContextValues | undefined,
  ) {
    return {
      service: method.parent,
      requestMethod: "POST",
      url: methodUrl(this.serverId, method),
      header: new Headers(header),
      contextValues: values ?? createContextValues(),
    };
  }

  /**
   * A unary call without interceptors: what Connect's runUnaryCall does
   * (normalize the request, deadline, cancellation, errors as ConnectError),
   * without the linked AbortControllers it builds for every call. The
   * deadline is a timer in the call; a caller's signal gets one listener.
   */
  private async directUnary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: MessageInitShape<I>,
    values: ContextValues | undefined,
  ): Promise<UnaryResponse<I, O>> {
    const deadline = deadlineOf(timeoutMs, Date.now());
    let call: ClientCall | undefined;
    try {
      const request = toBinary(method.input, create(method.input, input));
      const starting = this.startCall(method, signal, deadline, new Headers(header), values, true);
      call = starting instanceof Promise ? await starting : starting;
      const opening = call.open(request, true);
      if (opening !== undefined) await opening;
      await call.done;
    } catch (e) {
      throw abandoned(call, signal, e);
    }
    return unaryResponse(call, method);
  }
}

/**
 * The error of a call that failed outside Connect's call runners (raw and
 * direct unary calls): CANCELED when the caller aborted. A call already
 * made (its request stream then failed or was empty) is abandoned with it,
 * so that it ends and gives back its place among the calls open to the
 * server.
 */
function abandoned(
  call: ClientCall | undefined,
  signal: AbortSignal | undefined,
  e: unknown,
): ConnectError {
  const error = signal?.aborted
    ? ConnectError.from(signal.reason, Code.Canceled)
    : ConnectError.from(e);
  call?.abandon(error);
  return error;
}

/**
 * `signal`, or `ms` going by, as one signal (a timeout's reason is the
 * TimeoutError AbortSignal.timeout gives), and the cleanup that stops the
 * timer once the wait is over: AbortSignal.timeout would keep its timer,
 * and what it holds, until it fires, for every call that waited.
 */
function timeLimited(
  signal: AbortSignal,
  ms: number,
): { signal: AbortSignal; timedOut(): boolean; cleanup(): void } {
  const limited = new AbortController();
  let expired = false;
  const onAbort = () => limited.abort(signal.reason);
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (signal.aborted) {
    onAbort();
  } else {
    signal.addEventListener("abort", onAbort, { once: true });
    timer = setTimeout(
      () => {
        expired = true;
        limited.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError"));
      },
      Math.min(ms, MAX_TIMER_MS),
    );
    // Like AbortSignal.timeout's: a wait alone does not keep a process alive.
    (timer as { unref?: () => void }).unref?.();
  }
  return {
    signal: limited.signal,
    timedOut: () => expired,
    cleanup: () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    },
  };
}

/**
 * A call's wait for the connection and its server, as one AbortSignal: the
 * caller's signal, the transport's closing ({@link abort}) or the deadline
 * abort it (the first gives its reason), and so does the connect grace
 * while it runs ({@link startGrace}). One AbortController per waiting call.
 */
class CallWait {
  private readonly controller = new AbortController();
  private deadlineTimer: DeadlineTimer | undefined;
  private graceTimer: ReturnType<typeof setTimeout> | undefined;
  private onCallerAbort: (() => void) | undefined;
  /** Whether the connect grace ran out (and aborted the wait). */
  graceOver = false;

  constructor(
    private readonly caller: AbortSignal | undefined,
    deadline: number | undefined,
  ) {
    if (caller?.aborted) {
      this.abort(caller.reason);
      return;
    }
    if (caller !== undefined) {
      this.onCallerAbort = () => this.abort(caller.reason);
      caller.addEventListener("abort", this.onCallerAbort, { once: true });
    }
    if (deadline !== undefined) {
      const left = deadline - Date.now();
      if (left <= 0) this.expire();
      else this.deadlineTimer = new DeadlineTimer(deadline, () => this.expire());
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    this.controller.abort(reason);
  }

  /** Aborts the wait with a TimeoutError after `ms`, unless {@link endGrace} comes first. */
  startGrace(ms: number): void {
    if (this.signal.aborted) return;
    this.graceTimer = setTimeout(
      () => {
        this.graceOver = true;
        this.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError"));
      },
      Math.min(ms, MAX_TIMER_MS),
    );
    // Like AbortSignal.timeout's: a wait alone does not keep a process alive.
    (this.graceTimer as { unref?: () => void }).unref?.();
  }

  endGrace(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  /** The wait is over: stops its timers and listener. */
  end(): void {
    this.deadlineTimer?.clear();
    this.endGrace();
    if (this.onCallerAbort !== undefined) {
      this.caller?.removeEventListener("abort", this.onCallerAbort);
    }
  }

  private expire(): void {
    this.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
  }
}

const hubs = new WeakMap<MqttLink, Map<string, TransportHub>>();

/**
 * What the transports on one connection and topic prefix share: the topic
 * scheme, the reply subscription and its router, the presence watches (one
 * per server id called), and the last error the MQTT client reported, to
 * name the cause when a call cannot reach the broker. Made with the first
 * such transport and let go with the last, which leaves a shared
 * `MqttClient` as it was found.
 */
class TransportHub {
  readonly scheme: TopicScheme;
  readonly router: ReplyRouter;
  readonly board: PresenceBoard;
  private holders = 0;
  private lastError: unknown;
  private readonly onError = (e: unknown) => {
    this.lastError = e;
  };

  private constructor(
    readonly link: MqttLink,
    private readonly prefix: string,
  ) {
    this.scheme = new TopicScheme(prefix);
    this.router = new ReplyRouter(link, this.scheme);
    try {
      this.board = new PresenceBoard(link, this.scheme);
    } catch (e) {
      void this.router.dispose();
      throw e;
    }
    link.client.on("error", this.onError);
  }

  /**
   * Takes a share of the hub of `link` and `prefix`, making it on first use.
   *
   * @throws Error for an invalid topic prefix.
   */
  static join(link: MqttLink, prefix: string): TransportHub {
    let byPrefix = hubs.get(link);
    let hub = byPrefix?.get(prefix);
    if (hub === undefined) {
      hub = new TransportHub(link, prefix);
      if (byPrefix === undefined) {
        byPrefix = new Map();
        hubs.set(link, byPrefix);
      }
      byPrefix.set(prefix, hub);
    }
    hub.holders++;
    return hub;
  }

  /**
   * Gives a share back; the last one removes the hub's listener, routes and
   * subscriptions. Resolves once the broker acknowledged (or the link's
   * close grace is over).
   */
  release(): Promise<void> {
    if (--this.holders > 0) return Promise.resolve();
    const byPrefix = hubs.get(this.link);
    if (byPrefix?.get(this.prefix) === this) {
      byPrefix.delete(this.prefix);
      if (byPrefix.size === 0) hubs.delete(this.link);
    }
    this.link.client.off("error", this.onError);
    return Promise.all([this.board.dispose(), this.router.dispose()]).then(() => {});
  }

  /** The message of the UNAVAILABLE error for a call that could not reach the broker. */
  unreachable(waitError: unknown, graceMs: number): string {
    const cause = describeError(this.lastError ?? waitError);
    const where = brokerAddress(this.link);
    return this.link.client.connected
      ? `cannot use the MQTT broker${where}: ${cause}`
      : `cannot reach the MQTT broker${where} within ${graceMs} ms (connectGraceMs): ${cause}`;
  }
}

/** The response of a unary call that ended well: its one message, headers and trailers. */
function unaryResponse<I extends DescMessage, O extends DescMessage>(
  call: ClientCall,
  method: DescMethodUnary<I, O>,
): UnaryResponse<I, O> {
  const message = call.unaryResponse;
  if (message === undefined) {
    throw new ConnectError("protocol error: missing response message", Code.Internal);
  }
  return {
    stream: false,
    service: method.parent,
    method,
    header: call.header,
    message: decode(method.output, message),
    trailer: call.trailer,
  };
}

/** Parses a response message; a malformed one fails the call with INTERNAL. */
function decode<O extends DescMessage>(schema: O, bytes: Uint8Array): MessageShape<O> {
  try {
    return fromBinary(schema, bytes);
  } catch (e) {
    throw new ConnectError(
      `failed to parse ${schema.typeName}: ${e instanceof Error ? e.message : String(e)}`,
      Code.Internal,
    );
  }
}

/** Sends request messages as the caller produces them, then half-closes. */
function pumpRequests<T>(
  call: ClientCall,
  requests: AsyncIterable<T>,
  serialize: (message: T) => Uint8Array,
): void {
  void (async () => {
    try {
      for await (const message of requests) {
        await call.send(serialize(message));
      }
      await call.halfClose();
    } catch (e) {
      call.abandon(ConnectError.from(e, Code.Canceled));
    }
  })();
}

/** A raw call's method: its names, and its settings (a raw call has no descriptor to read them from). */
interface RawMethodRef extends MethodRef {
  readonly settings: MethodSettings;
}

const identity = (bytes: Uint8Array): Uint8Array => bytes;

/**
 * The response messages of a streaming call, parsed as they are read, then
 * the call's status. A plain iterator rather than an async generator: at
 * hundreds of thousands of messages a second, each generator step shows.
 */
function mapMessages<O>(call: ClientCall, decode: (bytes: Uint8Array) => O): AsyncIterable<O> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<O> {
      const it = call.responses[Symbol.asyncIterator]();
      const finish = (): Promise<IteratorResult<O>> =>
        call.done.then(() => ({ done: true, value: undefined }));
      const iterator: AsyncIterator<O> = {
        next: () =>
          it.next().then(
            (r) => {
              if (r.done !== true) return { done: false, value: decode(r.value) };
              // Read to its end: nothing for the finalizer to cancel (and
              // the registry no longer keeps the call alive).
              dropped?.unregister(iterator);
              return finish();
            },
            (e: unknown) => {
              dropped?.unregister(iterator);
              throw e;
            },
          ),
        return: (value?: unknown) => {
          dropped?.unregister(iterator);
          void it.return?.(value);
          return Promise.resolve({ done: true, value: undefined });
        },
      };
      // Connect's promise client hides return() from the caller, so a
      // caller that breaks out of a plain createClient stream is noticed
      // only when its iterator is collected (createMqttClient tells at once).
      dropped?.register(iterator, call, iterator);
      return iterator;
    },
  };
}

/** Cancels the call of a response stream whose iterator was dropped unfinished. */
const dropped =
  typeof FinalizationRegistry === "function"
    ? new FinalizationRegistry<ClientCall>((call) =>
        call.abandon(
          new ConnectError(
            "the caller dropped the response stream without reading it to the end",
            Code.Canceled,
          ),
        ),
      )
    : undefined;

/**
 * The one request message of a unary or server-streaming call, or the
 * call's own end when that comes first: its deadline or cancellation ends
 * the wait for a request stream that never yields (a gRPC client that sent
 * headers and no body yet).
 */
function requestOf<T>(call: ClientCall, messages: AsyncIterable<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    firstOnly(messages).then(resolve, reject);
    call.done.then(
      () => reject(new ConnectError("the call ended before its request message", Code.Internal)),
      reject,
    );
  });
}

async function firstOnly<T>(messages: AsyncIterable<T>): Promise<T> {
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) {
    throw new ConnectError("protocol error: missing request message", Code.Internal);
  }
  await it.return?.();
  return first.value;
}

function methodUrl(serverId: string, method: DescMethod): string {
  return `mqtt://${encodeURIComponent(serverId)}/${method.parent.typeName}/${method.name}`;
}

function brokerAddress(link: MqttLink): string {
  const { protocol, host, hostname, port } = link.client.options as {
    protocol?: string;
    host?: string;
    hostname?: string;
    port?: number;
  };
  const name = hostname ?? host;
  if (name === undefined) return "";
  return ` at ${protocol ?? "mqtt"}://${name}${port !== undefined ? `:${port}` : ""}`;
}

/** A cause in words: error codes and broker reason codes rather than MQTT.js class names. */
function describeError(e: unknown): string {
  if (e === undefined) return "the connection is down";
  if (typeof e !== "object" || e === null) return String(e);
  const { code, message, packet } = e as {
    code?: unknown;
    message?: unknown;
    packet?: { reasonCode?: number; granted?: number[] };
  };
  if (packet !== undefined) {
    const refused = packet.granted?.find((g) => g >= 0x80) ?? packet.reasonCode;
    return `the broker refused the subscription${refused !== undefined ? ` (reason code 0x${refused.toString(16)})` : ""}`;
  }
  const text = typeof message === "string" && message !== "" ? message : String(e);
  if (typeof code === "string" && !text.includes(code)) return `${code}: ${text}`;
  return text;
}
