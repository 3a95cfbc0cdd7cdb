/**
 * How an error a command ended with is reported: one line on stderr, and
 * the exit code (see exit-codes.ts). Loaded only when a command fails.
 */
import { ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { CliError, EXIT_FAILURE, exitCodeForStatus } from "./exit-codes.js";

/** The exit code for an error: a CliError's own, 64 + code for a ConnectError, else 1. */
export function exitCodeFor(error: unknown): number {
  if (error instanceof CliError) return error.exitCode;
  if (error instanceof ConnectError) return exitCodeForStatus(error.code);
  return EXIT_FAILURE;
}

/** One line for an error: `unavailable: cannot reach …` for a ConnectError, the message otherwise. */
export function describeError(e: unknown): string {
  if (e instanceof ConnectError) return `${codeToString(e.code)}: ${e.rawMessage}`;
  if (e instanceof CliError) return e.message;
  if (e instanceof Error) return e.stack ?? e.message;
  return String(e);
}
