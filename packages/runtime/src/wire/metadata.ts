/**
 * Converts Connect `Headers` to and from the wire's `MetadataEntry` list.
 * Keys ending in `-bin` travel as raw bytes (Connect keeps them base64 in
 * `Headers`, as gRPC does), everything else as text.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";
import { type MetadataEntry, MetadataEntrySchema } from "../gen/mqrpc/v1/wire_pb.js";

/** Encodes headers for the wire. Throws INVALID_ARGUMENT for a bad `-bin` value. */
export function headersToEntries(headers: Headers): MetadataEntry[] {
  const entries: MetadataEntry[] = [];
  headers.forEach((value, key) => {
    if (key.endsWith("-bin")) {
      let binary: Uint8Array;
      try {
        binary = decodeBinaryHeader(value);
      } catch {
        throw new ConnectError(`header "${key}" is not valid base64`, Code.InvalidArgument);
      }
      entries.push(create(MetadataEntrySchema, { key, value: { case: "binary", value: binary } }));
    } else {
      entries.push(create(MetadataEntrySchema, { key, value: { case: "text", value } }));
    }
  });
  return entries;
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
