/**
 * Writing to stdout and stderr: results on stdout with backpressure (a slow
 * pipe slows the stream, which slows the server through flow control),
 * event lines of long-running commands, diagnostics on stderr.
 */

let stdoutClosed = false;
const closedListeners = new Set<() => void>();

/**
 * Takes stdout's errors: when the reader went away (EPIPE: `mqrpc … | head`),
 * output stops and the commands listening ({@link onStdoutClosed}) stop as
 * on a signal; with none listening the process exits 0, as after SIGPIPE.
 */
export function watchStdout(): void {
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE") throw e;
    if (stdoutClosed) return;
    stdoutClosed = true;
    if (closedListeners.size === 0) process.exit(0);
    for (const listener of [...closedListeners]) listener();
  });
}

/** Calls `listener` when stdout's reader goes away; returns the undo. */
export function onStdoutClosed(listener: () => void): () => void {
  closedListeners.add(listener);
  return () => closedListeners.delete(listener);
}

/**
 * Writes `text` to stdout; resolves once the stream takes more (after
 * `drain` when full), at once when stdout's reader has gone away.
 */
export function writeOut(text: string): Promise<void> {
  if (stdoutClosed) return Promise.resolve();
  if (process.stdout.write(text)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      undo();
      process.stdout.off("drain", done);
      resolve();
    };
    const undo = onStdoutClosed(done);
    process.stdout.once("drain", done);
  });
}

/**
 * One line per event of a long-running command, on stdout:
 * `<ISO 8601 time> <event> <details>`, e.g.
 * `2025-06-01T10:00:00.000Z online sensor-box.7 (instance mqrpc-s-sensor-box_7)`.
 */
export function logEvent(event: string, details: string): void {
  if (stdoutClosed) return;
  process.stdout.write(`${new Date().toISOString()} ${event} ${details}\n`);
}

/**
 * A logger for the mqrpc servers a command runs (gateway, expose): their
 * warnings and notices as `warn` and `info` event lines. The runtime's
 * notes on a broker it cannot reach yet, or has reached, are left out:
 * the command reports its broker connection itself (the probe at start,
 * then `broker` lines).
 */
export function serverEventLogger(): { warn(message: string): void; info(message: string): void } {
  const brokerNote = /^mqrpc server "[^"]*": (?:cannot reach|reached) the MQTT broker at /;
  return {
    warn: (message) => {
      if (!brokerNote.test(message)) logEvent("warn", message);
    },
    info: (message) => {
      if (!brokerNote.test(message)) logEvent("info", message);
    },
  };
}

/** A diagnostic line on stderr, prefixed `mqrpc: `. */
export function warn(message: string): void {
  process.stderr.write(`mqrpc: ${message}\n`);
}

/** Resolves once stdout and stderr have flushed what was written to them. */
export function flushOutput(): Promise<void> {
  const flush = (stream: NodeJS.WriteStream) =>
    new Promise<void>((resolve) => {
      if (stream.writableEnded || stream.destroyed || (stream === process.stdout && stdoutClosed)) {
        return resolve();
      }
      stream.write("", () => resolve());
    });
  return Promise.all([flush(process.stdout), flush(process.stderr)]).then(() => undefined);
}
