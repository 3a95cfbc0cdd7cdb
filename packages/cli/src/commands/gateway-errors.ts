/**
 * The start errors of `createGrpcGateway` in the words of `mqrpc gateway`:
 * the library names its API options (`upstreams[1].url`, `"services"`,
 * `"descriptorSet"`, `startTimeoutMs`), the user wrote `--upstream URL=…`
 * and `--start-timeout`.
 */
import { ConnectError } from "@connectrpc/connect";
import { CliError, EXIT_FAILURE, EXIT_USAGE } from "../exit-codes.js";
import { type FlagsByOption, withFlagName } from "../option-errors.js";

/** One `--upstream` value as written, and the URL in it. */
export interface UpstreamArgument {
  /** The whole value: `URL`, `URL=pkg.Service[,…]` or `URL=@file`. */
  readonly value: string;
  readonly url: string;
}

/** What the gateway's options were on the command line. */
export interface GatewayCommandLine {
  /** The `--upstream` values, in the order given (the library's `upstreams[i]`). */
  readonly upstreams: readonly UpstreamArgument[];
  /** `--start-timeout`, in ms. */
  readonly startTimeoutMs: number;
}

/** The library's top-level options that a flag of the command sets. */
const FLAGS: FlagsByOption = {
  serverId: "--server-id",
  shared: "--shared",
  startTimeoutMs: "--start-timeout",
  upstreamConnectTimeoutMs: "--upstream-connect-timeout",
  upstreamKeepaliveTimeMs: "--upstream-keepalive-time",
  upstreamKeepaliveTimeoutMs: "--upstream-keepalive-timeout",
  shutdownTimeoutMs: "--shutdown-timeout",
  maxMessageBytes: "--max-message-size",
};

/** gRPC's status code DEADLINE_EXCEEDED, carried by the library's ReflectionError. */
const GRPC_DEADLINE_EXCEEDED = 4;

const SERVICES_FORM = "=pkg.Service[,…]";
const DESCRIPTOR_SET_FORM = "=@image.binpb";

/**
 * `error` with the command line's names for the options it names, and with
 * the command-line form of `"services"` and `"descriptorSet"` where it says
 * to use them: a CliError (exit 2 when it names a flag's value the
 * library refused, 1 for a failure such as an unreadable file or an
 * upstream without reflection), the original as its cause. Errors that
 * name no option (and ConnectErrors, whose exit code is their status) are
 * returned as they are.
 */
export function gatewayStartError(error: unknown, commandLine: GatewayCommandLine): unknown {
  if (!(error instanceof Error) || error instanceof ConnectError || error instanceof CliError) {
    return error;
  }
  let message = error.message;
  let badValue = false;
  // `upstreams[1].url: "ftp://…" has scheme ftp:`, `upstreams[0].descriptorSet: cannot read …`
  message = message.replace(
    /\bupstreams\[(\d+)\](?:\.(url|services|descriptorSet))?/g,
    (whole, index: string, field: string | undefined, offset: number) => {
      const upstream = commandLine.upstreams[Number(index)];
      if (upstream === undefined) return whole;
      // A file that cannot be read is a failure (1); a value the library refuses, a usage error.
      if (offset === 0 && field !== "descriptorSet") badValue = true;
      return `--upstream "${upstream.value}"`;
    },
  );
  // `startTimeoutMs must be …`, `shared: share group "a+b" must use only …`
  const flagged = withFlagName(message, FLAGS);
  if (flagged !== undefined) {
    message = flagged;
    badValue = true;
  }
  const hints: string[] = [];
  const urls = upstreamsNamed(message, commandLine.upstreams);
  const services = message.includes('"services"');
  const descriptorSet = message.includes('"descriptorSet"');
  if (services || descriptorSet) {
    const forms = urls.map((url) =>
      [
        ...(services ? [`--upstream ${url}${SERVICES_FORM}`] : []),
        ...(descriptorSet ? [`--upstream ${url}${DESCRIPTOR_SET_FORM}`] : []),
      ].join(" or "),
    );
    hints.push(`on the command line: ${forms.join(", ")}`);
  }
  if (error.name === "ReflectionError" && codeOf(error) === GRPC_DEADLINE_EXCEEDED) {
    hints.push(
      `no answer within --start-timeout ${duration(commandLine.startTimeoutMs)}: is the upstream up? ` +
        `(with --upstream ${urls[0] ?? "URL"}${SERVICES_FORM} the gateway starts without asking it)`,
    );
  }
  if (message === error.message && hints.length === 0) return error;
  return new CliError(
    hints.length === 0 ? message : `${message}; ${hints.join("; ")}`,
    badValue ? EXIT_USAGE : EXIT_FAILURE,
    { cause: error },
  );
}

/** The URLs of the upstreams `message` names, in command-line order; `URL` when it names none. */
function upstreamsNamed(message: string, upstreams: readonly UpstreamArgument[]): string[] {
  const named = new Set<string>();
  for (const { url } of upstreams) {
    // Whole URLs only: http://h:5005 is not named by http://h:50051 (a ":" may follow).
    const escaped = url.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    if (new RegExp(`${escaped}(?![\\w.-]|:\\d|/\\w)`).test(message)) named.add(url);
  }
  return named.size > 0 ? [...named] : ["URL"];
}

function codeOf(error: Error): unknown {
  return (error as Error & { code?: unknown }).code;
}

/** `10s`, `1m`, `1500ms`: how --start-timeout could have been written. */
function duration(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
