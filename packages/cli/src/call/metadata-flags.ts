/**
 * Request metadata from `-H "name: value"` (and `--reflect-header`), as
 * curl, grpcurl and buf curl take it; `-bin` keys carry base64 values as in
 * Connect.
 */
import { CliError, EXIT_USAGE } from "../exit-codes.js";

const NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Parses `name: value` lines into Headers (a name may repeat).
 *
 * @throws CliError (usage) naming the flag for a line without `:` or with
 *   a name that is not an HTTP token.
 */
export function parseMetadata(values: readonly string[] | undefined, flag: string): Headers {
  const headers = new Headers();
  for (const line of values ?? []) {
    const colon = line.indexOf(":");
    const name = colon < 0 ? "" : line.slice(0, colon).trim();
    if (colon < 0 || !NAME.test(name)) {
      throw new CliError(`${flag} "${line}": write it as "name: value"`, EXIT_USAGE);
    }
    headers.append(name, line.slice(colon + 1).trim());
  }
  return headers;
}

/** Each entry as `name: value`, names in order. */
export function metadataLines(headers: Headers): string[] {
  const lines: string[] = [];
  headers.forEach((value, name) => {
    lines.push(`${name}: ${value}`);
  });
  return lines;
}
