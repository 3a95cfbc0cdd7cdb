/**
 * Parsers for option values, in commander's shape `(value, previous) =>
 * parsed`. A value that does not parse throws commander's
 * `InvalidArgumentError`, which names the option and exits with the usage
 * exit code (2).
 */
import { InvalidArgumentError } from "commander";

const DURATION = /^(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)?$/;
const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * The longest timer Node.js keeps, in ms (2^31 - 1, about 596 hours): a
 * longer one fires after 1 ms, so a longer duration would end a wait at
 * once instead of never.
 */
export const MAX_DURATION_MS = 2_147_483_647;

/**
 * A duration in milliseconds from seconds (`2.5`, as grpcurl's `-max-time`)
 * or a number with a unit (`500ms`, `2s`, `1m`, `1h`). Must be above zero
 * and at most {@link MAX_DURATION_MS}.
 */
export function parseDuration(value: string): number {
  const match = DURATION.exec(value.trim());
  if (match === null) {
    throw new InvalidArgumentError("give seconds (2.5) or a number with ms, s, m or h (500ms).");
  }
  const ms = Math.ceil(Number(match[1]) * (UNIT_MS[match[2] ?? "s"] ?? 1000));
  if (!(ms > 0)) {
    throw new InvalidArgumentError("must be more than zero.");
  }
  if (!(ms <= MAX_DURATION_MS)) {
    throw new InvalidArgumentError(
      `must be at most 596h (${MAX_DURATION_MS} ms, the longest timer Node.js keeps).`,
    );
  }
  return ms;
}

/** `value` as a port number from `min` to 65535, or undefined. */
function portNumber(value: string, min: 0 | 1): number | undefined {
  const port = Number(value);
  return /^\d+$/.test(value) && port >= min && port <= 65_535 ? port : undefined;
}

/** A TCP port to listen on, 0 to 65535 (0: a free one). */
export function parsePort(value: string): number {
  const port = portNumber(value, 0);
  if (port === undefined) throw new InvalidArgumentError("must be a port number from 0 to 65535.");
  return port;
}

/**
 * A port that is connected to, 1 to 65535: a virtual port (`forward` and
 * `expose` `--port`; the `Port{N}` method of `mqrpc.v1.Tunnel`, which has
 * no port 0) or a TCP target.
 */
export function parseNonZeroPort(value: string): number {
  const port = portNumber(value, 1);
  if (port === undefined) throw new InvalidArgumentError("must be a port number from 1 to 65535.");
  return port;
}

/**
 * A server id: any non-empty string (docs/PROTOCOL.md, "server id"); the
 * topics carry it encoded, so `/`, `.` and spaces are fine.
 */
export function parseServerId(value: string): string {
  if (value === "") throw new InvalidArgumentError("must not be empty.");
  return value;
}

/** A whole number of bytes, with an optional KiB/MiB/GiB suffix (`4MiB`). */
export function parseByteSize(value: string): number {
  const match = /^(\d+)\s*(B|KiB|MiB|GiB)?$/i.exec(value.trim());
  if (match === null)
    throw new InvalidArgumentError("give bytes, or a number with KiB, MiB or GiB.");
  const unit = (match[2] ?? "B").toLowerCase();
  const scale = unit === "kib" ? 1024 : unit === "mib" ? 1024 ** 2 : unit === "gib" ? 1024 ** 3 : 1;
  const bytes = Number(match[1]) * scale;
  if (bytes < 1) throw new InvalidArgumentError("must be at least 1 byte.");
  return bytes;
}

/** `3`, `3.1.1` or `4` (MQTT 3.1.1, protocol level 4), or `5`. */
export function parseMqttVersion(value: string): 4 | 5 {
  if (value === "3" || value === "3.1.1" || value === "4") return 4;
  if (value === "5") return 5;
  throw new InvalidArgumentError("must be 3 (MQTT 3.1.1) or 5.");
}

/** Collects a repeatable option's values in order. */
export function collect(value: string, previous: readonly string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/**
 * `host:port`, `:port` or `port` (host defaults to `defaultHost`); brackets
 * around an IPv6 host (`[::1]:8080`). The port is from `minPort` (0: an
 * address to listen on, where 0 picks a free port; 1: one to connect to)
 * to 65535.
 */
export function parseHostPort(
  value: string,
  defaultHost: string,
  minPort: 0 | 1 = 0,
): { readonly host: string; readonly port: number } {
  const match = /^(?:(\[[^\]]+\]|[^:]*):)?(\d+)$/.exec(value.trim());
  if (match === null) throw new InvalidArgumentError("give HOST:PORT, :PORT or PORT.");
  const rawHost = match[1] ?? "";
  const host = rawHost === "" ? defaultHost : rawHost.replace(/^\[(.*)\]$/, "$1");
  const port = portNumber(match[2] ?? "", minPort);
  if (port === undefined) {
    throw new InvalidArgumentError(`the port must be from ${minPort} to 65535.`);
  }
  return { host, port };
}
