/**
 * One HTTP/2 connection to an upstream (a Connect-node session manager),
 * with the streams made on it and the pacing of their cancels.
 *
 * Cancels go out as RST_STREAM within the connection's rapid-reset budget
 * (reset-pacer.ts). When a cancel has to wait, the connection retires: the
 * channel makes new calls on a new connection, this one keeps its calls
 * that are still running, and once every stream left on it is one waiting
 * to be cancelled, it is closed, which cancels them all at once with no
 * RST_STREAM at all. So a burst of cancels never ends the other calls on
 * the connection (a Node upstream would GOAWAY it), and cancels arriving
 * faster than the budget, for as long as they do, never leave the
 * upstream running work nobody waits for: a retired connection lasts as
 * long as its longest running call.
 */
import { type ClientHttp2Stream, constants } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { ResetPacer } from "./reset-pacer.js";

export class UpstreamConnection {
  private readonly pacer = new ResetPacer(constants.NGHTTP2_CANCEL);
  private readonly open = new Set<ClientHttp2Stream>();
  private retiring = false;
  private closed = false;

  constructor(
    readonly sessions: Http2SessionManager,
    /** Called when a cancel had to wait: the channel moves new calls elsewhere. */
    private readonly onRetire: (connection: UpstreamConnection) => void,
  ) {}

  /** Whether the connection is closed (by {@link abort}, or retired and done). */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Counts `stream` among this connection's until it closes. */
  track(stream: ClientHttp2Stream): void {
    this.open.add(stream);
    stream.once("close", () => {
      this.open.delete(stream);
      this.pacer.forget(stream);
      this.closeIfOnlyCancelled();
    });
  }

  /** Cancels `stream` (RST_STREAM CANCEL) now, or as the budget allows, or by closing the connection. */
  cancel(stream: ClientHttp2Stream): void {
    this.pacer.reset(stream);
    if (this.pacer.queued === 0) return;
    if (!this.retiring) {
      this.retiring = true;
      this.onRetire(this);
    }
    this.closeIfOnlyCancelled();
  }

  /** Closes a retired connection once it carries only streams waiting to be cancelled (or none). */
  private closeIfOnlyCancelled(): void {
    if (!this.retiring || this.closed || this.open.size > this.pacer.queued) return;
    this.closed = true;
    this.sessions.abort(new ConnectError("the call was cancelled", Code.Canceled));
  }

  /** Closes again a retired connection whose manager connected anew after it closed. */
  abortAgain(): void {
    this.sessions.abort(new ConnectError("the connection retired", Code.Canceled));
  }

  /** Closes the connection: its calls fail with `reason`. */
  abort(reason: ConnectError): void {
    this.closed = true;
    this.sessions.abort(reason);
  }
}
