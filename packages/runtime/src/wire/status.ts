/**
 * Maps between `ConnectError` and the wire `Status` of an End frame, keeping
 * code, message, details and metadata.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type End,
  EndSchema,
  ErrorDetailSchema,
  type MetadataEntry,
  StatusSchema,
} from "../gen/mqrpc/v1/wire_pb.js";
import { entriesToHeaders, responseHeadersToEntries } from "./metadata.js";

const validCodes = new Set<number>(Object.values(Code).filter((v) => typeof v === "number"));

/**
 * Builds an End frame body for a failed call. Trailers are the handler's
 * response trailers merged with the error's own metadata. Never throws:
 * metadata that cannot travel (a `-bin` value that is not base64) is left
 * out, and the status message says so; the status is what the caller must
 * get.
 */
export function errorToEnd(reason: unknown, trailers: Headers, headers?: Headers): End {
  const error = ConnectError.from(reason);
  const merged = new Headers(trailers);
  error.metadata.forEach((value, key) => {
    merged.append(key, value);
  });
  let message = error.rawMessage;
  let trailerEntries: MetadataEntry[] = [];
  let headerEntries: MetadataEntry[] = [];
  try {
    trailerEntries = responseHeadersToEntries(merged);
    headerEntries = headers ? responseHeadersToEntries(headers) : [];
  } catch (e) {
    trailerEntries = [];
    headerEntries = [];
    message = `${message} (its metadata was left out: ${ConnectError.from(e).rawMessage})`;
  }
  const details = error.details.map((d) =>
    "desc" in d
      ? create(ErrorDetailSchema, {
          type: d.desc.typeName,
          value: toBinary(d.desc, create(d.desc, d.value)),
        })
      : create(ErrorDetailSchema, { type: d.type, value: d.value }),
  );
  return create(EndSchema, {
    status: create(StatusSchema, { code: error.code, message, details }),
    trailers: trailerEntries,
    headers: headerEntries,
  });
}

/**
 * Turns the status of an End frame into a `ConnectError`, or undefined for
 * OK. Response headers and trailers become the error's metadata, as Connect
 * does for HTTP.
 */
export function endToError(end: End): ConnectError | undefined {
  const status = end.status;
  if (status === undefined || status.code === 0) {
    return undefined;
  }
  const code = validCodes.has(status.code) ? (status.code as Code) : Code.Unknown;
  const metadata = entriesToHeaders(end.headers);
  entriesToHeaders(end.trailers, metadata);
  const error = new ConnectError(status.message, code, metadata);
  for (const detail of status.details) {
    error.details.push({ type: detail.type, value: detail.value });
  }
  return error;
}
