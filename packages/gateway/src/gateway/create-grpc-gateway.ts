/**
 * `createGrpcGateway`: serves existing gRPC servers ("upstreams", in any
 * language) over MQTT, as one mqrpc server id. To a caller it is a native
 * mqrpc server (same topics, frames, presence, flow control, replicas);
 * each call becomes one HTTP/2 gRPC call to the upstream that serves its
 * service, with the message bytes untouched.
 */
import {
  checkMqttServerOptions,
  createMqttServer,
  DEFAULT_MAX_MESSAGE_BYTES,
  MAX_TIMER_MS,
  type MethodSettings,
  type MqttServer,
  type MqttServerOptions,
  serveReflection,
} from "@mqrpc/runtime";
import { readDescriptorSet } from "./descriptor-set.js";
import { MethodMap, registryOf, type SchemaSource, type UpstreamSchema } from "./method-map.js";
import { qualifyTypeNames } from "./type-names.js";
import { Upstream, type UpstreamConnectivity, type UpstreamTlsOptions } from "./upstream.js";
import {
  DEFAULT_ANSWER_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  type UpstreamKeepalive,
} from "./upstream-channel.js";
import { REFLECTION_SERVICES, reflectUpstream } from "./upstream-reflection.js";

/** One upstream gRPC server of a {@link GrpcGateway}. */
export interface GrpcUpstreamOptions {
  /**
   * Where the upstream listens: `http://host:port` (cleartext HTTP/2, as
   * gRPC servers listen by default), `https://host:port` (TLS, the
   * system's roots unless `tls` says otherwise) or
   * `unix:/path/to.sock`.
   */
  readonly url: string;
  /**
   * Fully qualified names of the services to route to this upstream, e.g.
   * `acme.power.v1.PowerService`. Without `descriptorSet` no schema is
   * needed or learned: calls travel as bidi streams, which carries every
   * method kind, and reflection lists the services without describing
   * them. With `descriptorSet`, narrows the set's services to these.
   */
  readonly services?: readonly string[];
  /**
   * The upstream's schema as a FileDescriptorSet — the bytes, or a path to
   * a file — as `buf build -o image.binpb` or `protoc
   * --descriptor_set_out=x.binpb --include_imports` write it. Every
   * service in it is routed here (unless `services` narrows them), and the
   * gateway's reflection describes them.
   *
   * Without `services` or `descriptorSet`, the services and their schema
   * are learned from the upstream by gRPC server reflection (v1, falling
   * back to v1alpha) at start and again each time the upstream comes back
   * after being unreachable, or a call goes out on a new connection to it
   * (a restart or a GOAWAY between two checks).
   */
  readonly descriptorSet?: Uint8Array | string;
  /**
   * TLS for an `https:` upstream: `ca` (PEM) to trust other roots than the
   * system's, `cert` and `key` (PEM) for a client certificate,
   * `servername` when the certificate names another host than the URL.
   * Refused for `http:` and `unix:` URLs.
   */
  readonly tls?: UpstreamTlsOptions;
  /**
   * MQTT settings (batching) for the responses of this upstream's methods,
   * over those the schema's mqrpc options give (with a schema) and the
   * runtime's defaults.
   */
  readonly settings?: Partial<MethodSettings>;
}

/** Options of {@link createGrpcGateway}: the server's options, and the upstreams. */
export interface GrpcGatewayOptions
  extends Omit<MqttServerOptions, "routes" | "interceptors" | "reflection"> {
  /** The upstream gRPC servers, at least one. Each service is served by one of them. */
  readonly upstreams: readonly GrpcUpstreamOptions[];
  /**
   * Answer gRPC server reflection over MQTT for the union of the
   * upstreams' schemas (default true), so tools list and describe the
   * gateway's services with no local `.proto`.
   */
  readonly reflection?: boolean;
  /**
   * How long the start waits for upstreams learned by reflection, in ms
   * (default 10000): an upstream that is not up yet is waited for this
   * long before {@link createGrpcGateway} fails naming it.
   */
  readonly startTimeoutMs?: number;
  /**
   * How long a new connection to an upstream has to show it speaks HTTP/2
   * (acknowledge a PING), in ms (default 20000, gRPC's connect timeout). A
   * port that accepts TCP but never answers (a hung process, a proxy whose
   * backend is down) is then dropped, and the calls waiting on it fail
   * UNAVAILABLE naming the upstream, instead of waiting for their deadline,
   * or forever without one.
   */
  readonly upstreamConnectTimeoutMs?: number;
  /**
   * HTTP/2 keepalive to upstreams, gRPC's "keepalive time" (client-side
   * keepalive, gRFC A8), in ms; default off, as in gRPC clients. While
   * calls are open on a connection and nothing has been read from it for
   * this long, the gateway sends a PING; one not acknowledged within
   * `upstreamKeepaliveTimeoutMs` closes the connection, and its calls fail
   * UNAVAILABLE naming the upstream, instead of waiting for their deadline
   * (or forever without one) on an upstream whose host or network went
   * silent without closing the connection. Idle connections are not pinged.
   *
   * gRPC servers refuse pings more frequent than they permit (C-core, Go
   * and Java: one per 5 minutes unless configured, e.g. Python's
   * `grpc.http2.min_ping_interval_without_data_ms`): they answer with a
   * GOAWAY `too_many_pings`, which fails the calls open on that
   * connection, after which the gateway doubles its interval. Set it at or
   * above what the upstream permits. Below 10000 (the least gRPC-Go and
   * gRPC-Java clients use) the gateway warns at start through the server's
   * `logger`, and uses it.
   */
  readonly upstreamKeepaliveTimeMs?: number;
  /**
   * How long an upstream has to acknowledge a keepalive PING, in ms
   * (default 20000, gRPC's keepalive timeout). Only with
   * `upstreamKeepaliveTimeMs`.
   */
  readonly upstreamKeepaliveTimeoutMs?: number;
}

/** A routed service and the upstream that serves it. */
export interface GrpcGatewayRoute {
  /** Fully qualified service name. */
  readonly service: string;
  /** The upstream's URL as given. */
  readonly upstream: string;
}

/** What a gateway knows of one upstream right now. */
export interface GrpcGatewayUpstream {
  /**
   * The upstream's URL as given in its options ({@link GrpcUpstreamOptions.url}),
   * the same string as {@link GrpcGatewayRoute.upstream}.
   */
  readonly url: string;
  /** How its services became known. */
  readonly source: SchemaSource;
  /**
   * The connection's state, by gRPC's connectivity names: `ready` while
   * connected, `connecting`, `transient_failure` while it cannot connect
   * (retrying with backoff, 250 ms to 5 s), `idle` before the first
   * connection, `shutdown` once closed.
   */
  readonly connectivity: UpstreamConnectivity;
  /** Services routed to it. */
  readonly services: readonly string[];
  /** Whether the gateway has its schema (method kinds, reflection answers). */
  readonly schema: boolean;
}

/** A running gateway. */
export interface GrpcGateway {
  /** The server id callers address. */
  readonly serverId: string;
  /** The mqrpc server underneath (presence, `announced()`, instance id). */
  readonly server: MqttServer;
  /** Every routed service, sorted by name, with its upstream. */
  services(): GrpcGatewayRoute[];
  /** Each upstream, in the order of the options. */
  upstreams(): GrpcGatewayUpstream[];
  /**
   * Learns the services of the upstreams configured for reflection again,
   * now (the gateway does it by itself when an upstream reconnects).
   * Rejects with the first upstream that could not be asked; the others
   * are updated all the same, and a failed one keeps what it had.
   */
  refresh(): Promise<void>;
  /**
   * Stops taking calls, lets calls in progress finish for up to the
   * server's `shutdownTimeoutMs` (their upstream calls go on meanwhile),
   * cancels the rest, announces the server offline and closes the upstream
   * channels.
   */
  close(): Promise<void>;
}

const DEFAULT_START_TIMEOUT_MS = 10_000;

/** Every option of {@link createGrpcGateway}; others are refused. */
const GATEWAY_OPTIONS: ReadonlySet<string> = new Set(
  Object.keys({
    mqtt: true,
    serverId: true,
    upstreams: true,
    reflection: true,
    startTimeoutMs: true,
    upstreamConnectTimeoutMs: true,
    upstreamKeepaliveTimeMs: true,
    upstreamKeepaliveTimeoutMs: true,
    topicPrefix: true,
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
  } satisfies Record<keyof GrpcGatewayOptions, true>),
);

interface UpstreamSetup {
  readonly options: GrpcUpstreamOptions;
  readonly option: string;
  readonly upstream: Upstream;
}

/**
 * Starts a gateway: learns each upstream's services (from `services`, a
 * descriptor set, or server reflection), checks that no service is offered
 * by two upstreams, then serves them as `serverId` and resolves once the
 * server is announced online.
 *
 * Each call goes to the upstream serving its service, as one HTTP/2 gRPC
 * call: the caller's remaining deadline becomes the upstream's
 * `grpc-timeout`; a Cancel and a caller that vanished cancel the upstream
 * call (RST_STREAM CANCEL), and so does the deadline, 1 s after it passed,
 * when the upstream has not ended the call itself; request metadata goes
 * upstream and response headers and trailers come back (`-bin` included;
 * pseudo-headers, `grpc-*` and connection headers are not copied); status
 * code, message and details (`grpc-status-details-bin`) arrive intact.
 * An upstream that cannot be reached, or that resets a call, fails the
 * call with UNAVAILABLE (or its own status) naming the upstream's URL;
 * other calls go on. A service no upstream serves is UNIMPLEMENTED.
 *
 * @throws Error naming the option for bad options; naming the upstream
 *   when its descriptor set cannot be read, its reflection fails within
 *   `startTimeoutMs`, or its schema does not resolve; naming both
 *   upstreams when they offer the same service; and as
 *   `createMqttServer` does when the broker refuses the server.
 */
export async function createGrpcGateway(options: GrpcGatewayOptions): Promise<GrpcGateway> {
  if (typeof options !== "object" || options === null) {
    throw new Error("createGrpcGateway needs options { mqtt, serverId, upstreams }");
  }
  for (const key of Object.keys(options)) {
    if (!GATEWAY_OPTIONS.has(key)) {
      throw new Error(
        `${key} is not an option of createGrpcGateway (it takes ${[...GATEWAY_OPTIONS].join(", ")})`,
      );
    }
  }
  const {
    upstreams: upstreamOptions,
    reflection,
    startTimeoutMs,
    upstreamConnectTimeoutMs,
    upstreamKeepaliveTimeMs,
    upstreamKeepaliveTimeoutMs,
    ...serverOptions
  } = options;
  const startTimeout = checkTimeout("startTimeoutMs", startTimeoutMs, DEFAULT_START_TIMEOUT_MS);
  const connectTimeout = checkTimeout(
    "upstreamConnectTimeoutMs",
    upstreamConnectTimeoutMs,
    DEFAULT_ANSWER_TIMEOUT_MS,
  );
  const keepalive = checkKeepalive(upstreamKeepaliveTimeMs, upstreamKeepaliveTimeoutMs);
  if (reflection !== undefined && typeof reflection !== "boolean") {
    throw new Error("reflection must be a boolean");
  }
  // The server's options are checked now, not after the upstreams are learned.
  checkMqttServerOptions({ ...serverOptions, reflection: false });
  const maxMessageBytes = serverOptions.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const setups = checkUpstreams(upstreamOptions).map(
    (o, i): UpstreamSetup => ({
      options: o,
      option: `upstreams[${i}]`,
      upstream: new Upstream({
        url: o.url,
        option: `upstreams[${i}]`,
        maxMessageBytes,
        connectTimeoutMs: connectTimeout,
        ...(keepalive !== undefined ? { keepalive } : {}),
        ...(o.tls !== undefined ? { tls: o.tls } : {}),
      }),
    }),
  );
  const closeUpstreams = () => {
    for (const s of setups) s.upstream.close();
  };
  let server: MqttServer | undefined;
  try {
    const schemas = await Promise.all(setups.map((s) => learnSchema(s, startTimeout, true)));
    const map = new MethodMap();
    setups.forEach((s, i) => {
      map.add(s.upstream, schemas[i] as UpstreamSchema, s.options.settings);
    });
    server = await createMqttServer({
      ...serverOptions,
      reflection: false,
      routes: (s) => {
        s.unknownService(map.resolve);
        if (reflection !== false) {
          serveReflection(s, {
            services: () => map.services().map((r) => r.service),
            registry: () => map.registry(),
            withoutSchema:
              "the gateway routes it by name only: give its upstream a descriptorSet (mqrpc gateway: --upstream URL=@image.binpb), or leave out services to learn the schema by the upstream's reflection",
          });
        }
      },
    });
    if (keepalive !== undefined && keepalive.timeMs < MIN_GRPC_KEEPALIVE_TIME_MS) {
      server.logger.warn(
        `gateway: upstreamKeepaliveTimeMs is ${keepalive.timeMs} ms, below the ${MIN_GRPC_KEEPALIVE_TIME_MS / 1000} s gRPC clients use at least; gRPC servers in C-core (Python, C++), Go and Java permit one PING per 5 min unless configured and answer more with a GOAWAY too_many_pings, which fails the calls on the connection`,
      );
    }
    const gateway = new GrpcGatewayImpl(server, map, setups, startTimeout);
    gateway.watchUpstreams();
    return gateway;
  } catch (e) {
    closeUpstreams();
    await server?.close();
    throw e;
  }
}

/**
 * The least keepalive time gRPC clients use (gRPC-Go and gRPC-Java raise a
 * lower setting to it): the gateway takes less, for upstreams configured to
 * permit it, and says so at start.
 */
const MIN_GRPC_KEEPALIVE_TIME_MS = 10_000;

/** A timeout option's value: `fallback` when unset, else a positive number of ms a timer can wait. */
function checkTimeout(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > MAX_TIMER_MS) {
    throw new Error(
      `${option} must be a positive number of ms up to ${MAX_TIMER_MS}, not ${String(value)}`,
    );
  }
  return value;
}

/** The keepalive options as the channel takes them: undefined while `upstreamKeepaliveTimeMs` is unset. */
function checkKeepalive(
  timeMs: number | undefined,
  timeoutMs: number | undefined,
): UpstreamKeepalive | undefined {
  const timeout = checkTimeout(
    "upstreamKeepaliveTimeoutMs",
    timeoutMs,
    DEFAULT_KEEPALIVE_TIMEOUT_MS,
  );
  if (timeMs === undefined) {
    if (timeoutMs !== undefined) {
      throw new Error(
        "upstreamKeepaliveTimeoutMs needs upstreamKeepaliveTimeMs: keepalive PINGs are off without it",
      );
    }
    return undefined;
  }
  return { timeMs: checkTimeout("upstreamKeepaliveTimeMs", timeMs, 0), timeoutMs: timeout };
}

const UPSTREAM_OPTIONS: ReadonlySet<string> = new Set([
  "url",
  "services",
  "descriptorSet",
  "tls",
  "settings",
]);

function checkUpstreams(value: unknown): GrpcUpstreamOptions[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new Error(
      'upstreams must list at least one upstream, e.g. [{ url: "http://127.0.0.1:50051" }]',
    );
  }
  return value.map((u: unknown, i): GrpcUpstreamOptions => {
    if (typeof u !== "object" || u === null) {
      throw new Error(`upstreams[${i}] must be an object { url, services?, descriptorSet? }`);
    }
    const upstream = u as GrpcUpstreamOptions;
    const unknown = Object.keys(upstream).find((k) => !UPSTREAM_OPTIONS.has(k));
    if (unknown !== undefined) {
      throw new Error(
        `upstreams[${i}].${unknown} is not an option (an upstream takes ${[...UPSTREAM_OPTIONS].join(", ")}${unknown === "credentials" || unknown === "channelOptions" ? "; TLS settings go in tls" : ""})`,
      );
    }
    if (upstream.tls !== undefined) {
      if (typeof upstream.tls !== "object" || upstream.tls === null) {
        throw new Error(`upstreams[${i}].tls must be an object { ca?, cert?, key?, servername? }`);
      }
      if (typeof upstream.url !== "string" || !upstream.url.startsWith("https:")) {
        throw new Error(
          `upstreams[${i}].tls is for https: upstreams; url is ${String(upstream.url)}`,
        );
      }
    }
    if (upstream.services !== undefined) {
      if (
        !Array.isArray(upstream.services) ||
        upstream.services.some((s) => typeof s !== "string" || !/^[A-Za-z_][\w.]*$/.test(s))
      ) {
        throw new Error(
          `upstreams[${i}].services must list fully qualified service names, e.g. ["acme.power.v1.PowerService"]`,
        );
      }
      const reserved = upstream.services.find((s) => REFLECTION_SERVICES.has(s));
      if (reserved !== undefined) {
        throw new Error(
          `upstreams[${i}].services: ${reserved} is answered by the gateway itself (option reflection)`,
        );
      }
    }
    return upstream;
  });
}

/** What an upstream serves, by the way its options say. */
async function learnSchema(
  setup: UpstreamSetup,
  timeoutMs: number,
  waitForReady: boolean,
): Promise<UpstreamSchema> {
  const { options, option, upstream } = setup;
  if (options.descriptorSet !== undefined) {
    const files = qualifyTypeNames(
      await readDescriptorSet(options.descriptorSet, `${option}.descriptorSet`),
    );
    let inSet: string[];
    try {
      const registry = registryOf(files);
      inSet = [];
      for (const file of registry.files) for (const s of file.services) inSet.push(s.typeName);
    } catch (e) {
      throw new Error(
        `${option}.descriptorSet does not resolve (it must include every imported file): ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    const services = options.services ?? inSet;
    const absent = services.find((s) => !inSet.includes(s));
    if (absent !== undefined) {
      throw new Error(`${option}.services: ${absent} is not in ${option}.descriptorSet`);
    }
    return { source: "descriptorSet", services, files };
  }
  if (options.services !== undefined) {
    return { source: "services", services: [...options.services], files: [] };
  }
  const reflected = await reflectUpstream(upstream, timeoutMs, waitForReady);
  return {
    source: "reflection",
    services: reflected.services,
    files: qualifyTypeNames(reflected.files),
  };
}

class GrpcGatewayImpl implements GrpcGateway {
  readonly serverId: string;
  private closing: Promise<void> | undefined;
  /** Upstreams being learned again, and whether another round was asked for meanwhile. */
  private readonly relearning = new Map<Upstream, { again: boolean }>();

  constructor(
    readonly server: MqttServer,
    private readonly map: MethodMap,
    private readonly setups: readonly UpstreamSetup[],
    private readonly timeoutMs: number,
  ) {
    this.serverId = server.serverId;
  }

  services(): GrpcGatewayRoute[] {
    return this.map.services();
  }

  upstreams(): GrpcGatewayUpstream[] {
    const routes = this.map.services();
    return this.setups.map(({ upstream }) => {
      const schema = this.map.schemaOf(upstream);
      return {
        url: upstream.url,
        source: schema?.source ?? "services",
        connectivity: upstream.connectivity(),
        services: routes.filter((r) => r.upstream === upstream.url).map((r) => r.service),
        schema: (schema?.files.length ?? 0) > 0,
      };
    });
  }

  watchUpstreams(): void {
    for (const setup of this.setups) {
      let down = false;
      setup.upstream.watch(
        () => {
          if (down)
            this.server.logger.info?.(`gateway: upstream ${setup.options.url} is reachable again`);
          down = false;
          if (this.isReflected(setup)) void this.relearn(setup).catch(() => {});
        },
        (reason) => {
          down = true;
          this.server.logger.warn(
            `gateway: upstream ${setup.options.url} is unreachable (${reason}): calls to its services fail with UNAVAILABLE; reconnecting`,
          );
        },
      );
    }
  }

  private isReflected(setup: UpstreamSetup): boolean {
    return setup.options.services === undefined && setup.options.descriptorSet === undefined;
  }

  async refresh(): Promise<void> {
    const results = await Promise.allSettled(
      this.setups.filter((s) => this.isReflected(s)).map((s) => this.relearn(s)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  }

  /** Learns one upstream's services again; one round at a time per upstream. */
  private async relearn(setup: UpstreamSetup): Promise<void> {
    const running = this.relearning.get(setup.upstream);
    if (running !== undefined) {
      running.again = true;
      return;
    }
    const state = { again: false };
    this.relearning.set(setup.upstream, state);
    try {
      do {
        state.again = false;
        if (this.closing !== undefined) return;
        let taken: string[];
        try {
          const schema = await learnSchema(setup, this.timeoutMs, false);
          if (this.closing !== undefined) return;
          taken = this.map.replace(setup.upstream, schema);
        } catch (e) {
          this.server.logger.warn(
            `mqrpc gateway "${this.serverId}": ${e instanceof Error ? e.message : String(e)}; keeping its services as they were`,
          );
          throw e;
        }
        if (taken.length > 0) {
          this.server.logger.warn(
            `mqrpc gateway "${this.serverId}": upstream ${setup.upstream.url} now offers ${taken.join(", ")}, served by another upstream already; calls keep going there`,
          );
        }
      } while (state.again);
    } finally {
      this.relearning.delete(setup.upstream);
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.server.close();
      } finally {
        for (const s of this.setups) s.upstream.close();
      }
    })();
    return this.closing;
  }
}
