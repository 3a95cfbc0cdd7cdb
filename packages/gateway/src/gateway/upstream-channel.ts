/**
 * The HTTP/2 connection to one upstream gRPC server. Connect-node's
 * `Http2SessionManager` holds the session: it connects on the first
 * request, opens a new connection after a GOAWAY or a drop, and tracks the
 * streams. Around it, a watcher keeps the upstream connected (reconnecting
 * with backoff, 250 ms doubling to 5 s) so that the gateway learns when an
 * upstream it reflects comes back.
 */
import type {
  ClientHttp2Stream,
  OutgoingHttpHeaders,
  SecureClientSessionOptions,
} from "node:http2";
import * as net from "node:net";
import type { ConnectionOptions } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
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
/** How often a connected upstream is checked for a dropped connection, ms. */
const WATCH_INTERVAL_MS = 250;

const CONNECTIVITY: Record<ReturnType<Http2SessionManager["state"]>, UpstreamConnectivity> = {
  closed: "idle",
  connecting: "connecting",
  verifying: "connecting",
  open: "ready",
  idle: "ready",
  error: "transient_failure",
};

/** One upstream's HTTP/2 connection. */
export class UpstreamChannel {
  private readonly sessions: Http2SessionManager;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(
    readonly address: UpstreamAddress,
    tls: UpstreamTlsOptions | undefined,
  ) {
    const { socketPath } = address;
    const options: SecureClientSessionOptions = {
      ...tls,
      ...(socketPath !== undefined ? { createConnection: () => net.connect(socketPath) } : {}),
    };
    this.sessions = new Http2SessionManager(address.authority, {}, options);
  }

  /** The connection's state now. */
  connectivity(): UpstreamConnectivity {
    return this.closed ? "shutdown" : CONNECTIVITY[this.sessions.state()];
  }

  /**
   * Opens a stream for `path` (`/package.Service/Method`) with `headers`,
   * connecting first when there is no connection.
   *
   * @throws ConnectError UNAVAILABLE naming the upstream when it cannot be
   *   reached (or the channel is closed); INVALID_ARGUMENT when Node refuses
   *   a header (a value with characters HTTP/2 does not allow).
   */
  async request(path: string, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream> {
    if (this.closed) throw this.unavailable("the gateway closed its connection");
    try {
      return await this.sessions.request("POST", path, headers, {});
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === "ERR_INVALID_CHAR" || code === "ERR_HTTP2_INVALID_HEADER_VALUE") {
        throw new ConnectError(
          `a request header cannot travel to upstream ${this.address.url}: ${(e as Error).message}`,
          Code.InvalidArgument,
        );
      }
      throw this.unavailable(e instanceof ConnectError ? e.rawMessage : String(e));
    }
  }

  /** Tells the session manager a stream read response bytes (keepalive bookkeeping). */
  noteRead(stream: ClientHttp2Stream): void {
    this.sessions.notifyResponseByteRead(stream);
  }

  /** An UNAVAILABLE error naming the upstream. */
  unavailable(reason: string): ConnectError {
    return new ConnectError(`upstream ${this.address.url}: ${reason}`, Code.Unavailable);
  }

  /**
   * Keeps the upstream connected: reconnects with backoff while it is
   * down, and calls `onReconnect` each time it is back after having been
   * down (not for the first connection). Runs until {@link close}.
   */
  watch(onReconnect: () => void): void {
    void this.keepConnected(onReconnect);
  }

  private async keepConnected(onReconnect: () => void): Promise<void> {
    let backoff = FIRST_BACKOFF_MS;
    let hasBeenReady = false;
    let wasDown = false;
    while (!this.closed) {
      const state = this.sessions.state();
      if (state === "open" || state === "idle") {
        if (wasDown && hasBeenReady) onReconnect();
        hasBeenReady = true;
        wasDown = false;
        backoff = FIRST_BACKOFF_MS;
        await this.sleep(WATCH_INTERVAL_MS);
        continue;
      }
      if (hasBeenReady) wasDown = true;
      if ((await this.sessions.connect()) === "error" && !this.closed) {
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
    this.sessions.abort(this.unavailable("the gateway closed its connection"));
  }
}
