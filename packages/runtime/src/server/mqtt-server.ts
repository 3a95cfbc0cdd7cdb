/**
 * `createMqttServer`: serves Connect service implementations to callers that
 * reach this process through an MQTT broker. The server subscribes to its
 * request topics once, announces itself with a retained presence and a last
 * will, and runs each call as a {@link ServerCall}.
 */
import { type DescFile, type DescService, type FileRegistry, fromBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createServiceImplSpec,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import type { MqttClient } from "mqtt";
import { DEFAULT_WINDOW } from "../flow/flow-credit.js";
import type { MessageLimit } from "../flow/frame-receiver.js";
import { ReassemblyBudget } from "../flow/reassembly-budget.js";
import { type Presence, Presence_State, PresenceSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { brokerAddress, mqttInputProblem } from "../link/broker-url.js";
import { type MqttConnectionInput, MqttLink } from "../link/mqtt-link.js";
import { encodePresence, newIncarnation } from "../link/presence.js";
import type { PublishFailureListener } from "../link/publish-coalescer.js";
import { ReconnectResync } from "../link/reconnect-resync.js";
import { isCertificateFailure } from "../link/tls-failure.js";
import {
  completeMethodSettings,
  ownSettings,
  type ServiceSettings,
  settingsFromDescriptor,
} from "../method-settings.js";
import {
  optionalBoolean,
  optionalFunctions,
  optionNames,
  refuseUnknownOptions,
  shownValue,
} from "../option-check.js";
import { type CallFrame, decodeCallFrames, encodeFrame } from "../wire/frame-codec.js";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_PUBLISH_BYTES,
  defaultReassemblyBytes,
  MIN_PUBLISH_BYTES,
  positiveInteger,
} from "../wire/limits.js";
import { errorToEnd } from "../wire/status.js";
import {
  clientIdProblem,
  encodeTopicSegment,
  type RequestAddress,
  serverClientId,
  TopicScheme,
} from "../wire/topic-scheme.js";
import { CallAdmission, type CallAdmissionLimits, soleCallerCapacity } from "./call-admission.js";
import { CompletedCallRecord } from "./completed-call-record.js";
import { DropLog, quoted } from "./drop-log.js";
import type { RawMethod, RawMethodResolver } from "./raw-method.js";
import { reflectionServiceNames, registryOfFiles, serveReflection } from "./reflection.js";
import { SeenCalls } from "./seen-calls.js";
import { type MethodEntry, ServerCall, type ServerCallHost } from "./server-call.js";

/** Where the server reports what it drops; defaults to `console`. */
export interface MqttServerLogger {
  /**
   * What the server could not do or refused and went on without: a
   * malformed or unauthorized frame dropped, a publish the broker
   * refused, a twin server, a lost broker connection. One line, no
   * trailing newline.
   */
  warn(message: string): void;
  /**
   * Changes back to normal that follow a warning (optional; `console` has
   * it): a gateway's upstream that is reachable again, say.
   */
  info?(message: string): void;
}

/** Options of {@link createMqttServer}. */
export interface MqttServerOptions {
  /** The broker: URL, MQTT.js options or an existing `MqttClient` to share. */
  readonly mqtt: MqttConnectionInput;
  /** The id callers address, e.g. a device id. Several replicas may share it (see `shared`). */
  readonly serverId: string;
  /**
   * Registers the services (`server.service(...)` or the generated
   * `register<Service>(server, impl)`). When given, {@link createMqttServer}
   * resolves only once the server's ONLINE presence is on the broker, so a
   * caller that learns of the server from the application (rather than from
   * presence) never finds it unannounced.
   */
  readonly routes?: (server: MqttServer) => void;
  /** First topic levels of every mqrpc topic; default `mqrpc`. Must match the callers'. */
  readonly topicPrefix?: string;
  /**
   * Answer gRPC server reflection (`grpc.reflection.v1.ServerReflection` and
   * `v1alpha`) for the services registered with `service()`, so that tools
   * list and describe them with no local `.proto` (default true). The
   * reflection services are registered with the first service. Raw methods
   * (`unknownService`) have no schema here: a gateway answers reflection for
   * them itself (see `serveReflection`).
   */
  readonly reflection?: boolean;
  /** Connect interceptors run around every handler. */
  readonly interceptors?: Interceptor[];
  /** Largest request message accepted, in bytes (default 4 MiB); larger ones get RESOURCE_EXHAUSTED. */
  readonly maxMessageBytes?: number;
  /** Largest MQTT packet published (default 128 KiB); bigger responses are chunked. */
  readonly maxPublishBytes?: number;
  /**
   * Serve through an MQTT shared subscription so that replicas with the same
   * `serverId` split the calls. `true` uses the server id as the share
   * group; a string names the group. Needs a broker with shared
   * subscriptions (MQTT 5 brokers; Mosquitto also on 3.1.1).
   */
  readonly shared?: boolean | string;
  /**
   * Calls whose handler runs at once (default 1000); calls that only wait
   * for their End to be acknowledged do not count. The last tenth of the
   * slots (at least one) goes only to callers running fewer calls than
   * their fair share (the slots divided among the callers with calls here,
   * itself included, plus one more; at least 1), so a lone caller runs at
   * most 900 by default. A new call that finds no slot for its caller
   * waits for one (see `maxQueuedCalls`); waiting calls start round-robin
   * across callers as slots free (docs/PROTOCOL.md section 17.1).
   */
  readonly maxConcurrentCalls?: number;
  /** Calls of one caller (client key) whose handler runs at once (default 1000); more wait. */
  readonly maxCallsPerClient?: number;
  /**
   * Calls that may wait for a slot, in all (default `maxConcurrentCalls`;
   * 0: none wait). A waiting call answers Pings, keeps its deadline and can
   * be cancelled; its request frames wait under flow control. The last
   * tenth of the places goes only to callers below their fair share of
   * them. A call that can neither start nor wait gets RESOURCE_EXHAUSTED
   * naming the limits; on `close()` waiting calls get UNAVAILABLE.
   */
  readonly maxQueuedCalls?: number;
  /** Calls of one caller that may wait for a slot (default a quarter of `maxQueuedCalls`). */
  readonly maxQueuedCallsPerClient?: number;
  /**
   * End frames of finished calls kept (up to 1 KiB each, for 5 minutes) to
   * send again to a caller that missed one (default 10000). Redelivered
   * requests are recognised by caller-session windows regardless
   * (docs/PROTOCOL.md section 8).
   */
  readonly completedCallMemory?: number;
  /**
   * Bytes that partly received (chunked) request messages may hold across
   * all calls (default 64 MiB, at least twice maxMessageBytes; must be at
   * least maxMessageBytes); one caller may hold a quarter of it (at least
   * maxMessageBytes). A message that finds no room waits: the caller is
   * asked to send it again once there is (backpressure, not an error).
   */
  readonly maxReassemblyBytes?: number;
  /** Request frames a caller may send ahead of the handler (default 64). */
  readonly receiveWindow?: number;
  /** How long `close()` lets calls in progress finish before cancelling them, in ms (default 5000). */
  readonly shutdownTimeoutMs?: number;
  /**
   * How long a call whose caller sends no heartbeats (Open.heartbeat_ms 0)
   * may go without any frame from the caller before the server ends it with
   * UNAVAILABLE, in ms (default 300000). Callers with heartbeats are ended
   * after three silent intervals instead (docs/PROTOCOL.md section 15.3).
   */
  readonly callIdleTimeoutMs?: number;
  /**
   * Receives a line per dropped frame (at most 10 a second, then a count of
   * those left out; topics quoted as JSON strings); default `console`.
   */
  readonly logger?: MqttServerLogger;
}

/**
 * An implementation of `S` for {@link MqttServer.service}: Connect's
 * `ServiceImpl` with every method optional (methods left out answer
 * UNIMPLEMENTED). Generated `register<Service>` functions take it.
 */
export type PartialServiceImpl<S extends DescService> = Partial<ServiceImpl<S>>;

/** A running mqrpc server. */
export interface MqttServer {
  /** The id callers address. */
  readonly serverId: string;
  /** This replica's id (its MQTT client id), used for sticky streams and presence. */
  readonly instanceId: string;
  /**
   * The MQTT.js client the server's connection runs on, to watch its
   * events (`connect`, `offline`, `error`, …), e.g. to log broker outages.
   * A client the server made from a URL or options is the server's: do
   * not end, reconnect or reconfigure it, and do not subscribe or publish
   * on it (close() ends it).
   */
  readonly mqttClient: MqttClient;
  /**
   * The logger the server reports through (the `logger` option, else
   * `console`), guarded: a call never throws, whatever the application's
   * logger does. For packages built on a server (the gateway, the network
   * bridge) to report in the same place.
   */
  readonly logger: MqttServerLogger;
  /**
   * Registers a service implementation. Methods left out answer
   * UNIMPLEMENTED. `settings` are the generated per-method MQTT settings;
   * for a method they leave out, the settings the generated `*_mqrpc.ts`
   * module registered apply once it is loaded (see registerServiceSettings),
   * otherwise the descriptor's options.
   */
  service<S extends DescService>(
    service: S,
    impl: PartialServiceImpl<S>,
    settings?: ServiceSettings<S>,
  ): MqttServer;
  /**
   * Serves calls to services not registered with {@link service} by raw
   * methods (serialized messages in and out, no schema), as grpc-go's
   * `UnknownServiceHandler` does: `resolve` is asked once per call, at its
   * Open, with the fully qualified service name and the method name, and
   * answers UNIMPLEMENTED when it returns undefined. A gateway in front of
   * another gRPC server uses it. Announces presence as `service()` does.
   * Several resolvers (a gateway and a network bridge on one server) are
   * asked in the order they were registered; the first method found serves
   * the call. A resolver that throws is logged and counts as no answer.
   *
   * @throws Error when `resolve` is not a function or the server is closed.
   */
  unknownService(resolve: RawMethodResolver): MqttServer;
  /**
   * Resolves once the broker has acknowledged the server's ONLINE presence
   * (announced when the first service is registered; PROTOCOL.md 15.1), from
   * when on callers find it online. Rejects when the announcement fails
   * (e.g. an ACL that refuses the presence topic, on MQTT 5) or the server
   * is closed first.
   */
  announced(): Promise<void>;
  /**
   * Resolves with the reason when the server stops serving by itself: its
   * connection left the client id to another process that serves as this
   * same server id and instance (PROTOCOL.md section 3, "Ids that come back
   * are unique"): the broker said the session was taken over (MQTT 5
   * reason 0x8E), or both saw each other's presence and this one started
   * later. The server is then down for good; {@link close} it, and exit or
   * alert. Never resolves while the server keeps its id, nor for a server
   * on an MQTT.js client passed in (its owner manages that connection).
   */
  takenOver(): Promise<Error>;
  /**
   * Stops taking calls (new ones, and those waiting for a slot, get
   * UNAVAILABLE), lets calls in progress finish for up to
   * `shutdownTimeoutMs`, cancels the rest with UNAVAILABLE, waits up to
   * 500 ms more for callers to acknowledge Ends already sent (a caller
   * that went away never does), announces the server offline and releases
   * the connection. A new server for the same server id on the same
   * connection starts once this one is closed.
   */
  close(): Promise<void>;
}

/**
 * Starts a server: connects, subscribes to the request topics and resolves
 * when it can take calls; with `routes`, registers the services and
 * resolves once the server is announced (see {@link MqttServer.announced}).
 * Presence is announced once the first service is registered, so callers
 * never see the server before its methods exist.
 *
 * @throws Error naming the option for bad options, or when the broker
 *   refuses the connection (credentials, client id, TLS certificates), the
 *   subscriptions or (with `routes`) the presence announcement.
 */
export async function createMqttServer(options: MqttServerOptions): Promise<MqttServer> {
  const server = new MqttServerImpl(options);
  await server.start();
  if (options.routes === undefined) return server;
  try {
    options.routes(server);
    if (!server.hasServices) {
      throw new Error("routes: registered no service (call server.service(...) in it)");
    }
    await server.announced();
  } catch (e) {
    await server.close();
    throw e;
  }
  return server;
}

/** What a server makes of its options, validated (see {@link serverSettings}). */
interface ServerSettings {
  readonly serverId: string;
  readonly topicPrefix: string | undefined;
  readonly interceptors: Interceptor[];
  readonly maxMessageBytes: number;
  readonly maxPublishBytes: number;
  readonly limits: CallAdmissionLimits;
  readonly receiveWindow: number;
  readonly reassemblyBytes: number;
  readonly callIdleTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly completedCallMemory: number;
  readonly reflection: boolean;
  readonly shareGroup: string | undefined;
  readonly logger: MqttServerLogger;
}

/**
 * Validates a server's options (all but the connection) and applies
 * their defaults.
 *
 * @throws Error naming the option for an unknown key or a bad value.
 */
function serverSettings(options: MqttServerOptions): ServerSettings {
  if (typeof options !== "object" || options === null) {
    throw new Error("createMqttServer needs options { mqtt, serverId }");
  }
  refuseUnknownOptions("createMqttServer", options, SERVER_OPTIONS);
  if (typeof options.serverId !== "string" || options.serverId === "") {
    throw new Error("serverId must be a non-empty string");
  }
  // Checks the prefix (the scheme throws naming it).
  new TopicScheme(options.topicPrefix);
  const maxMessageBytes = positiveInteger(
    "maxMessageBytes",
    options.maxMessageBytes,
    DEFAULT_MAX_MESSAGE_BYTES,
  );
  const reassemblyBytes = positiveInteger(
    "maxReassemblyBytes",
    options.maxReassemblyBytes,
    defaultReassemblyBytes(maxMessageBytes),
  );
  if (reassemblyBytes < maxMessageBytes) {
    throw new Error(
      `maxReassemblyBytes (${reassemblyBytes}) must be at least maxMessageBytes (${maxMessageBytes})`,
    );
  }
  if (options.shared !== undefined && typeof options.shared !== "boolean") {
    if (typeof options.shared !== "string") {
      throw new Error(
        `shared must be true, false or a share group name, not ${shownValue(options.shared)}`,
      );
    }
    if (!/^[A-Za-z0-9_-]+$/.test(options.shared)) {
      throw new Error(
        `shared: share group "${options.shared}" must use only A-Z, a-z, 0-9, "_" and "-"`,
      );
    }
  }
  return {
    serverId: options.serverId,
    topicPrefix: options.topicPrefix,
    interceptors: optionalFunctions<Interceptor>("interceptors", options.interceptors) ?? [],
    maxMessageBytes,
    maxPublishBytes: positiveInteger(
      "maxPublishBytes",
      options.maxPublishBytes,
      DEFAULT_MAX_PUBLISH_BYTES,
      MIN_PUBLISH_BYTES,
    ),
    limits: admissionLimits(options),
    receiveWindow: positiveInteger("receiveWindow", options.receiveWindow, DEFAULT_WINDOW),
    reassemblyBytes,
    callIdleTimeoutMs: positiveInteger("callIdleTimeoutMs", options.callIdleTimeoutMs, 300_000),
    shutdownTimeoutMs: positiveInteger("shutdownTimeoutMs", options.shutdownTimeoutMs, 5000, 0),
    completedCallMemory: positiveInteger(
      "completedCallMemory",
      options.completedCallMemory,
      10_000,
    ),
    reflection: optionalBoolean("reflection", options.reflection) ?? true,
    shareGroup:
      options.shared === true ? encodeTopicSegment(options.serverId) : options.shared || undefined,
    logger: guardedLogger(options.logger ?? console),
  };
}

/**
 * Checks `options` as {@link createMqttServer} does, without connecting:
 * for a package that builds a server later, or from options of its own
 * (the gateway checks its options before it learns its upstreams).
 *
 * @throws Error naming the option for an unknown key or a bad value, and
 *   `mqtt option: …` for a broker URL whose scheme is not an MQTT one.
 */
export function checkMqttServerOptions(options: MqttServerOptions): void {
  serverSettings(options);
  const problem = mqttInputProblem(options.mqtt);
  if (problem !== undefined) throw new Error(`mqtt option: ${problem}`);
}

/** Every option of {@link createMqttServer}; others are refused. */
const SERVER_OPTIONS = optionNames<MqttServerOptions>({
  mqtt: true,
  serverId: true,
  routes: true,
  topicPrefix: true,
  reflection: true,
  interceptors: true,
  maxMessageBytes: true,
  maxPublishBytes: true,
  shared: true,
  maxConcurrentCalls: true,
  maxCallsPerClient: true,
  maxQueuedCalls: true,
  maxQueuedCallsPerClient: true,
  completedCallMemory: true,
  maxReassemblyBytes: true,
  receiveWindow: true,
  shutdownTimeoutMs: true,
  callIdleTimeoutMs: true,
  logger: true,
});

/**
 * `logger` checked (an object with `warn`, and `info` if any, functions),
 * its calls made safe: a logger that throws must not take the server down
 * while it reports a stranger's malformed frame.
 *
 * @throws Error naming the option when it is not a logger.
 */
function guardedLogger(logger: unknown): MqttServerLogger {
  const candidate = logger as Partial<MqttServerLogger> | null;
  if (
    typeof candidate !== "object" ||
    candidate === null ||
    typeof candidate.warn !== "function" ||
    (candidate.info !== undefined && typeof candidate.info !== "function")
  ) {
    throw new Error(
      `logger must be an object with a warn(message) method (and optionally info), such as console; got ${shownValue(logger)}`,
    );
  }
  const { warn, info } = candidate as MqttServerLogger;
  const safe: MqttServerLogger = {
    warn: (message) => {
      try {
        warn.call(candidate, message);
      } catch {
        // The server goes on; the message is lost with the logger.
      }
    },
  };
  if (info === undefined) return safe;
  return {
    ...safe,
    info: (message) => {
      try {
        info.call(candidate, message);
      } catch {
        // As warn.
      }
    },
  };
}

/**
 * The admission limits of `options` (see MqttServerOptions), validated:
 * a tenth of the slots and of the places to wait (at least one) reserved
 * for callers below their fair share.
 *
 * @throws Error naming the option when one is not an integer in range.
 */
function admissionLimits(options: MqttServerOptions): CallAdmissionLimits {
  const maxRunning = positiveInteger("maxConcurrentCalls", options.maxConcurrentCalls, 1000);
  const maxWaiting = positiveInteger("maxQueuedCalls", options.maxQueuedCalls, maxRunning, 0);
  return {
    maxRunning,
    maxRunningPerCaller: positiveInteger("maxCallsPerClient", options.maxCallsPerClient, 1000),
    reservedSlots: Math.max(1, Math.floor(maxRunning / 10)),
    maxWaiting,
    maxWaitingPerCaller: positiveInteger(
      "maxQueuedCallsPerClient",
      options.maxQueuedCallsPerClient,
      Math.ceil(maxWaiting / 4),
      0,
    ),
    reservedWaiting: maxWaiting === 0 ? 0 : Math.max(1, Math.floor(maxWaiting / 10)),
  };
}

const RECORD_TTL_MS = 5 * 60_000;
/** Caller sessions whose calls are remembered (section 8); about 600 bytes each. */
const MAX_SESSIONS = 20_000;
/** How often calls are checked for callers that went silent. */
const SWEEP_MS = 1000;
const PACKET_OVERHEAD = 24;

class MqttServerImpl implements MqttServer, ServerCallHost {
  readonly serverId: string;
  readonly instanceId: string;
  readonly incarnation = newIncarnation();
  readonly shared: boolean;
  readonly interceptors: Interceptor[];
  readonly maxMessageBytes: number;
  readonly maxMessageLimit: MessageLimit;
  readonly receiveWindow: number;
  readonly reassemblyBudget: ReassemblyBudget;
  private readonly maxPublishBytes: number;
  /** Which new calls start, wait for a slot or are refused; keyed by call key. */
  private readonly admission: CallAdmission<string>;
  /** What presence announces as `max_calls_per_caller` (PROTOCOL.md 17.1). */
  private readonly maxCallsPerCaller: number;
  private readonly shutdownTimeoutMs: number;
  readonly callIdleTimeoutMs: number;
  private readonly shareGroup: string | undefined;
  private readonly scheme: TopicScheme;
  private readonly link: MqttLink;
  readonly logger: MqttServerLogger;

  get mqttClient(): MqttClient {
    return this.link.client;
  }

  /** Dropped input, at most 10 lines a second. */
  private readonly drops: DropLog;
  private readonly methods = new Map<string, Map<string, MethodEntry>>();
  private readonly calls = new Map<string, ServerCall>();
  private readonly completed: CompletedCallRecord;
  private readonly seen = new SeenCalls(RECORD_TTL_MS, MAX_SESSIONS);
  private readonly shutdown = new AbortController();
  private readonly filters: string[] = [];
  private announcing: Promise<void> | undefined;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private unroute: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private readonly rawResolvers: RawMethodResolver[] = [];
  private readonly reflection: boolean;
  private reflectionServed = false;
  /** The files of the registered services, for reflection; made when first asked. */
  private fileRegistry: FileRegistry | undefined;

  constructor(options: MqttServerOptions) {
    const settings = serverSettings(options);
    this.serverId = settings.serverId;
    this.scheme = new TopicScheme(settings.topicPrefix);
    this.interceptors = settings.interceptors;
    this.maxMessageBytes = settings.maxMessageBytes;
    this.maxMessageLimit = {
      bytes: this.maxMessageBytes,
      name: `server "${options.serverId}"'s maxMessageBytes`,
    };
    this.maxPublishBytes = settings.maxPublishBytes;
    this.admission = new CallAdmission(settings.limits);
    this.maxCallsPerCaller = soleCallerCapacity(settings.limits);
    this.receiveWindow = settings.receiveWindow;
    // One caller may hold a quarter of it (at least one whole message).
    this.reassemblyBudget = new ReassemblyBudget(
      settings.reassemblyBytes,
      Math.max(Math.floor(settings.reassemblyBytes / 4), this.maxMessageBytes),
    );
    this.callIdleTimeoutMs = settings.callIdleTimeoutMs;
    this.shutdownTimeoutMs = settings.shutdownTimeoutMs;
    this.completed = new CompletedCallRecord(settings.completedCallMemory, RECORD_TTL_MS);
    this.reflection = settings.reflection;
    this.shareGroup = settings.shareGroup;
    this.shared = this.shareGroup !== undefined;
    this.logger = settings.logger;
    this.drops = new DropLog(this.logger, `mqrpc server ${quoted(this.serverId)}`);
    // A replica's session is clean: with a persistent one, a broker keeps
    // handing a dead replica its share of new calls (Mosquitto: until the
    // session expires) and those calls are never run (PROTOCOL.md 16).
    this.link = MqttLink.acquire(
      options.mqtt,
      (clientId) => ({
        topic: this.scheme.presenceTopic(this.serverId, clientId),
        payload: encodePresence(
          clientId,
          Presence_State.DISCONNECTED,
          this.shared,
          this.incarnation,
          { startedMs: this.startedAt },
        ),
      }),
      this.shared ? "clean" : "persistent",
      this.shared ? undefined : serverClientId(this.serverId),
    );
    this.instanceId = this.link.clientId;
    if (!this.link.willInstalled) {
      this.logger.warn(
        `mqrpc server "${this.serverId}": no last will on this connection (a shared MqttClient, or options with their own will); ` +
          "if the process dies, callers see it online until their calls time out",
      );
    }
    const problem = clientIdProblem(this.instanceId);
    if (problem !== undefined) {
      void this.link.release();
      throw new Error(`mqtt option: ${problem}`);
    }
  }

  /** Aborts every handler's waits when the server shuts down. */
  get shutdownSource(): { readonly signal: AbortSignal } {
    return this.shutdown;
  }

  /** A call's handler part is over (or it ended waiting): the calls that get its slot start. */
  callEnded(call: ServerCall): void {
    this.startCalls(this.admission.end(call.key));
  }

  /** Starts calls that got a slot; one that is gone gives its slot on. */
  private startCalls(keys: readonly string[]): void {
    for (const key of keys) {
      const call = this.calls.get(key);
      if (call !== undefined) call.start();
      else this.startCalls(this.admission.end(key));
    }
  }

  /**
   * A call is over: forget it, and keep its End for a caller that missed
   * it. Told again when the End changed after (see ServerCall.publishFailed).
   */
  callFinished(call: ServerCall): void {
    if (this.calls.get(call.key) === call) this.calls.delete(call.key);
    this.completed.add(call.key, call.endFrame);
  }

  /**
   * A reply publish failed. A call whose frame was too large for the broker
   * ended the call in its place (`consequence`); otherwise the caller asks
   * for lost frames again, and its call times out if they never come.
   */
  publishFailed(error: unknown, topic: string, consequence?: string): void {
    // With a consequence, the error's own advice (maxPublishBytes, for
    // messages) may not apply: the consequence says what was too large.
    const failure =
      consequence === undefined
        ? String(error)
        : `${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}; ${consequence}`;
    this.logger.warn(`mqrpc server "${this.serverId}": reply to ${topic} failed: ${failure}`);
  }

  async start(): Promise<void> {
    const base = this.scheme.requestBase(this.serverId);
    // The server this one replaces on the connection (closed and made
    // again) still routes, subscribes and will announce OFFLINE for the
    // same instance: start when it is gone.
    await closingServers.get(this.link.client)?.get(base);
    this.unroute = this.link.routePrefix(base, (topic, payload) => this.onRequest(topic, payload));
    if (this.shareGroup === undefined) {
      this.filters.push(this.scheme.requestFilter(this.serverId));
      // Its own presence: a live ONLINE of this instance with another
      // incarnation is another process with this server id (see onOwnPresence).
      const own = this.scheme.presenceTopic(this.serverId, this.instanceId);
      this.filters.push(own);
      this.unrouteOwnPresence = this.link.routeExact(own, (_topic, payload, packet) =>
        this.onOwnPresence(payload, packet.retain, packet.dup),
      );
    } else {
      this.filters.push(`$share/${this.shareGroup}/${base}+/+/+`);
      this.filters.push(`${base}+/+/+/${encodeTopicSegment(this.instanceId)}`);
    }
    // The last will marks this instance offline whenever the link drops;
    // announce it again on every reconnect.
    this.link.client.on("connect", this.reannounce);
    if (this.link.client.connected) this.noteIdHeld();
    this.offResubscribed = this.link.onResubscribed(() => this.resync.reconnected());
    this.sweepTimer = setInterval(() => this.sweepCalls(), SWEEP_MS);
    (this.sweepTimer as { unref?: () => void }).unref?.();
    const subscribed: string[] = [];
    // A broker that refuses the credentials, the client id or the TLS
    // certificates refuses every retry too: fail the start rather than wait
    // for a connection forever.
    let onError: ((e: unknown) => void) | undefined;
    let stopWaitingNote = () => {};
    const refused = new Promise<never>((_resolve, reject) => {
      onError = (e) => {
        if (isLoginRefusal(e)) {
          reject(new Error(`mqtt option: the MQTT broker refused the connection: ${e.message}`));
        } else if (isCertificateFailure(e)) {
          const code = (e as { code?: unknown }).code;
          reject(
            new Error(
              `mqtt option: TLS with the MQTT broker failed (${String(code)}): ${e.message}; check the CA (ca), the client certificate (cert, key) and the host name`,
            ),
          );
        }
      };
      this.link.client.on("error", onError);
      stopWaitingNote = this.noteBrokerWait(reject);
    });
    try {
      const subscribeAll = async () => {
        for (const filter of this.filters) {
          await this.link.subscribe(filter);
          subscribed.push(filter);
        }
      };
      await Promise.race([subscribeAll(), refused]);
    } catch (e) {
      // Leave a shared MqttClient as it was found.
      clearInterval(this.sweepTimer);
      this.link.client.off("connect", this.reannounce);
      this.offResubscribed?.();
      this.unroute();
      this.unrouteOwnPresence?.();
      for (const filter of subscribed) await this.link.unsubscribe(filter);
      await this.link.release();
      throw e;
    } finally {
      stopWaitingNote();
      if (onError !== undefined) this.link.client.off("error", onError);
    }
  }

  service<S extends DescService>(
    service: S,
    impl: Partial<ServiceImpl<S>>,
    settings?: ServiceSettings<S>,
  ): MqttServer {
    if (this.closing !== undefined) throw new Error("the server is closed");
    if (this.methods.has(service.typeName)) {
      throw new Error(`service ${service.typeName} is already registered`);
    }
    const spec = createServiceImplSpec(service, impl);
    const entries = new Map<string, MethodEntry>();
    for (const method of service.methods) {
      const methodSpec = spec.methods[method.localName];
      if (methodSpec === undefined) continue;
      const generated = ownSettings(settings, method.localName);
      entries.set(method.name, {
        spec: methodSpec,
        settings:
          generated !== undefined
            ? completeMethodSettings(generated)
            : settingsFromDescriptor(method),
      });
    }
    this.methods.set(service.typeName, entries);
    this.files.push(service.file);
    this.fileRegistry = undefined;
    this.announceSoon();
    return this;
  }

  /** Announces ONLINE after this turn, so that services registered together go online together. */
  private announceSoon(): void {
    if (this.announcing !== undefined) return;
    if (this.reflection && !this.reflectionServed) {
      this.reflectionServed = true;
      if (!reflectionServiceNames.some((name) => this.methods.has(name))) {
        serveReflection(this, {
          services: () => [...this.methods.keys()],
          registry: () => this.registeredFiles(),
        });
      }
    }
    this.announcing = Promise.resolve().then(() => this.publishPresence(Presence_State.ONLINE));
    this.announcing.catch(this.presenceFailed);
  }

  unknownService(resolve: RawMethodResolver): MqttServer {
    if (this.closing !== undefined) throw new Error("the server is closed");
    if (typeof resolve !== "function") {
      throw new Error(
        "unknownService: resolve must be a function (service, method) => RawMethod | undefined",
      );
    }
    this.rawResolvers.push(resolve);
    this.announceSoon();
    return this;
  }

  /** The raw method for a call no registered service takes, from the first resolver that has one. */
  private rawEntry(address: RequestAddress): MethodEntry | undefined {
    if (this.rawResolvers.length === 0 || this.methods.has(address.service)) return undefined;
    for (const resolve of this.rawResolvers) {
      let raw: RawMethod | undefined;
      try {
        raw = resolve(address.service, address.method);
      } catch (e) {
        this.logger.warn(
          `mqrpc server "${this.serverId}": unknownService resolver threw for ${quoted(`${address.service}/${address.method}`)}: ${String(e)}`,
        );
        continue;
      }
      if (raw !== undefined) return { raw, settings: completeMethodSettings(raw.settings) };
    }
    return undefined;
  }

  private readonly files: DescFile[] = [];

  /** Every file the registered services need, as one registry (reflection answers from it). */
  private registeredFiles(): FileRegistry {
    this.fileRegistry ??= registryOfFiles(this.files);
    return this.fileRegistry;
  }

  get hasServices(): boolean {
    return this.methods.size > 0 || this.rawResolvers.length > 0;
  }

  announced(): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(new Error("the server is closed"));
    if (this.announcing === undefined) {
      return Promise.reject(
        new Error("no service is registered: presence is announced with the first"),
      );
    }
    return this.announcing;
  }

  takenOver(): Promise<Error> {
    return this.link.yielded;
  }

  close(): Promise<void> {
    if (this.closing === undefined) {
      const closing = this.shutdownGracefully();
      this.closing = closing;
      const base = this.scheme.requestBase(this.serverId);
      let byBase = closingServers.get(this.link.client);
      if (byBase === undefined) {
        byBase = new Map();
        closingServers.set(this.link.client, byBase);
      }
      const closed = closing.catch(() => {});
      byBase.set(base, closed);
      const registry = byBase;
      void closed.then(() => {
        if (registry.get(base) === closed) registry.delete(base);
      });
    }
    return this.closing;
  }

  /**
   * Publishes a frame of call `callId` to the caller's reply topic; a
   * failure is told to `onError`: the call's, or the server's own (which
   * logs it) for frames of no running call.
   */
  publishReply(
    clientKey: string,
    callId: number,
    frame: Uint8Array,
    onError: PublishFailureListener = this,
  ): void {
    this.link.sendFrame(
      this.scheme.replyTopic(clientKey, this.serverId),
      callId,
      frame,
      this.maxReplyFrameBytes(clientKey),
      onError,
    );
  }

  get brokerAnnouncedMaxPacketSize(): number | undefined {
    return this.link.client.serverProperties?.maximumPacketSize;
  }

  maxReplyFrameBytes(clientKey: string): number {
    const brokerMax = this.link.brokerMaxPacketSize ?? Number.POSITIVE_INFINITY;
    return (
      Math.min(this.maxPublishBytes, brokerMax) -
      this.scheme.replyTopic(clientKey, this.serverId).length -
      PACKET_OVERHEAD
    );
  }

  private publishPresence(state: Presence_State): Promise<void> {
    return this.link.publish(
      this.scheme.presenceTopic(this.serverId, this.instanceId),
      encodePresence(this.instanceId, state, this.shared, this.incarnation, {
        sinceMs: Date.now(),
        startedMs: this.startedAt,
        maxCallsPerCaller: this.maxCallsPerCaller,
      }),
      { retain: true },
    );
  }

  /** Announces `state`; a failure is logged, not thrown. */
  private announce(state: Presence_State): Promise<void> {
    return this.publishPresence(state).catch(this.presenceFailed);
  }

  private readonly presenceFailed = (e: unknown): void => {
    this.logger.warn(`mqrpc server "${this.serverId}": presence announcement failed: ${String(e)}`);
  };

  private onRequest(topic: string, payload: Uint8Array): void {
    const address = this.scheme.parseRequestTopic(this.serverId, topic);
    if (address === undefined) {
      this.drops.drop(`dropped a publish on ${quoted(topic)}: not a request topic`);
      return;
    }
    let frames: readonly CallFrame[];
    try {
      frames = decodeCallFrames(payload);
    } catch (e) {
      this.drops.drop(
        `dropped a malformed frame on ${quoted(topic)}: ${e instanceof Error ? e.message : String(e)}`,
      );
      return;
    }
    for (const frame of frames) this.onCallFrame(topic, address, frame);
  }

  private onCallFrame(topic: string, address: RequestAddress, frame: CallFrame): void {
    const key = `${address.clientKey}\n${frame.callId}`;
    const call = this.calls.get(key);
    if (call !== undefined) {
      call.onFrame(frame);
      return;
    }
    const done = this.completed.get(key);
    if (done !== undefined && frame.kind.case !== "open") {
      // A late or redelivered frame of a call that is over. A caller that
      // still asks about the call (Ping, or Credit asking to resend) missed
      // the End: send it again when it was kept.
      const asks =
        frame.kind.case === "ping" || (frame.kind.case === "credit" && frame.kind.value.resend);
      if (asks && done.end !== undefined)
        this.publishReply(address.clientKey, frame.callId, done.end);
      return;
    }
    if (frame.kind.case === "ping" && (address.instance !== undefined || !this.shared)) {
      // The caller believes in a call this server does not have: its Open
      // was lost on the way, or this is another incarnation of the server.
      // The caller tells which from the incarnation (PROTOCOL.md 15.3).
      this.publishReply(
        address.clientKey,
        frame.callId,
        encodeFrame({
          callId: frame.callId,
          kind: { case: "pong", value: { incarnation: this.incarnation, unknown: true } },
        }),
      );
      return;
    }
    if (frame.kind.case !== "open") return;
    if (frame.seq !== 0) {
      this.drops.drop(`dropped an open frame with seq ${frame.seq} on ${quoted(topic)}`);
      return;
    }
    if (!this.seen.admit(address.clientKey, frame.kind.value.session, frame.callId)) {
      // This call started here before: a redelivered or resent Open. It must
      // not run again. While its End is kept, a caller that missed it gets
      // it by asking (Ping); once it is gone, say so.
      if (done?.end === undefined) {
        this.refuse(
          address,
          frame.callId,
          new ConnectError(
            `call ${frame.callId} already ran on server "${this.serverId}" and its reply is no longer kept`,
            Code.Unavailable,
          ),
        );
      }
      return;
    }
    const entry = this.methods.get(address.service)?.get(address.method) ?? this.rawEntry(address);
    const refusal =
      this.closing !== undefined
        ? new ConnectError(`server "${this.serverId}" is shutting down`, Code.Unavailable)
        : entry === undefined
          ? new ConnectError(
              this.methods.has(address.service)
                ? `method ${address.service}/${address.method} is not implemented`
                : `service ${address.service} is not served by "${this.serverId}"`,
              Code.Unimplemented,
            )
          : undefined;
    if (refusal !== undefined || entry === undefined) {
      this.refuse(address, frame.callId, refusal);
      return;
    }
    const admitted = this.admission.offer(address.clientKey, key);
    if (admitted.kind === "refuse") {
      this.refuse(
        address,
        frame.callId,
        new ConnectError(
          `server "${this.serverId}" cannot take the call now: ${admitted.reason}`,
          Code.ResourceExhausted,
        ),
      );
      return;
    }
    const created = new ServerCall(
      this,
      key,
      address,
      frame.callId,
      entry,
      admitted.kind === "wait",
    );
    this.calls.set(key, created);
    created.onFrame(frame);
  }

  /** Ends a call that does not run here with `error`: an End at seq 0, not kept. */
  private refuse(address: RequestAddress, callId: number, error: ConnectError | undefined): void {
    this.publishReply(
      address.clientKey,
      callId,
      encodeFrame({
        callId,
        seq: 0,
        kind: { case: "end", value: errorToEnd(error, new Headers()) },
      }),
    );
  }

  /**
   * While the start waits for a broker it cannot reach, says so once
   * (`logger.warn`) and, when it is reached, that too (`logger.info`): a
   * start never fails for an absent broker (a device may boot before its
   * network), but it must not wait in silence. Not for an `MqttClient` the
   * application gave, whose connection is the application's to report.
   * Calls `fail` when the client will not retry (`reconnectPeriod` 0).
   * Returns the function that stops listening.
   */
  private noteBrokerWait(fail: (error: Error) => void): () => void {
    const client = this.link.client;
    if (client.connected || !this.link.owned) return () => {};
    let lastError: string | undefined;
    let warned = false;
    const where = () => brokerAddress(client.options);
    const onError = (e: Error) => {
      lastError = (e as { code?: string }).code ?? e.message;
    };
    const onClose = () => {
      if (this.closing) return;
      const reason = lastError ?? `no CONNACK within ${client.options.connectTimeout ?? 30_000} ms`;
      if (client.options.reconnectPeriod === 0) {
        fail(
          new Error(
            `mqtt option: cannot reach the MQTT broker at ${where()} (${reason}), and reconnectPeriod is 0: MQTT.js does not retry`,
          ),
        );
        return;
      }
      if (warned) return;
      warned = true;
      this.logger.warn(
        `mqrpc server ${quoted(this.serverId)}: cannot reach the MQTT broker at ${where()} (${reason}); waiting for it, retrying every ${client.options.reconnectPeriod ?? 1000} ms`,
      );
    };
    const onConnect = () => {
      if (warned) {
        this.logger.info?.(
          `mqrpc server ${quoted(this.serverId)}: reached the MQTT broker at ${where()}`,
        );
      }
      stop();
    };
    const stop = () => {
      client.off("error", onError);
      client.off("close", onClose);
      client.off("connect", onConnect);
    };
    client.on("error", onError);
    client.on("close", onClose);
    client.on("connect", onConnect);
    return stop;
  }

  /**
   * The link is back: announce again (the last will may have said
   * DISCONNECTED), and ask every call at once for request frames that may
   * have been lost meanwhile instead of waiting for its next progress check.
   */
  private readonly reannounce = (): void => {
    this.noteIdHeld();
    if (this.closing !== undefined) return;
    if (this.announcing !== undefined) void this.announce(Presence_State.ONLINE);
    this.resync.reconnected();
  };

  private offResubscribed: (() => void) | undefined;
  private unrouteOwnPresence: (() => void) | undefined;
  private lastTwinWarning = Number.NEGATIVE_INFINITY;

  /** Whether this server has seen its own ONLINE come back (see onOwnPresence). */
  private ownAnnouncementSeen = false;

  /**
   * The first connection of this server's link since the server started
   * (the link's CONNACK count) and when it was made, Unix ms: from then on
   * the client id was this server's, so a twin that holds it later took it
   * back (see onOwnPresence).
   */
  private idHeld: { readonly connection: number; readonly sinceMs: number } | undefined;

  private noteIdHeld(): void {
    this.idHeld ??= { connection: this.link.connections, sinceMs: Date.now() };
  }

  /**
   * This very instance announced by another incarnation: two processes run
   * with one server id and client id, and the broker hands the id from one
   * to the other. Brokers that say so (MQTT 5 reason 0x8E) stop the loser
   * (MqttLink); others (Mosquitto 2.0, any MQTT 3.1.1 broker) close the old
   * connection without a word, so the two settle it here: the one that
   * started later stays down (when its link is its own), and both say so
   * (the one that keeps the id at most every 30 s).
   *
   * The two share one session, so each learns of the other only when it
   * takes the id back: from the retained message of the subscription made
   * again after the reconnect (the other's ONLINE: Mosquitto, NATS), or
   * from the other's last will, which a broker that publishes wills on a
   * takeover (Aedes) sends at that moment, live to the session, and which
   * also replaces the other's retained ONLINE. A retained ONLINE before
   * this server saw its own come back is an earlier run's.
   *
   * A twin is surely alive when it held the id after this server did: an
   * ONLINE announced (`since_ms`) after this server's first connection, or
   * a will delivered live (not retained, not a redelivery) in a later
   * connection, which the broker published because the twin's connection
   * was there when this one took the id. A process that is gone (an
   * earlier run, whose announcement a NATS cluster may deliver late, or
   * whose half-open connection this server's first connection replaced)
   * cannot take the id back.
   */
  private onOwnPresence(payload: Uint8Array, retained: boolean, redelivered: boolean): void {
    let presence: Presence;
    try {
      presence = fromBinary(PresenceSchema, payload);
    } catch {
      return;
    }
    if (presence.instance !== this.instanceId) return;
    if (presence.incarnation === this.incarnation) {
      if (presence.state === Presence_State.ONLINE && !retained) this.ownAnnouncementSeen = true;
      return;
    }
    const held = this.idHeld;
    const laterConnection = held !== undefined && this.link.connections > held.connection;
    let alive: boolean;
    if (presence.state === Presence_State.ONLINE) {
      if (retained && !this.ownAnnouncementSeen) return;
      alive = laterConnection && Number(presence.sinceMs) >= (held?.sinceMs ?? Infinity);
    } else if (presence.state === Presence_State.DISCONNECTED) {
      // A will says nothing about a process unless it shows it alive.
      if (retained || redelivered || !laterConnection) return;
      alive = true;
    } else {
      return;
    }
    const twin = `mqrpc server ${quoted(this.serverId)}: another process serves as this server (client id ${quoted(this.instanceId)}, incarnation ${presence.incarnation}; this one ${this.incarnation})`;
    const advice = "run one process per server id, or use shared: true for replicas";
    // Both see each other; the one that started first keeps the id (its
    // calls and completed-call record stay), so that exactly one stops
    // handing the connection back and forth.
    const staysDown = `${twin}: this one stays down and leaves the id to it; ${advice}`;
    if (
      alive &&
      !this.link.hasYielded &&
      this.startedAfter(presence) &&
      this.link.yieldClientId(staysDown)
    ) {
      this.logger.warn(staysDown);
      // This server's ONLINE of the connection it now leaves would stay
      // retained once it is gone (it leaves with a DISCONNECT, so no will):
      // a caller would bind new calls to this incarnation and fail them
      // when the twin announces itself ("restarted while the call was in
      // progress"). Its will's word instead: the instance is reconnecting,
      // and callers wait for the twin's ONLINE (PROTOCOL.md 3, 15.2).
      void this.announce(Presence_State.DISCONNECTED);
      return;
    }
    const now = Date.now();
    if (now - this.lastTwinWarning < TWIN_WARNING_INTERVAL_MS) return;
    this.lastTwinWarning = now;
    this.logger.warn(
      `${twin}: the broker hands the connection from one to the other and calls fail until one stays down (the one that started later does); ${advice}`,
    );
  }

  /**
   * Whether this server started serving after `twin` did, by their
   * `started_ms`; by incarnation (the lower one counts as later) when a
   * start is unknown (an older server sends 0) or both are equal.
   */
  private startedAfter(twin: Presence): boolean {
    const twinStarted = Number(twin.startedMs);
    if (twinStarted > 0 && twinStarted !== this.startedAt) return twinStarted < this.startedAt;
    return twin.incarnation > this.incarnation;
  }

  /** When this server was made, Unix ms (`started_ms`). */
  private readonly startedAt = Date.now();

  private readonly resync = new ReconnectResync((first) => {
    for (const call of [...this.calls.values()]) call.resync(first);
  });

  /**
   * Sweeps the calls, unless the link is down or not subscribed again yet:
   * a caller's silence means nothing while the server could not hear it,
   * and counts from when it could hear again.
   */
  private sweepCalls(): void {
    if (!this.link.subscriptionsCurrent) return;
    const now = Date.now();
    for (const call of [...this.calls.values()])
      call.sweep(now, this.link.subscriptionsCurrentSince);
  }

  private async shutdownGracefully(): Promise<void> {
    // Calls waiting for a slot never started: they end now, so that their
    // callers may go elsewhere, rather than take slots during the grace.
    const refusal = new ConnectError(
      `server "${this.serverId}" is shutting down`,
      Code.Unavailable,
    );
    for (const key of this.admission.takeWaiting()) this.calls.get(key)?.shutdown(refusal);
    clearInterval(this.sweepTimer);
    this.link.client.off("connect", this.reannounce);
    this.offResubscribed?.();
    this.resync.cancel();
    const inFlight = [...this.calls.values()];
    if (inFlight.length > 0) {
      const started = Date.now();
      await withTimeout(Promise.all(inFlight.map((c) => c.handlerOver)), this.shutdownTimeoutMs);
      // Ends sent: their acknowledgements take a round trip, and a caller
      // that went away sends none, so they get a short grace, not the rest
      // of shutdownTimeoutMs.
      const draining = [...this.calls.values()].filter((c) => c.draining);
      const left = this.shutdownTimeoutMs - (Date.now() - started);
      if (draining.length > 0 && left > 0) {
        await withTimeout(
          Promise.all(draining.map((c) => c.finished)),
          Math.min(left, END_ACK_GRACE_MS),
        );
      }
    }
    const reason = new ConnectError(`server "${this.serverId}" is shutting down`, Code.Unavailable);
    this.shutdown.abort(reason);
    for (const call of this.calls.values()) call.shutdown(reason);
    await Promise.all([...this.calls.values()].map((c) => c.finished));
    // A server that left its client id to a twin owns neither the session's
    // subscriptions nor the instance's presence any more: the twin does.
    const owner = !this.link.hasYielded;
    if (owner) for (const filter of this.filters) await this.link.unsubscribe(filter);
    this.unroute?.();
    this.unrouteOwnPresence?.();
    // Announce the departure if the broker can hear it; a dead link has left
    // the last will (DISCONNECTED) in place already.
    if (owner && this.announcing !== undefined && this.link.client.connected) {
      await this.announce(Presence_State.OFFLINE);
    }
    await this.link.release();
  }
}

/** How often a server says again that another process serves as it, in ms. */
const TWIN_WARNING_INTERVAL_MS = 30_000;

/** How long close() waits for callers to acknowledge Ends already sent, in ms. */
const END_ACK_GRACE_MS = 500;

/** Waits for `promise`, or `ms`, whichever comes first. */
async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise,
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

/** Servers closing, per MQTT client and request topic base (see start). */
const closingServers = new WeakMap<MqttClient, Map<string, Promise<void>>>();

/**
 * CONNACK codes a retry does not change: identifier rejected, bad user name
 * or password, not authorized (MQTT 3.1.1: 2, 4, 5; MQTT 5: 0x85, 0x86,
 * 0x87, 0x8C bad authentication method).
 */
const LOGIN_REFUSALS = new Set([2, 4, 5, 0x85, 0x86, 0x87, 0x8c]);

function isLoginRefusal(e: unknown): e is Error {
  return (
    e instanceof Error &&
    e.message.startsWith("Connection refused") &&
    LOGIN_REFUSALS.has((e as { code?: unknown }).code as number)
  );
}
