/**
 * Converts Connect `Headers` to and from the wire's `MetadataEntry` list.
 * Keys ending in `-bin` travel as raw bytes (Connect keeps them base64 in
 * `Headers`, as gRPC does), everything else as text.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";
import { type MetadataEntry, MetadataEntrySchema } from "../gen/mqrpc/v1/wire_pb.js";

/**
 * Encodes headers for the wire. A `-bin` value that `Headers` joined from
 * several (`a, b`, as it joins repeated fields) travels as one entry per
 * value: base64 has no commas, and gRPC lists binary values the same way.
 *
 * @throws ConnectError INVALID_ARGUMENT naming the header for a `-bin`
 *   value that is not base64.
 */
export function headersToEntries(headers: Headers): MetadataEntry[] {
  const entries: MetadataEntry[] = [];
  headers.forEach((value, key) => {
    if (!key.endsWith("-bin")) {
      entries.push(create(MetadataEntrySchema, { key, value: { case: "text", value } }));
      return;
    }
    for (const part of value.split(",")) {
      let binary: Uint8Array;
      try {
        binary = decodeBinaryHeader(part.trim());
      } catch {
        throw new ConnectError(`header "${key}" is not valid base64`, Code.InvalidArgument);
      }
      entries.push(create(MetadataEntrySchema, { key, value: { case: "binary", value: binary } }));
    }
  });
  return entries;
}

/**
 * {@link headersToEntries} for a server's response headers or trailers: a
 * value that cannot travel is the handler's fault, not the caller's.
 *
 * @throws ConnectError INTERNAL naming the header for a `-bin` value that
 *   is not base64.
 */
export function responseHeadersToEntries(headers: Headers): MetadataEntry[] {
  try {
    return headersToEntries(headers);
  } catch (e) {
    // Headers or trailers: the caller cannot tell which from here.
    const problem = ConnectError.from(e).rawMessage.replace(/^header /, "");
    throw new ConnectError(`response metadata ${problem}`, Code.Internal);
  }
}

/** Decodes wire entries into `target` (appending), returning it. */
export function entriesToHeaders(
  entries: readonly MetadataEntry[],
  target = new Headers(),
): Headers {
  for (const entry of entries) {
    try {
      if (entry.value.case === "binary") {
        target.append(entry.key, encodeBinaryHeader(entry.value.value));
      } else {
        target.append(entry.key, entry.value.value ?? "");
      }
    } catch {
      // A key or value that `Headers` refuses cannot be delivered; dropping it
      // beats failing the whole call over one bad entry from the peer.
    }
  }
  return target;
}
