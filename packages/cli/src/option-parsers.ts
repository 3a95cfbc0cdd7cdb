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
 * A duration in milliseconds from seconds (`2.5`, as grpcurl's `-max-time`)
 * or a number with a unit (`500ms`, `2s`, `1m`, `1h`). Must be above zero.
 */
export function parseDuration(value: string): number {
  const match = DURATION.exec(value.trim());
  if (match === null) {
    throw new InvalidArgumentError("give seconds (2.5) or a number with ms, s, m or h (500ms).");
  }
  const ms = Number(match[1]) * (UNIT_MS[match[2] ?? "s"] ?? 1000);
  if (!(ms > 0) || !Number.isFinite(ms)) {
    throw new InvalidArgumentError("must be more than zero.");
  }
  return Math.ceil(ms);
}

/** A TCP port, 0 to 65535 (0: a free one). */
export function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65_535) {
    throw new InvalidArgumentError("must be a port number from 0 to 65535.");
  }
  return port;
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
 * around an IPv6 host (`[::1]:8080`).
 */
export function parseHostPort(
  value: string,
  defaultHost: string,
): { readonly host: string; readonly port: number } {
  const match = /^(?:(\[[^\]]+\]|[^:]*):)?(\d+)$/.exec(value.trim());
  if (match === null) throw new InvalidArgumentError("give HOST:PORT, :PORT or PORT.");
  const rawHost = match[1] ?? "";
  const host = rawHost === "" ? defaultHost : rawHost.replace(/^\[(.*)\]$/, "$1");
  return { host, port: parsePort(match[2] ?? "") };
}
