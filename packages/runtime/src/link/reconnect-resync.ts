/**
 * What a peer does each time its broker link comes back: every call asks
 * its peer at once for what may have been lost, and asks again a few
 * times over the next seconds while nothing new arrives. Once is not
 * enough: a broker that restarted without persistence forgets every
 * subscription, and when this peer reconnects before the other one has
 * subscribed again, its first requests reach nobody (docs/PROTOCOL.md
 * section 11.2).
 */

/** When the follow-up checks run, in ms after the reconnect. */
const FOLLOW_UPS_MS = [500, 1500, 3500] as const;

/** See the module comment. */
export class ReconnectResync {
  private timers: Array<ReturnType<typeof setTimeout>> = [];

  /**
   * @param resync called with `true` at the reconnect (ask at once) and
   *   with `false` at each follow-up (ask again only where nothing new
   *   arrived since the last check)
   */
  constructor(private readonly resync: (first: boolean) => void) {}

  /** The link came back. */
  reconnected(): void {
    this.cancel();
    this.resync(true);
    for (const delay of FOLLOW_UPS_MS) {
      const timer = setTimeout(() => this.resync(false), delay);
      (timer as { unref?: () => void }).unref?.();
      this.timers.push(timer);
    }
  }

  /** Stops the follow-ups still due. */
  cancel(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
  }
}
