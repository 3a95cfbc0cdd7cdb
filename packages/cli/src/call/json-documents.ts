/**
 * Request messages as JSON documents: `-d '{…}'`, `-d @file` or `-d @-`
 * (stdin), one document per message, concatenated or separated by
 * whitespace (as `buf curl` reads them). Documents are parsed as their
 * bytes arrive, so a client or bidi stream fed from stdin sends each
 * message as soon as its document is complete.
 */
import { createReadStream } from "node:fs";
import { JSONParser } from "@streamparser/json";
import { CliError } from "../exit-codes.js";

/** Where `-d` says the documents come from. */
export type DataSource =
  | { readonly kind: "none" }
  | { readonly kind: "inline"; readonly text: string }
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "stdin" };

/** Reads the value of `-d`: `@-` stdin, `@path` a file, anything else inline JSON. */
export function dataSource(data: string | undefined): DataSource {
  if (data === undefined) return { kind: "none" };
  if (data === "@-") return { kind: "stdin" };
  if (data.startsWith("@")) return { kind: "file", path: data.slice(1) };
  return { kind: "inline", text: data };
}

/** A JSON document and where it was read, for error messages. */
export interface JsonDocument {
  readonly value: unknown;
  /** 1-based position among the documents. */
  readonly index: number;
}

/**
 * The documents of `source`, each as soon as it is complete.
 *
 * @throws CliError naming the source and document number for JSON that
 *   does not parse, or a file that cannot be read.
 */
export async function* jsonDocuments(source: DataSource): AsyncGenerator<JsonDocument> {
  if (source.kind === "none") return;
  const label =
    source.kind === "inline" ? "-d" : source.kind === "stdin" ? "stdin (-d @-)" : source.path;
  const parser = new JSONParser({ separator: "", paths: ["$"], keepStack: false });
  const ready: unknown[] = [];
  parser.onValue = ({ value }) => ready.push(value);
  let count = 0;
  const fail = (e: unknown): never => {
    throw new CliError(`${label}: request ${count + 1} is not valid JSON: ${(e as Error).message}`);
  };
  const chunks: AsyncIterable<string | Buffer> | Iterable<string> =
    source.kind === "inline"
      ? [source.text]
      : source.kind === "stdin"
        ? process.stdin
        : openFile(source.path);
  for await (const chunk of chunks) {
    try {
      parser.write(chunk);
    } catch (e) {
      fail(e);
    }
    while (ready.length > 0) yield { value: ready.shift(), index: ++count };
  }
  try {
    // Ends a trailing number; fails for a document cut short.
    if (!parser.isEnded) parser.end();
  } catch (e) {
    fail(e);
  }
  while (ready.length > 0) yield { value: ready.shift(), index: ++count };
}

async function* openFile(path: string): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of createReadStream(path)) yield chunk as Buffer;
  } catch (e) {
    throw new CliError(`-d @${path}: cannot read it: ${(e as Error).message}`);
  }
}
