/**
 * Paces the RST_STREAMs the gateway sends on one upstream connection.
 *
 * HTTP/2 servers guard against "rapid reset" floods (CVE-2023-44487) by
 * closing a connection that resets too many streams too fast: Node's
 * server (grpc-js, Connect-node upstreams) sends GOAWAY after about 1,000
 * resets in a burst, refilling 33 a second. The gateway puts every
 * caller's calls to an upstream on one connection, so one caller that
 * cancels a thousand calls at once would end every other caller's calls
 * there. Resets beyond the budget wait their turn instead; a stream that
 * ends by itself meanwhile (the upstream finished it, or its
 * `grpc-timeout` fired) needs no reset and leaves the queue. What waits is
 * bounded by the streams open on the connection.
 */

/** A stream that can be reset (`ClientHttp2Stream`'s part of it). */
export interface ResettableStream {
  readonly closed: boolean;
  readonly destroyed: boolean;
  close(code: number): void;
  once(event: "close", listener: () => void): unknown;
}

/** A token bucket: `burst` resets at once, then `perSecond`. */
export interface ResetBudget {
  readonly burst: number;
  readonly perSecond: number;
}

/** Below Node's server defaults (1,000 in a burst, 33 a second), with a margin. */
export const DEFAULT_RESET_BUDGET: ResetBudget = { burst: 800, perSecond: 25 };

/** The clock and timer the pacer uses (injected by tests). */
export interface PacerClock {
  now(): number;
  setTimeout(run: () => void, ms: number): { unref?(): void } | undefined;
}

const REAL_CLOCK: PacerClock = {
  now: () => performance.now(),
  setTimeout: (run, ms) => setTimeout(run, ms),
};

/** Resets streams with `code` within a {@link ResetBudget}, in the order asked. */
export class ResetPacer {
  private tokens: number;
  private refilledAt: number;
  private readonly waiting = new Set<ResettableStream>();
  private timerSet = false;

  constructor(
    private readonly code: number,
    private readonly budget: ResetBudget = DEFAULT_RESET_BUDGET,
    private readonly clock: PacerClock = REAL_CLOCK,
  ) {
    this.tokens = budget.burst;
    this.refilledAt = clock.now();
  }

  /** Resets waiting for their turn. */
  get queued(): number {
    return this.waiting.size;
  }

  /** Resets `stream` now if the budget allows, else as soon as it does (unless it closes first). */
  reset(stream: ResettableStream): void {
    if (stream.closed || stream.destroyed || this.waiting.has(stream)) return;
    this.refill();
    if (this.waiting.size === 0 && this.tokens >= 1) {
      this.tokens--;
      stream.close(this.code);
      return;
    }
    this.waiting.add(stream);
    stream.once("close", () => this.waiting.delete(stream));
    this.schedule();
  }

  /** Drops `stream` from the queue (it closed): its 'close' listener may not have run yet. */
  forget(stream: ResettableStream): void {
    this.waiting.delete(stream);
  }

  private refill(): void {
    const now = this.clock.now();
    const earned = ((now - this.refilledAt) / 1000) * this.budget.perSecond;
    this.tokens = Math.min(this.budget.burst, this.tokens + earned);
    this.refilledAt = now;
  }

  private schedule(): void {
    if (this.timerSet || this.waiting.size === 0) return;
    this.timerSet = true;
    const ms = Math.max(1, Math.ceil(((1 - this.tokens) / this.budget.perSecond) * 1000));
    this.clock
      .setTimeout(() => {
        this.timerSet = false;
        this.drain();
      }, ms)
      ?.unref?.();
  }

  private drain(): void {
    this.refill();
    for (const stream of this.waiting) {
      if (this.tokens < 1) break;
      this.waiting.delete(stream);
      if (stream.closed || stream.destroyed) continue;
      this.tokens--;
      stream.close(this.code);
    }
    this.schedule();
  }
}
