/**
 * How an error a command ended with is reported: one line on stderr,
 * `mqrpc: <message>`, and the exit code (see exit-codes.ts). With the
 * environment variable `MQRPC_DEBUG` set (to anything but "" or "0") the
 * error follows that line in full: stack trace, cause, properties. Loaded
 * only when a command fails.
 */
import { inspect } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { CliError, EXIT_FAILURE, exitCodeForStatus } from "./exit-codes.js";

/** The exit code for an error: a CliError's own, 64 + code for a ConnectError, else 1. */
export function exitCodeFor(error: unknown): number {
  if (error instanceof CliError) return error.exitCode;
  if (error instanceof ConnectError) return exitCodeForStatus(error.code);
  return EXIT_FAILURE;
}

/** Whether `MQRPC_DEBUG` asks for stack traces: set, and not "" or "0". */
export function debugRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.MQRPC_DEBUG;
  return value !== undefined && value !== "" && value !== "0";
}

/**
 * One line for an error: `unavailable: cannot reach …` for a ConnectError,
 * the message otherwise. The message of JavaScript's own error classes
 * (TypeError, RangeError, …: a bug rather than a failure foreseen) keeps
 * the class name.
 */
export function describeError(e: unknown): string {
  if (e instanceof ConnectError) return `${codeToString(e.code)}: ${e.rawMessage}`;
  if (e instanceof CliError) return e.message;
  if (e instanceof Error) {
    const message = messageOf(e);
    return isProgrammingError(e) ? `${e.name}: ${message}` : message;
  }
  return String(e);
}

/**
 * What a failed command prints on stderr, newline included: `mqrpc: ` and
 * {@link describeError}'s line; with `debug` (default: {@link debugRequested})
 * the whole error after it. A bug's line says how to see where it happened.
 */
export function errorReport(e: unknown, debug: boolean = debugRequested()): string {
  const line = `mqrpc: ${describeError(e)}`;
  if (debug) return `${line}\n${inspect(e, { depth: 4 })}\n`;
  if (e instanceof Error && isProgrammingError(e)) {
    return `${line} (MQRPC_DEBUG=1 prints the stack trace)\n`;
  }
  return `${line}\n`;
}

/** The message, or for an AggregateError without one (Node's net with several addresses) its errors'. */
function messageOf(e: Error): string {
  if (e.message === "" && e instanceof AggregateError) {
    return e.errors
      .map((inner: unknown) => (inner instanceof Error ? inner.message : String(inner)))
      .join("; ");
  }
  return e.message;
}

function isProgrammingError(e: Error): boolean {
  return (
    e instanceof TypeError ||
    e instanceof RangeError ||
    e instanceof ReferenceError ||
    e instanceof SyntaxError ||
    e instanceof EvalError ||
    e instanceof URIError
  );
}
