/**
 * The HTTP/2 connection to one upstream gRPC server. Connect-node's
 * `Http2SessionManager` holds the session: it connects on the first
 * request, opens a new connection after a GOAWAY or a drop, and tracks the
 * streams. Around it, a watcher keeps the upstream connected (reconnecting
 * with backoff, 250 ms doubling to 5 s), and the gateway hears when an
 * upstream it reflects may have changed: back after being down, or a call
 * going out on a new connection (a restart or a GOAWAY between two checks).
 */
import {
  type ClientHttp2Stream,
  constants,
  type Http2Session,
  type OutgoingHttpHeaders,
  type SecureClientSessionOptions,
} from "node:http2";
import * as net from "node:net";
import type { ConnectionOptions } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { abortable } from "@mqrpc/runtime";
import { MAX_HEADER_LIST_PAIRS } from "../http2-header-limits.js";
import { UpstreamConnection } from "./upstream-connection.js";
import type { UpstreamAddress } from "./upstream-url.js";

/**
 * The state of the connection to an upstream, by gRPC's connectivity
 * names: `idle` (no connection, none needed yet), `connecting`, `ready`,
 * `transient_failure` (the last attempt failed; retrying) and `shutdown`
 * (the gateway closed it).
 */
export type UpstreamConnectivity =
  | "idle"
  | "connecting"
  | "ready"
  | "transient_failure"
  | "shutdown";

/**
 * TLS options for an `https:` upstream (Node's `tls.connect` options of the
 * same names): `ca` to trust roots other than the system's, `cert` and
 * `key` (PEM) for a client certificate, `servername` for SNI and the name
 * checked against the certificate when it differs from the URL's host.
 */
export type UpstreamTlsOptions = Pick<
  ConnectionOptions,
  "ca" | "cert" | "key" | "passphrase" | "pfx" | "servername" | "rejectUnauthorized"
>;

const FIRST_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5_000;
/** How long a new connection has to answer HTTP/2 by default, ms: gRPC's connect timeout. */
export const DEFAULT_ANSWER_TIMEOUT_MS = 20_000;
/** How long a keepalive PING has to be acknowledged by default, ms: gRPC's keepalive timeout. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 20_000;
/** How often a connected upstream is checked for a dropped connection, ms. */
const WATCH_INTERVAL_MS = 250;

const CONNECTIVITY: Record<ReturnType<Http2SessionManager["state"]>, UpstreamConnectivity> = {
  closed: "idle",
  connecting: "connecting",
  // A keepalive PING on a connection that was quiet: it is up until it fails.
  verifying: "ready",
  open: "ready",
  idle: "ready",
  error: "transient_failure",
};

/** Sessions {@link guardSession} has seen. */
const guarded = new WeakSet<Http2Session>();

/** Sessions the upstream closed with GOAWAY ENHANCE_YOUR_CALM `too_many_pings` (gRFC A8). */
const pingsRefused = new WeakSet<Http2Session>();
const TOO_MANY_PINGS = "too_many_pings";

/**
 * Gives `session` an `error` listener, and gives it `answerTimeoutMs` to
 * show it speaks HTTP/2: it must acknowledge a PING (which every HTTP/2
 * server does at once, after its SETTINGS) or be destroyed, failing the
 * calls on it. A port that accepts TCP and says nothing (a hung process, a
 * proxy whose backend is down, another protocol that waits for the client)
 * would otherwise hold calls without a deadline forever; gRPC clients give
 * a connection 20 s the same way.
 *
 * The listener: Connect-node's manager destroys a session with an error
 * when a GOAWAY arrives while it has no streams; if a request has moved the
 * manager on to a new session before Node emits that error, nobody listens
 * for it any more and it would be thrown, ending the process. The
 * manager's own listeners see every failure that matters.
 */
function guardSession(session: Http2Session | undefined, answerTimeoutMs: number): void {
  if (session === undefined || guarded.has(session)) return;
  guarded.add(session);
  session.on("error", () => {});
  session.on("goaway", (code: number, _lastStreamId: number, data?: Buffer) => {
    if (
      code === constants.NGHTTP2_ENHANCE_YOUR_CALM &&
      data?.toString("latin1") === TOO_MANY_PINGS
    ) {
      pingsRefused.add(session);
    }
  });
  if (session.destroyed || session.closed) return;
  const timer = setTimeout(() => {
    session.destroy(
      new Error(
        `no HTTP/2 answer within ${answerTimeoutMs} ms of connecting: is a gRPC server listening there?`,
      ),
    );
  }, answerTimeoutMs);
  timer.unref();
  const answered = () => clearTimeout(timer);
  session.once("close", answered);
  const ping = () => {
    try {
      // Called with an error too when the session goes first: nothing to wait for then.
      session.ping(answered);
    } catch {
      answered();
    }
  };
  if (session.connecting) session.once("connect", ping);
  else ping();
}

/**
 * The manager's current session, for {@link guardSession}, when it has one
 * (sessions that never carry a stream are seen only here). Connect-node
 * keeps it in a private field; undefined if that ever changes.
 */
function currentSession(manager: Http2SessionManager): Http2Session | undefined {
  const conn = (manager as unknown as { s?: { conn?: unknown } }).s?.conn;
  return typeof (conn as { request?: unknown } | undefined)?.request === "function"
    ? (conn as Http2Session)
    : undefined;
}

/** Marks a new connection the watcher has told of already. */
const ANNOUNCED = Symbol("announced");

const ignore = (): void => {};

/** Closes a stream nobody will use (CANCEL), its errors ignored. */
function dropStream(stream: ClientHttp2Stream): void {
  stream.on("error", ignore);
  stream.close(constants.NGHTTP2_CANCEL);
}

/** A connection failure's words, without Connect's `[code]` prefix. */
function describeError(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage;
  return e instanceof Error ? e.message : String(e);
}

/**
 * HTTP/2 keepalive on an upstream connection (gRPC's client-side keepalive,
 * https://github.com/grpc/proposal/blob/master/A8-client-side-keepalive.md):
 * while calls are open and nothing has been read for `timeMs`, a PING is
 * sent; no acknowledgement within `timeoutMs` closes the connection and
 * fails its calls with UNAVAILABLE. A GOAWAY `too_many_pings` doubles
 * `timeMs`. Connect-node's session manager does the pinging.
 */
export interface UpstreamKeepalive {
  /** Silence before a PING, ms. */
  readonly timeMs: number;
  /** How long the PING has to be acknowledged, ms. */
  readonly timeoutMs: number;
}

/** One upstream's HTTP/2 connection. */
export class UpstreamChannel {
  /** The connection new calls go out on. */
  private connection: UpstreamConnection;
  /** Connections that retired during a burst of cancels and still carry calls (upstream-connection.ts). */
  private readonly retired = new Set<UpstreamConnection>();
  /** The connection each stream went out on. */
  private readonly connectionOf = new WeakMap<ClientHttp2Stream, UpstreamConnection>();
  private readonly makeSessions: () => Http2SessionManager;
  private closed = false;
  private wake: (() => void) | undefined;
  private onReconnect: (() => void) | undefined;
  /** The connection the last stream went out on; ANNOUNCED after the watcher told of a new one. */
  private session: Http2Session | typeof ANNOUNCED | undefined;

  constructor(
    readonly address: UpstreamAddress,
    tls: UpstreamTlsOptions | undefined,
    /** How long a new connection has to answer HTTP/2 (see guardSession), ms. */
    private readonly answerTimeoutMs: number = DEFAULT_ANSWER_TIMEOUT_MS,
    /** PINGs on a connection with calls, or none when undefined. */
    private readonly keepalive?: UpstreamKeepalive,
  ) {
    const { socketPath } = address;
    const options: SecureClientSessionOptions = {
      maxHeaderListPairs: MAX_HEADER_LIST_PAIRS,
      ...tls,
      ...(socketPath !== undefined ? { createConnection: () => net.connect(socketPath) } : {}),
    };
    this.makeSessions = () =>
      new Http2SessionManager(
        address.authority,
        keepalive === undefined
          ? {}
          : { pingIntervalMs: keepalive.timeMs, pingTimeoutMs: keepalive.timeoutMs },
        options,
      );
    this.connection = this.newConnection();
  }

  /** The session manager new calls go out on. */
  private get sessions(): Http2SessionManager {
    return this.connection.sessions;
  }

  private newConnection(): UpstreamConnection {
    return new UpstreamConnection(this.makeSessions(), (retiring) => {
      if (this.closed || retiring !== this.connection) return;
      for (const old of this.retired) if (old.isClosed) this.retired.delete(old);
      this.retired.add(retiring);
      this.connection = this.newConnection();
      // The next stream's new connection is the gateway's doing, not news of the upstream.
      this.session = ANNOUNCED;
    });
  }

  /** The connection's state now. */
  connectivity(): UpstreamConnectivity {
    return this.closed ? "shutdown" : CONNECTIVITY[this.sessions.state()];
  }

  /**
   * Opens a stream for `path` (`/package.Service/Method`), connecting first
   * when there is no connection. `headers` is asked for once connected, so
   * that a `grpc-timeout` in it counts from then. A `signal` that aborts
   * while the connection is being made ends the wait, and no stream is
   * opened: the upstream never sees a call its caller gave up on.
   *
   * @throws the signal's reason when it aborts first; ConnectError
   *   UNAVAILABLE naming the upstream when it cannot be reached (or the
   *   channel is closed); INVALID_ARGUMENT when Node refuses a header (a
   *   value with characters HTTP/2 does not allow).
   */
  async request(
    path: string,
    headers: () => OutgoingHttpHeaders,
    signal: AbortSignal,
  ): Promise<ClientHttp2Stream> {
    if (this.closed) throw this.unavailable("the gateway closed its connection");
    let connection = this.connection;
    const state = connection.sessions.state();
    if (state !== "open" && state !== "idle") {
      if ((await abortable(connection.sessions.connect(), signal)) === "error") {
        throw this.unavailable(this.describeFailure(connection.sessions.error()));
      }
    }
    signal.throwIfAborted();
    if (this.closed) throw this.unavailable("the gateway closed its connection");
    // Retired and closed meanwhile (a burst of cancels): the new one takes it.
    if (connection.isClosed) connection = this.connection;
    let stream: ClientHttp2Stream | undefined;
    try {
      while (stream === undefined) {
        // The wait can be long (a keepalive check of a quiet connection):
        // a caller that gives up meanwhile stops waiting, and the stream
        // made for it later is closed unused.
        const pending = connection.sessions.request("POST", path, headers(), {});
        const candidate = await abortable(pending, signal).catch((e: unknown) => {
          if (signal.aborted) pending.then(dropStream, ignore);
          throw e;
        });
        if (!connection.isClosed) {
          stream = candidate;
          break;
        }
        // The connection closed while the request waited (it retired during
        // a burst of cancels, or the gateway closed), and its manager
        // connected again for it: close that too, and make the call on the
        // connection that replaced it, if any.
        dropStream(candidate);
        connection.abortAgain();
        if (this.closed) break;
        connection = this.connection;
      }
    } catch (e) {
      if (signal.aborted && e === signal.reason) throw e;
      const code = (e as { code?: unknown }).code;
      if (code === "ERR_INVALID_CHAR" || code === "ERR_HTTP2_INVALID_HEADER_VALUE") {
        throw new ConnectError(
          `a request header cannot travel to upstream ${this.address.url}: ${(e as Error).message}`,
          Code.InvalidArgument,
        );
      }
      throw this.unavailable(this.describeFailure(e));
    }
    if (stream === undefined) throw this.unavailable("the gateway closed its connection");
    // A stream's failure reaches its call through 'close' and its state; one
    // the caller gave up on has nobody else listening, and an 'error' without
    // a listener (a GOAWAY with an error code destroys the connection) would
    // end the process.
    stream.on("error", ignore);
    this.connectionOf.set(stream, connection);
    connection.track(stream);
    if (signal.aborted) {
      this.cancel(stream);
      throw signal.reason;
    }
    this.noteSession(stream.session);
    return stream;
  }

  /**
   * Notes the connection a stream went out on: a new one after another
   * means the upstream may have changed (a restart, a GOAWAY handing over
   * to a new server), which the watcher's `onReconnect` hears about even
   * when the connection never looked down between two checks.
   */
  private noteSession(session: Http2Session | undefined): void {
    if (session === undefined || session === this.session) return;
    guardSession(session, this.answerTimeoutMs);
    const before = this.session;
    this.session = session;
    if (before === ANNOUNCED) return;
    if (before !== undefined) this.onReconnect?.();
  }

  /**
   * Cancels a stream of this channel (RST_STREAM CANCEL) unless it has
   * closed: at once, or, during a burst of cancels, as soon as the
   * upstream's rapid-reset budget allows (reset-pacer.ts).
   */
  cancel(stream: ClientHttp2Stream): void {
    (this.connectionOf.get(stream) ?? this.connection).cancel(stream);
  }

  /** Tells the session manager a stream read response bytes (keepalive bookkeeping). */
  noteRead(stream: ClientHttp2Stream): void {
    (this.connectionOf.get(stream) ?? this.connection).sessions.notifyResponseByteRead(stream);
  }

  /**
   * Why a stream or connection failed, in words: Connect's message without
   * its `[code]` prefix; a keepalive PING that went unanswered, and a
   * `session` the upstream closed for too many PINGs, said as such.
   */
  describeFailure(e: unknown, session?: Http2Session): string {
    const words = describeError(e);
    if (this.keepalive === undefined) return words;
    if (words === "PING timed out") {
      return `no answer to a keepalive PING within ${this.keepalive.timeoutMs} ms: the connection is lost`;
    }
    if (session !== undefined && pingsRefused.has(session)) {
      return `the upstream closed the connection for keepalive PINGs more frequent than it permits (GOAWAY ENHANCE_YOUR_CALM ${TOO_MANY_PINGS}); set upstreamKeepaliveTimeMs at or above its permitted interval (gRPC servers: 5 min unless configured)`;
    }
    return words;
  }

  /** An UNAVAILABLE error naming the upstream. */
  unavailable(reason: string): ConnectError {
    return new ConnectError(`upstream ${this.address.url}: ${reason}`, Code.Unavailable);
  }

  /**
   * Keeps the upstream connected: reconnects with backoff while it is
   * down, calls `onDown` with the reason when a connection that was up is
   * lost and cannot be made again at once, and `onReconnect` each time it
   * is back after having been down (not for the first connection). Runs
   * until {@link close}.
   */
  watch(onReconnect: () => void, onDown: (reason: string) => void = () => {}): void {
    this.onReconnect = onReconnect;
    void this.keepConnected(onReconnect, onDown);
  }

  private async keepConnected(
    onReconnect: () => void,
    onDown: (reason: string) => void,
  ): Promise<void> {
    let backoff = FIRST_BACKOFF_MS;
    let hasBeenReady = false;
    let wasDown = false;
    let watched = this.connection;
    while (!this.closed) {
      if (watched !== this.connection) {
        // Retired for a burst of cancels: the new connection is no news of the upstream.
        watched = this.connection;
        if (!wasDown) {
          const connected = (await this.sessions.connect()) !== "error";
          if (connected) continue;
        }
      }
      const state = this.sessions.state();
      if (state === "verifying") {
        // A call's keepalive check of a quiet connection, not a drop: a
        // failed check shows as closed or error at the next look.
        await this.sleep(WATCH_INTERVAL_MS);
        continue;
      }
      if (state === "open" || state === "idle") {
        guardSession(currentSession(this.sessions), this.answerTimeoutMs);
        if (wasDown && hasBeenReady) {
          // The next stream's connection is this one: not news again.
          this.session = ANNOUNCED;
          onReconnect();
        }
        hasBeenReady = true;
        wasDown = false;
        backoff = FIRST_BACKOFF_MS;
        await this.sleep(WATCH_INTERVAL_MS);
        continue;
      }
      const wentDown = hasBeenReady && !wasDown;
      if (hasBeenReady) wasDown = true;
      const connected = (await this.sessions.connect()) !== "error";
      if (wentDown && !connected && !this.closed) {
        onDown(this.describeFailure(this.sessions.error()));
      }
      if (!connected && !this.closed) {
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  /** Closes the connection; calls still running fail with UNAVAILABLE. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    const reason = this.unavailable("the gateway closed its connection");
    this.connection.abort(reason);
    for (const retiring of this.retired) retiring.abort(reason);
    this.retired.clear();
  }
}
