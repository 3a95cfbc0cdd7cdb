/**
 * Forced garbage collection for tests whose subject is what happens when
 * an object becomes unreachable (a FinalizationRegistry callback), and for
 * heap figures that mean something. `--expose-gc` is switched on at run
 * time, so no vitest or node flags are needed.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { within } from "./outcome.js";

setFlagsFromString("--expose_gc");

/** A full, synchronous garbage collection. */
export const collectGarbage = runInNewContext("gc") as () => void;

/** Heap in use after two full collections. */
export function heapAfterGc(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

/**
 * Resolves as `promise` does, collecting garbage every 20 ms until then
 * (finalization callbacks run in a task after a collection); rejects with
 * TooLate after `ms`.
 */
export async function collectUntil<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  const nudge = (async () => {
    while (!settled) {
      collectGarbage();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    return await within(promise, ms, what);
  } finally {
    settled = true;
    await nudge;
  }
}
