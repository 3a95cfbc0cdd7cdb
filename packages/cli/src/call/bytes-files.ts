/**
 * Bytes fields filled from files: in a request document, a bytes field (or
 * a `google.protobuf.BytesValue`) whose JSON value is `"@path"` gets the
 * file's content. Base64 has no `@`, so the form cannot be mistaken for
 * bytes written inline.
 */
import { readFile } from "node:fs/promises";
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { CliError } from "../exit-codes.js";

/** What filling a document read. */
export interface FilledFiles {
  /** The document, with base64 of each file in place of its `@path`. */
  readonly json: unknown;
  /** Bytes read from files. */
  readonly fileBytes: number;
}

/**
 * Replaces every `"@path"` in a bytes field of `json` (a message of type
 * `message`, in proto JSON) with the base64 of the file it names.
 *
 * @throws CliError naming the field and the file when the file cannot be read.
 */
export async function fillBytesFromFiles(
  message: DescMessage,
  json: unknown,
): Promise<FilledFiles> {
  let fileBytes = 0;
  const load = async (path: string, where: string): Promise<string> => {
    let content: Buffer;
    try {
      content = await readFile(path);
    } catch (e) {
      throw new CliError(`${where}: cannot read @${path}: ${(e as Error).message}`);
    }
    fileBytes += content.byteLength;
    return content.toString("base64");
  };
  const filled = await fillMessage(message, json, message.typeName, load);
  return { json: filled, fileBytes };
}

type Load = (path: string, where: string) => Promise<string>;

const isFileRef = (value: unknown): value is string =>
  typeof value === "string" && value.startsWith("@") && value.length > 1;

async function fillMessage(
  message: DescMessage,
  json: unknown,
  where: string,
  load: Load,
): Promise<unknown> {
  if (message.typeName === "google.protobuf.BytesValue") {
    return isFileRef(json) ? load(json.slice(1), where) : json;
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) return json;
  const out: Record<string, unknown> = { ...(json as Record<string, unknown>) };
  for (const field of message.fields) {
    for (const key of new Set([field.jsonName, field.name])) {
      if (key in out) out[key] = await fillField(field, out[key], `${where}.${key}`, load);
    }
  }
  return out;
}

async function fillField(
  field: DescField,
  value: unknown,
  where: string,
  load: Load,
): Promise<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return field.scalar === ScalarType.BYTES && isFileRef(value)
        ? load(value.slice(1), where)
        : value;
    case "message":
      return fillMessage(field.message, value, where, load);
    case "list": {
      if (!Array.isArray(value)) return value;
      const items: unknown[] = [];
      for (const [i, item] of value.entries()) {
        const at = `${where}[${i}]`;
        if (field.listKind === "scalar") {
          items.push(
            field.scalar === ScalarType.BYTES && isFileRef(item)
              ? await load(item.slice(1), at)
              : item,
          );
        } else if (field.listKind === "message") {
          items.push(await fillMessage(field.message, item, at, load));
        } else {
          items.push(item);
        }
      }
      return items;
    }
    case "map": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
      const entries: Record<string, unknown> = {};
      for (const [k, item] of Object.entries(value as Record<string, unknown>)) {
        const at = `${where}[${JSON.stringify(k)}]`;
        if (field.mapKind === "scalar") {
          entries[k] =
            field.scalar === ScalarType.BYTES && isFileRef(item)
              ? await load(item.slice(1), at)
              : item;
        } else if (field.mapKind === "message") {
          entries[k] = await fillMessage(field.message, item, at, load);
        } else {
          entries[k] = item;
        }
      }
      return entries;
    }
    default:
      return value;
  }
}
