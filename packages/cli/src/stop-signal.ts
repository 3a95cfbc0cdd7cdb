/**
 * SIGINT and SIGTERM as an AbortSignal: the first one asks the command to
 * stop cleanly (cancel its calls with a status, announce its servers
 * offline, close its connections) and exit 0; a second one exits at once.
 * A reader of stdout that went away (EPIPE) stops the command the same
 * way, as SIGPIPE.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { CliError, EXIT_TAKEN_OVER } from "./exit-codes.js";
import { onStdoutClosed } from "./output.js";

/** The stop request of a run, and a way to stop listening for it. */
export interface StopSignal {
  /** Aborts, with a CANCELED ConnectError naming the signal, at the first SIGINT or SIGTERM (or EPIPE on stdout). */
  readonly signal: AbortSignal;
  /** The name of the signal that stopped the run, once one did (`SIGPIPE` for EPIPE on stdout). */
  readonly received: () => NodeJS.Signals | undefined;
  /** Removes the handlers (Node's default handling comes back). */
  dispose(): void;
}

/** Exit status after a second signal: 128 + the signal's number, as shells report it. */
const FORCED_EXIT: Readonly<Record<string, number>> = { SIGINT: 130, SIGTERM: 143 };

/** Starts listening for SIGINT and SIGTERM. */
export function listenForStop(): StopSignal {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (name: NodeJS.Signals) => {
    if (received !== undefined) {
      process.stderr.write(`mqrpc: ${name} again: exiting at once\n`);
      process.exit(FORCED_EXIT[name] ?? 1);
    }
    received = name;
    controller.abort(new ConnectError(`interrupted by ${name}`, Code.Canceled));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const undoPipe = onStdoutClosed(() => {
    if (received !== undefined) return;
    received = "SIGPIPE";
    controller.abort(new ConnectError("stdout was closed", Code.Canceled));
  });
  return {
    signal: controller.signal,
    received: () => received,
    dispose() {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      undoPipe();
    },
  };
}

/** Resolves when `signal` aborts (at once if it has). */
export function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true }),
  );
}

/**
 * Resolves as `starting` does unless `signal` aborts first (a start that
 * waits for a broker that does not answer), then rejects with the signal's
 * reason; what `starting` brings after that is closed with `close`.
 */
export function unlessStopped<T>(
  starting: Promise<T>,
  signal: AbortSignal,
  close: (started: T) => unknown,
): Promise<T> {
  const closeLate = () => {
    starting.then(close).catch(() => {});
  };
  if (signal.aborted) {
    closeLate();
    return Promise.reject(signal.reason);
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      closeLate();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    starting.then(
      (started) => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) return;
        resolve(started);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/**
 * Waits until `signal` aborts (SIGINT or SIGTERM) or `server` stays down
 * because another process took its id over (`MqttServer.takenOver()`);
 * resolves with the latter's reason, or undefined for a stop.
 */
export function untilStopOrTakeover(
  signal: AbortSignal,
  server: { takenOver(): Promise<Error> },
): Promise<Error | undefined> {
  return Promise.race([untilAborted(signal).then(() => undefined), server.takenOver()]);
}

/**
 * The error a server command ends with when another process took its id
 * over (the server's warning before it gives the details): exit
 * {@link EXIT_TAKEN_OVER}.
 */
export function takenOverError(serverId: string, reason: Error): CliError {
  return new CliError(
    `--server-id ${serverId}: stopped, as another process serves as this server id and keeps it (${reason.message.includes("0x8e") ? "the broker said so" : "it started first"}): run one process per server id, or give replicas --shared`,
    EXIT_TAKEN_OVER,
  );
}
