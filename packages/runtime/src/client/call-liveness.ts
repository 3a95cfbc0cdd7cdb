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
 *
 * On a replicated server a call is not known to belong to any replica until
 * the one that took it says so. When a replica leaves (its will, or its
 * OFFLINE), the calls opened before that and still unclaimed may be with it:
 * the Open was queued for it, or its Headers were lost with it. After the
 * offline grace (at once for an OFFLINE), they ask the online replicas, and
 * end with UNAVAILABLE ("may or may not have run") when none has them,
 * rather than at their deadline or heartbeat limit.
 *
 * Presence is only news while the caller's own link is up with its
 * subscriptions in place. While it is not, nothing is decided (a broker
 * that shuts down cleanly sends every will first, then the caller's link
 * drops too), and a grace counts from no earlier than the moment the
 * caller could see again: a broker restart longer than the grace is not a
 * server that went away.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { Presence_State } from "../gen/mqrpc/v1/wire_pb.js";
import type { PresenceWatch } from "../link/presence.js";
import { timerDelay } from "../wire/deadline.js";
import type { ClientCall } from "./client-call.js";

/** The caller's own view of the broker (MqttLink has it). */
export interface PresenceVantage {
  /** Whether the link is connected with its subscriptions in place. */
  readonly subscriptionsCurrent: boolean;
  /** When they were last in place again (`Date.now()`). */
  readonly subscriptionsCurrentSince: number;
  /** Calls `listener` each time they are in place again after a reconnect; returns its removal. */
  onResubscribed(listener: () => void): () => void;
}

/** See the module comment. */
export class CallLiveness {
  private readonly calls = new Set<ClientCall>();
  /** When each instance was first seen DISCONNECTED, while it stays so; made when needed. */
  private droppedAt: Map<string, number> | undefined;
  /** The instances online at the last review, to tell which left since. */
  private online: readonly string[];
  /**
   * Replicas that left: when (`at`), and whether their link dropped (calls
   * opened before then and still unclaimed are probed after the grace) or
   * they closed (at once); dropped once applied.
   */
  private departures: Array<{ readonly at: number; readonly dropped: boolean }> = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly stopWatching: () => void;
  private readonly stopVantage: () => void;

  constructor(
    private readonly presence: PresenceWatch,
    private readonly serverLabel: string,
    private readonly offlineGraceMs: number,
    private readonly vantage: PresenceVantage,
  ) {
    this.online = presence.onlineInstances();
    this.stopWatching = presence.onChange(() => this.review());
    this.stopVantage = vantage.onResubscribed(() => this.review());
  }

  /** Watches `call` until it finishes ({@link forget}). */
  add(call: ClientCall): void {
    this.calls.add(call);
  }

  /** Stops watching `call`: it finished. */
  forget(call: ClientCall): void {
    this.calls.delete(call);
  }

  /** How many calls it watches. */
  get size(): number {
    return this.calls.size;
  }

  /** The calls in flight, to cancel when the transport closes. */
  inFlight(): ClientCall[] {
    return [...this.calls];
  }

  close(): void {
    this.stopWatching();
    this.stopVantage();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Checks every call against what presence says now. */
  private review(): void {
    if (!this.vantage.subscriptionsCurrent) {
      // Reviewed again when the link sees again (onResubscribed).
      clearTimeout(this.timer);
      this.timer = undefined;
      return;
    }
    const now = Date.now();
    /** When a grace that began at `since` is over: it counts only while the caller could see. */
    const graceEnd = (since: number) =>
      Math.max(since, this.vantage.subscriptionsCurrentSince) + this.offlineGraceMs;
    const anyOnline = this.presence.availability === "online";
    let nextCheck = Number.POSITIVE_INFINITY;
    this.noteDepartures(now);
    for (const call of [...this.calls]) {
      const instance = call.boundInstance;
      const state = instance === undefined ? undefined : this.presence.stateOf(instance);
      if (instance === undefined || state === undefined) {
        // Which instance has the call is not known: only "nobody serves"
        // counts, or, for an unclaimed call, a replica that left after it
        // was opened.
        if (anyOnline) {
          const opened = call.openedAt;
          if (!call.awaitsReplica || opened === undefined) continue;
          for (const { at, dropped } of this.departures) {
            if (opened > at) continue;
            const due = dropped ? graceEnd(at) : at;
            if (now >= due) {
              call.probe(this.replicaLeft());
              break;
            }
            nextCheck = Math.min(nextCheck, due);
          }
          continue;
        }
        const since = this.presence.offlineSince;
        if (since === undefined) {
          if (this.presence.availability === "offline") call.probe(this.offline());
          continue;
        }
        if (now >= graceEnd(since)) call.probe(this.wentOffline());
        else nextCheck = Math.min(nextCheck, graceEnd(since));
        continue;
      }
      if (state === Presence_State.ONLINE) {
        this.droppedAt?.delete(instance);
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
        let since = this.droppedAt?.get(instance);
        if (since === undefined) {
          since = now;
          this.droppedAt ??= new Map();
          this.droppedAt.set(instance, since);
        }
        if (now >= graceEnd(since)) call.probe(this.wentOffline());
        else nextCheck = Math.min(nextCheck, graceEnd(since));
      } else {
        // Closed on purpose: it finished what it had taken, so calls still
        // in flight reached it too late and will not be answered.
        call.probe(this.offline());
      }
    }
    this.departures = this.departures.filter((d) => d.dropped && graceEnd(d.at) > now);
    clearTimeout(this.timer);
    this.timer = undefined;
    if (nextCheck !== Number.POSITIVE_INFINITY) {
      // At most MAX_TIMER_MS (longer delays wrap to 1 ms): an early review re-arms.
      this.timer = setTimeout(() => this.review(), timerDelay(Math.max(0, nextCheck - now) + 1));
      (this.timer as { unref?: () => void }).unref?.();
    }
  }

  /** Records the instances that were online at the last review and are not now. */
  private noteDepartures(now: number): void {
    const online = this.presence.onlineInstances();
    // A set only for many replicas: most servers have one instance.
    const stillOnline =
      online.length > 8
        ? new Set(online)
        : { has: (instance: string) => online.includes(instance) };
    for (const instance of this.online) {
      if (stillOnline.has(instance)) continue;
      // A dropped link may come back within the grace; a close is final.
      const dropped = this.presence.stateOf(instance) === Presence_State.DISCONNECTED;
      this.departures.push({ at: now, dropped });
    }
    this.online = online;
  }

  private replicaLeft(): ConnectError {
    return new ConnectError(
      `a replica of ${this.serverLabel} went offline before it confirmed the call; it may or may not have run`,
      Code.Unavailable,
    );
  }

  private offline(): ConnectError {
    return new ConnectError(`${this.serverLabel} is offline`, Code.Unavailable);
  }

  private wentOffline(): ConnectError {
    return new ConnectError(`${this.serverLabel} went offline`, Code.Unavailable);
  }
}
