/**
 * `createMqttTransport`: a Connect `Transport` that carries calls over MQTT,
 * so `createClient`, interceptors and everything built on Connect work
 * unchanged. Portable: no Node-only imports on this path.
 */
import {
  create,
  type DescMessage,
  type DescMethod,
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
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { runStreamingCall, runUnaryCall } from "@connectrpc/connect/protocol";
import { abortable } from "./abortable.js";
import { CallLiveness } from "./call-liveness.js";
import { ClientCall } from "./client-call.js";
import { DEFAULT_WINDOW } from "./flow-credit.js";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_PUBLISH_BYTES,
  defaultReassemblyBytes,
  MAX_TIMER_MS,
  MIN_PUBLISH_BYTES,
  positiveInteger,
} from "./limits.js";
import { settingsForCall } from "./method-settings.js";
import { type MqttConnectionInput, MqttLink } from "./mqtt-link.js";
import { PresenceWatch } from "./presence.js";
import { ReassemblyBudget } from "./reassembly-budget.js";
import { ReplyRouter } from "./reply-router.js";
import { clientIdProblem, TopicScheme } from "./topic-scheme.js";

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
   * never announced itself is unavailable, in milliseconds (default 1000).
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
   * frames are asked for again.
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
  /** Fails calls in flight with CANCELED and releases the MQTT connection. */
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
 */
export function createMqttTransport(options: MqttTransportOptions): MqttTransport {
  if (typeof options.serverId !== "string" || options.serverId === "") {
    throw new Error("serverId must be a non-empty string");
  }
  const scheme = new TopicScheme(options.topicPrefix);
  const maxMessageBytes = positiveInteger(
    "maxMessageBytes",
    options.maxMessageBytes,
    DEFAULT_MAX_MESSAGE_BYTES,
  );
  const maxMessage = { bytes: maxMessageBytes, name: "the transport's maxMessageBytes" };
  const maxPublishBytes = positiveInteger(
    "maxPublishBytes",
    options.maxPublishBytes,
    DEFAULT_MAX_PUBLISH_BYTES,
    MIN_PUBLISH_BYTES,
  );
  const presenceTimeoutMs = positiveInteger(
    "presenceTimeoutMs",
    options.presenceTimeoutMs,
    1000,
    0,
  );
  const window = positiveInteger("receiveWindow", options.receiveWindow, DEFAULT_WINDOW);
  const reassemblyBudget = new ReassemblyBudget(
    positiveInteger(
      "maxReassemblyBytes",
      options.maxReassemblyBytes,
      defaultReassemblyBytes(maxMessageBytes),
      maxMessageBytes,
    ),
  );
  const heartbeatMs = positiveInteger("heartbeatMs", options.heartbeatMs, 10_000, 0);
  const offlineGraceMs = positiveInteger("offlineGraceMs", options.offlineGraceMs, 3000, 0);
  const connectGraceMs = positiveInteger("connectGraceMs", options.connectGraceMs, 3000, 0);
  const link = MqttLink.acquire(options.mqtt);
  const problem = clientIdProblem(link.clientId);
  if (problem !== undefined) {
    void link.release();
    throw new Error(`mqtt option: ${problem}`);
  }
  // Shared with the other transports on this connection; released on close,
  // so a shared MqttClient is left as it was found.
  const routerLease = link.acquireResource(
    `reply:${scheme.prefix}`,
    () => new ReplyRouter(link, scheme),
  );
  const presenceLease = link.acquireResource(
    `presence:${scheme.prefix}:${options.serverId}`,
    () => {
      const watch = new PresenceWatch(link, scheme, options.serverId, presenceTimeoutMs);
      watch.ready = watch.start();
      return watch;
    },
  );
  const router = routerLease.value;
  const presence = presenceLease.value;
  let started = false;
  const ready = Promise.all([router.ready, presence.ready]).then(() => {
    started = true;
  });
  ready.catch(() => {});
  const closing = new AbortController();
  const serverLabel = `server "${options.serverId}"`;
  const liveness = new CallLiveness(presence, serverLabel, offlineGraceMs);
  const brokerState = new BrokerState(link);

  /** Whether presence says some instance serves now (read afresh: messages change it). */
  const serverOnline = (): boolean => presence.availability === "online";

  /** Whether `serverId` went offline so recently that it may be reconnecting. */
  function recentlyOnline(): number {
    const since = presence.offlineSince;
    return since === undefined ? 0 : Math.max(0, since + offlineGraceMs - Date.now());
  }

  /**
   * Starts a call once the connection and the server's presence allow it.
   * Only calls that must wait for either build a combined signal (caller,
   * transport closing, deadline); calls in flight are tracked and cancelled
   * by close() directly, which keeps the hot path free of listeners.
   */
  function startCall(
    method: DescMethod,
    signal: AbortSignal | undefined,
    deadline: number | undefined,
    header: Headers,
    values: ContextValues | undefined,
    unary: boolean,
  ): ClientCall | Promise<ClientCall> {
    if (closing.signal.aborted) throw closing.signal.reason;
    if (started && presence.availability === "online" && link.client.connected) {
      return createCall(method, signal, deadline, header, values, unary);
    }
    const wait = waitSignal(signal, deadline);
    return untilServerReady(wait.signal, values)
      .finally(wait.cleanup)
      .then(() => createCall(method, signal, deadline, header, values, unary));
  }

  const forget = (call: ClientCall) => liveness.forget(call);
  const topics = new WeakMap<DescMethod, string>();
  const topicOf = (method: DescMethod): string => {
    let topic = topics.get(method);
    if (topic === undefined) {
      topic = scheme.requestTopic(
        options.serverId,
        method.parent.typeName,
        method.name,
        router.clientKey,
      );
      topics.set(method, topic);
    }
    return topic;
  };
  const sharedInstances = () => presence.onlineInstances();
  const replyTopic = scheme.replyTopic(router.clientKey, options.serverId);

  /**
   * The one instance online and its incarnation, for a server that is not
   * replicated; worked out again only when presence changes, not per call.
   */
  let sole: { instance: string | undefined; incarnation: number | undefined } | undefined;
  const stopSole = presence.onChange(() => {
    sole = undefined;
  });
  function soleInstance(): { instance: string | undefined; incarnation: number | undefined } {
    if (sole !== undefined) return sole;
    const online = presence.shared ? [] : presence.onlineInstances();
    const instance = online.length === 1 ? online[0] : undefined;
    sole = {
      instance,
      incarnation: instance === undefined ? undefined : presence.incarnationOf(instance),
    };
    return sole;
  }

  function createCall(
    method: DescMethod,
    signal: AbortSignal | undefined,
    deadline: number | undefined,
    header: Headers,
    values: ContextValues | undefined,
    unary: boolean,
  ): ClientCall {
    const bound = soleInstance();
    const call = new ClientCall({
      link,
      router,
      scheme,
      serverId: options.serverId,
      method,
      topic: topicOf(method),
      replyTopic,
      signal,
      deadline,
      unary,
      header,
      maxMessage,
      maxPublishBytes,
      window,
      settings: settingsForCall(method, values),
      heartbeatMs,
      reassemblyBudget,
      sharedInstances: presence.shared ? sharedInstances : undefined,
      instance: bound.instance,
      incarnation: bound.incarnation,
      onFinish: forget,
    });
    if (!call.over) liveness.add(call);
    return call;
  }

  /**
   * Waits for the broker connection (at most connectGraceMs, unless the
   * call waits for its server) and, per the wait-for-server setting, the
   * server.
   */
  async function untilServerReady(
    linked: AbortSignal,
    values: ContextValues | undefined,
  ): Promise<void> {
    const wait = values?.get(waitForServerKey) ?? options.waitForServer ?? false;
    if (!started || !link.client.connected) {
      const grace = wait ? undefined : AbortSignal.timeout(connectGraceMs);
      const signal = grace === undefined ? linked : AbortSignal.any([linked, grace]);
      await abortable(Promise.all([ready, link.connected(signal)]), signal).catch((e: unknown) => {
        if (linked.aborted) throw e;
        throw new ConnectError(brokerState.unreachable(e, connectGraceMs), Code.Unavailable);
      });
    }
    if (presence.availability === "online") return;
    const grace = recentlyOnline();
    if (wait) {
      await presence.online(linked);
    } else if (grace > 0) {
      const timeout = AbortSignal.timeout(grace);
      await presence.online(AbortSignal.any([linked, timeout])).catch((e: unknown) => {
        if (!timeout.aborted || linked.aborted) throw e;
      });
      if (!serverOnline()) await abortable(presence.recheck(), linked);
      if (!serverOnline()) {
        throw new ConnectError(`${serverLabel} is offline`, Code.Unavailable);
      }
    } else {
      await abortable(presence.settle(), linked);
      // An announcement may have been lost while this connection stalled.
      if (!serverOnline()) await abortable(presence.recheck(), linked);
      const availability = presence.availability;
      if (availability === "offline") {
        throw new ConnectError(`${serverLabel} is offline`, Code.Unavailable);
      }
      if (availability === "unknown") {
        throw new ConnectError(
          `${serverLabel} has not announced itself on this broker`,
          Code.Unavailable,
        );
      }
    }
  }

  /** The caller's signal, the transport's closing and the deadline, as one signal. */
  function waitSignal(signal: AbortSignal | undefined, deadline: number | undefined) {
    const signals = [closing.signal];
    if (signal !== undefined) signals.push(signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (deadline !== undefined) {
      const expired = new AbortController();
      const expire = () =>
        expired.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
      const left = deadline - Date.now();
      if (left <= 0) expire();
      else timer = setTimeout(expire, Math.min(left, MAX_TIMER_MS));
      signals.push(expired.signal);
    }
    return { signal: AbortSignal.any(signals), cleanup: () => clearTimeout(timer) };
  }

  /** What runUnaryCall and runStreamingCall take besides the request. */
  function callOptions(signal: AbortSignal | undefined, timeoutMs: number | undefined) {
    return {
      interceptors,
      ...(signal !== undefined ? { signal } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    };
  }

  /** The request fields shared by unary and streaming calls. */
  function requestCommon(
    method: DescMethod,
    header: HeadersInit | undefined,
    values: ContextValues | undefined,
  ) {
    return {
      service: method.parent,
      requestMethod: "POST",
      url: methodUrl(options.serverId, method),
      header: new Headers(header),
      contextValues: values ?? createContextValues(),
    };
  }

  const interceptors = options.interceptors ?? [];

  /**
   * A unary call without interceptors: what Connect's runUnaryCall does
   * (normalize the request, deadline, cancellation, errors as ConnectError),
   * without the linked AbortControllers it builds for every call. The
   * deadline is a timer in the call; a caller's signal gets one listener.
   */
  async function directUnary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: MessageInitShape<I>,
    values: ContextValues | undefined,
  ): Promise<UnaryResponse<I, O>> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    let call: ClientCall | undefined;
    try {
      const request = toBinary(method.input, create(method.input, input));
      const starting = startCall(method, signal, deadline, new Headers(header), values, true);
      call = starting instanceof Promise ? await starting : starting;
      const opening = call.open(request, true);
      if (opening !== undefined) await opening;
      await call.done;
    } catch (e) {
      throw signal?.aborted
        ? ConnectError.from(signal.reason, Code.Canceled)
        : ConnectError.from(e);
    }
    return unaryResponse(call, method);
  }

  return {
    unary(method, signal, timeoutMs, header, input, contextValues) {
      if (interceptors.length === 0) {
        return directUnary(method, signal, timeoutMs, header, input, contextValues);
      }
      const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
      return runUnaryCall({
        ...callOptions(signal, timeoutMs),
        req: {
          stream: false,
          ...requestCommon(method, header, contextValues),
          method,
          message: input,
        },
        next: async (req) => {
          const call = await startCall(
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
    },

    stream(method, signal, timeoutMs, header, input, contextValues) {
      const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
      return runStreamingCall({
        ...callOptions(signal, timeoutMs),
        req: {
          stream: true,
          ...requestCommon(method, header, contextValues),
          method,
          message: input,
        },
        next: async (req) => {
          const call = await startCall(
            req.method,
            req.signal,
            deadline,
            req.header,
            req.contextValues,
            false,
          );
          if (method.methodKind === "server_streaming") {
            const single = await firstOnly(req.message);
            await call.open(toBinary(method.input, single), true);
          } else {
            await call.open(undefined, false);
            pumpRequests(call, method.input, req.message);
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
    },

    async close() {
      liveness.close();
      brokerState.close();
      stopSole();
      const closed = new ConnectError("the transport was closed", Code.Canceled);
      closing.abort(closed);
      for (const call of liveness.inFlight()) call.abandon(closed);
      await Promise.all([presenceLease.release(), routerLease.release()]);
      await link.release();
    },
  };
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
function pumpRequests<I extends DescMessage>(
  call: ClientCall,
  schema: I,
  requests: AsyncIterable<Parameters<typeof toBinary<I>>[1]>,
): void {
  void (async () => {
    try {
      for await (const message of requests) {
        await call.send(toBinary(schema, message));
      }
      await call.halfClose();
    } catch (e) {
      call.abandon(ConnectError.from(e, Code.Canceled));
    }
  })();
}

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
          it
            .next()
            .then((r) => (r.done === true ? finish() : { done: false, value: decode(r.value) })),
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

/**
 * What a transport knows about its broker connection beyond "up or down":
 * the last error the MQTT client reported, to name the cause when a call
 * cannot reach the broker.
 */
class BrokerState {
  private lastError: unknown;
  private readonly onError = (e: unknown) => {
    this.lastError = e;
  };

  constructor(private readonly link: MqttLink) {
    link.client.on("error", this.onError);
  }

  close(): void {
    this.link.client.off("error", this.onError);
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
