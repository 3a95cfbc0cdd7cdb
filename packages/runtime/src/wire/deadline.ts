/**
 * A call's deadline from the caller's `timeoutMs` to the Open frame's
 * `timeout_ms` and to the timers that enforce it (docs/PROTOCOL.md section
 * 12): every duration in milliseconds that reaches a uint32 field or a timer
 * passes through here, so that none wraps or overflows.
 */
import { MAX_TIMER_MS } from "./limits.js";

/**
 * Largest remaining time an Open frame carries: 2³¹−1 ms (about 24.8
 * days). The field is a uint32, but receivers with 31-bit timers (Node,
 * browsers) or signed 32-bit arithmetic would end a call with a longer
 * timeout early; a longer remaining time is sent as 0, no deadline, and the
 * client enforces it alone (see {@link openTimeoutMs}).
 */
export const MAX_OPEN_TIMEOUT_MS = MAX_TIMER_MS;

/**
 * The deadline (`Date.now()` time) of a call given Connect's `timeoutMs`:
 * undefined (and +Infinity) mean none; 0, negative, -Infinity and NaN mean
 * one that has already passed (Connect's own transports fail such a call
 * with DEADLINE_EXCEEDED at once, or, for NaN, after 1 ms); a fraction of
 * a millisecond counts.
 */
export function deadlineOf(timeoutMs: number | undefined, now: number): number | undefined {
  if (timeoutMs === undefined || timeoutMs === Number.POSITIVE_INFINITY) return undefined;
  if (!(timeoutMs > 0)) return now;
  return now + timeoutMs;
}

/**
 * The Open frame's `timeout_ms` for a call with `deadline` opened at `now`:
 * 0 without a deadline; otherwise the remaining time rounded up (the server
 * must never end the call before the client's deadline) and at least 1 (0
 * would mean none), or 0 when it exceeds {@link MAX_OPEN_TIMEOUT_MS}.
 *
 * Why 0 rather than the largest value: a server given a shorter deadline
 * than the caller's would end with DEADLINE_EXCEEDED a call the caller still
 * waits for. A server given none runs the call until the client's own timer
 * fires and its `Cancel{DEADLINE_EXCEEDED}` arrives (or, if the client is
 * gone, until heartbeats or the idle limit end it).
 */
export function openTimeoutMs(deadline: number | undefined, now: number): number {
  if (deadline === undefined) return 0;
  const left = Math.ceil(deadline - now);
  if (left > MAX_OPEN_TIMEOUT_MS) return 0;
  return Math.max(1, left);
}

/**
 * `timeoutMs` when a single plain timer enforces it correctly (as Connect's
 * runUnaryCall and runStreamingCall do: at once for 0 or less, else one
 * setTimeout); undefined when such a timer would fire after 1 ms instead
 * (2³¹ ms or more, +Infinity, NaN), so that the caller's timer is left out
 * and the deadline from {@link deadlineOf} alone enforces it.
 */
export function timerSafeTimeout(timeoutMs: number | undefined): number | undefined {
  return timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS ? timeoutMs : undefined;
}

/**
 * The delay to arm a timer with that should fire `left` ms from now: whole
 * milliseconds rounded up, and at most {@link MAX_TIMER_MS}, since Node and
 * browsers run a longer delay (or a non-finite one) after 1 ms. When the
 * result is less than `left`, the timer must be armed again when it fires.
 */
export function timerDelay(left: number): number {
  if (!(left > 0)) return 0;
  return left >= MAX_TIMER_MS ? MAX_TIMER_MS : Math.ceil(left);
}

/**
 * Calls `fire` once, when `deadline` (`Date.now()` time) has passed, even
 * when that is more than {@link MAX_TIMER_MS} away: a long wait takes
 * several timers in turn, each re-armed for what is left. Like a plain
 * timer it keeps a Node process alive while it runs.
 */
export class DeadlineTimer {
  private handle: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly deadline: number,
    private readonly fire: () => void,
  ) {
    this.arm(deadline - Date.now());
  }

  /** Stops the timer; `fire` is not called (again). */
  clear(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
  }

  private arm(left: number): void {
    const delay = timerDelay(left);
    if (delay < left) {
      this.handle = setTimeout(() => this.arm(this.deadline - Date.now()), delay);
    } else {
      this.handle = setTimeout(() => {
        this.handle = undefined;
        this.fire();
      }, delay);
    }
  }
}
