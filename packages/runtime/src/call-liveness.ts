/**
 * Ends a transport's calls in flight when presence says their server is
 * gone (docs/PROTOCOL.md section 15.2): when the instance that has a call
 * closed (OFFLINE) or came back as another incarnation (it restarted and
 * lost the call), after the offline grace when its link dropped (its last
 * will says DISCONNECTED) and it did not return, and for calls whose
 * instance is not known yet (a replicated server before it answered), when
 * no instance at all is online. Presence can lag or lose an announcement,
 * so a call that presence gives up on first asks its server directly
 * (ClientCall.probe) and ends only if it does not answer.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ClientCall } from "./client-call.js";
import { Presence_State } from "./gen/mqrpc/v1/wire_pb.js";
import type { PresenceWatch } from "./presence.js";

/** See the module comment. */
export class CallLiveness {
  private readonly calls = new Set<ClientCall>();
  /** When each instance was first seen DISCONNECTED, while it stays so. */
  private readonly droppedAt = new Map<string, number>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly stopWatching: () => void;

  constructor(
    private readonly presence: PresenceWatch,
    private readonly serverLabel: string,
    private readonly offlineGraceMs: number,
  ) {
    this.stopWatching = presence.onChange(() => this.review());
  }

  /** Watches `call` until it finishes ({@link forget}). */
  add(call: ClientCall): void {
    this.calls.add(call);
  }

  /** Stops watching `call`: it finished. */
  forget(call: ClientCall): void {
    this.calls.delete(call);
  }

  /** The calls in flight, to cancel when the transport closes. */
  inFlight(): ClientCall[] {
    return [...this.calls];
  }

  close(): void {
    this.stopWatching();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Checks every call against what presence says now. */
  private review(): void {
    const now = Date.now();
    const anyOnline = this.presence.availability === "online";
    let nextCheck = Number.POSITIVE_INFINITY;
    for (const call of [...this.calls]) {
      const instance = call.boundInstance;
      const state = instance === undefined ? undefined : this.presence.stateOf(instance);
      if (instance === undefined || state === undefined) {
        // Which instance has the call is not known: only "nobody serves" counts.
        if (anyOnline) continue;
        const since = this.presence.offlineSince;
        if (since === undefined) {
          if (this.presence.availability === "offline") call.probe(this.offline());
          continue;
        }
        if (now - since >= this.offlineGraceMs) call.probe(this.wentOffline());
        else nextCheck = Math.min(nextCheck, since + this.offlineGraceMs);
        continue;
      }
      if (state === Presence_State.ONLINE) {
        this.droppedAt.delete(instance);
        const incarnation = this.presence.incarnationOf(instance);
        if (call.incarnation !== undefined && incarnation !== call.incarnation) {
          call.probe(
            new ConnectError(
              `${this.serverLabel} restarted while the call was in progress; it may or may not have run`,
              Code.Unavailable,
            ),
          );
        }
      } else if (state === Presence_State.DISCONNECTED) {
        let since = this.droppedAt.get(instance);
        if (since === undefined) {
          since = now;
          this.droppedAt.set(instance, since);
        }
        if (now - since >= this.offlineGraceMs) call.probe(this.wentOffline());
        else nextCheck = Math.min(nextCheck, since + this.offlineGraceMs);
      } else {
        // Closed on purpose: it finished what it had taken, so calls still
        // in flight reached it too late and will not be answered.
        call.probe(this.offline());
      }
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    if (nextCheck !== Number.POSITIVE_INFINITY) {
      this.timer = setTimeout(() => this.review(), Math.max(0, nextCheck - now) + 1);
      (this.timer as { unref?: () => void }).unref?.();
    }
  }

  private offline(): ConnectError {
    return new ConnectError(`${this.serverLabel} is offline`, Code.Unavailable);
  }

  private wentOffline(): ConnectError {
    return new ConnectError(`${this.serverLabel} went offline`, Code.Unavailable);
  }
}
