/**
 * The exit codes of `mqrpc`, documented in docs/CLI.md. An RPC that ends
 * with a status other than OK exits with 64 + the status code, as grpcurl
 * does, so that a script can tell `NOT_FOUND` (69) from `UNAVAILABLE` (78)
 * without parsing the output.
 */

/** Success, and a run the user stopped with SIGINT or SIGTERM. */
export const EXIT_OK = 0;
/** A failure that is not an RPC status: unreadable file, bad JSON, unknown method, schema not found. */
export const EXIT_FAILURE = 1;
/** Bad command line: unknown command or option, missing argument, invalid option value. */
export const EXIT_USAGE = 2;
/**
 * A long-running server command (`gateway`, `expose`) stopped because
 * another process serves as the same server id and took its MQTT client
 * id over (PROTOCOL.md section 3): restarting it would only stop it again,
 * so a supervisor should not (systemd: `RestartPreventExitStatus=3`).
 */
export const EXIT_TAKEN_OVER = 3;
/** Added to an RPC status code (1-16) for the exit code: 65 CANCELED … 80 UNAUTHENTICATED. */
export const EXIT_STATUS_BASE = 64;

/** The exit code for a call that ended with status `code` (a Connect `Code`, 0 for OK). */
export function exitCodeForStatus(code: number): number {
  return code === 0 ? EXIT_OK : EXIT_STATUS_BASE + code;
}

/**
 * A failure that ends the command with a message and an exit code
 * ({@link EXIT_FAILURE} unless given); `options.cause` is the error it
 * reports in other words (printed with `MQRPC_DEBUG`).
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "CliError";
  }
}
