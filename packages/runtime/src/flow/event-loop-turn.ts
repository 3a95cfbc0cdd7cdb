/**
 * "Once the current event-loop turn is over": after every pending microtask
 * and the I/O callbacks of this turn. Batching, coalescing and grouping all
 * wait exactly this long, so that what a producer makes in one go travels
 * together while a lone message waits for nothing.
 */

/** Runs `fn` once the current event-loop turn is over (setImmediate where there is one). */
export const afterThisTurn: (fn: () => void) => void =
  typeof globalThis.setImmediate === "function"
    ? (fn) => {
        globalThis.setImmediate(fn);
      }
    : (fn) => {
        setTimeout(fn, 0);
      };
