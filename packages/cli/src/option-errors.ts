/**
 * Library errors in the words of the command line: `@mqrpc/gateway`,
 * `@mqrpc/net-bridge` and the runtime start their messages about a bad
 * value with the API option (`serverId must be …`, `target.port must be
 * …`, `startTimeoutMs: …`); the user wrote a flag.
 */
import { CliError, EXIT_USAGE } from "./exit-codes.js";

/** A command's flags by the library option they set (`serverId` → `--server-id`). */
export type FlagsByOption = Readonly<Record<string, string>>;

/**
 * The option a library message starts with, before `: `, ` must ` or a
 * quoted value: `serverId`, `target.port`, `topicPrefix` (`topicPrefix
 * "a+b" is invalid: …`).
 */
const LEADING_OPTION = /^[A-Za-z]\w*(?:\.\w+)*(?=: | must | ")/;

/**
 * `message` with the option it starts with replaced by the flag that sets
 * it (`--server-id must be a non-empty string`); undefined when it starts
 * with none of `flags`.
 */
export function withFlagName(message: string, flags: FlagsByOption): string | undefined {
  const option = LEADING_OPTION.exec(message)?.[0];
  if (option === undefined || !Object.hasOwn(flags, option)) return undefined;
  return `${flags[option]}${message.slice(option.length)}`;
}

/**
 * `error` as a usage error (exit 2, the original as its cause) naming the
 * flag when its message starts with an option of `flags`; otherwise
 * `error` as it is.
 */
export function flagError(error: unknown, flags: FlagsByOption): unknown {
  if (!(error instanceof Error) || error instanceof CliError) return error;
  const message = withFlagName(error.message, flags);
  return message === undefined ? error : new CliError(message, EXIT_USAGE, { cause: error });
}

/**
 * `error`, thrown by a library check the CLI runs on the value of `flag`
 * (which sets the library's `option`) before it contacts any broker, as a
 * usage error (exit 2, the original as its cause) naming the flag: the
 * message with the option replaced, else `flag: message`.
 */
export function usageError(error: unknown, option: string, flag: string): CliError {
  const message = error instanceof Error ? error.message : String(error);
  return new CliError(
    withFlagName(message, { [option]: flag }) ?? `${flag}: ${message}`,
    EXIT_USAGE,
    {
      cause: error,
    },
  );
}
