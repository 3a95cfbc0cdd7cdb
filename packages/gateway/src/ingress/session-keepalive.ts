/**
 * Server-side HTTP/2 keepalive for the ingress's client connections, as
 * gRPC servers do it (gRFC A8; C-core's `GRPC_ARG_KEEPALIVE_TIME_MS` and
 * `GRPC_ARG_KEEPALIVE_TIMEOUT_MS`): `timeMs` after the session's start and
 * after each acknowledged PING it is sent another, and one not
 * acknowledged within `timeoutMs` destroys it.
 *
 * A client whose host or network went silent without closing its TCP
 * connection (power loss, a NAT or firewall that dropped the flow) sends no
 * RST_STREAM and no FIN: without this, its calls stay open at the ingress,
 * and the devices keep running them (streams without a deadline forever),
 * since the ingress, their caller, is alive and answers their heartbeats.
 * Destroying the session closes its streams, which cancels their calls.
 */
import type { Http2Session } from "node:http2";

/** Keepalive timing, ms. */
export interface SessionKeepaliveTiming {
  /** Interval between PINGs, ms. */
  readonly timeMs: number;
  /** How long a PING has to be acknowledged, ms. */
  readonly timeoutMs: number;
}

/**
 * Keeps pinging `session` until it closes; destroys it when a PING is not
 * acknowledged within `timing.timeoutMs` (its streams close, their calls
 * are cancelled). Timers are unreferenced: they never hold the process.
 */
export function keepSessionAlive(session: Http2Session, timing: SessionKeepaliveTiming): void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = (fn: () => void, ms: number) => {
    timer = setTimeout(fn, ms);
    timer.unref();
  };
  const ping = () => {
    if (session.closed || session.destroyed) return;
    const sent = session.ping((error) => {
      clearTimeout(timer);
      // A failed PING is a session closing: nothing more to do.
      if (error === null && !session.closed && !session.destroyed) schedule(ping, timing.timeMs);
    });
    if (!sent) {
      // Too many PINGs unacknowledged already (Node's limit): try again later.
      schedule(ping, timing.timeMs);
      return;
    }
    // Without an error: the GOAWAY says NO_ERROR, so a client whose
    // network comes back sees its calls end UNAVAILABLE (a dropped
    // connection, which gRPC retries), not INTERNAL (a server bug).
    schedule(() => session.destroy(), timing.timeoutMs);
  };
  schedule(ping, timing.timeMs);
  session.once("close", () => clearTimeout(timer));
}
