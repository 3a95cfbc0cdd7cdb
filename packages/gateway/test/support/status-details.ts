/**
 * gRPC's `grpc-status-details-bin` trailer, a serialized `google.rpc.Status`
 * (code, message, repeated `google.protobuf.Any` details), read into the
 * `{ type, value }` details of a `ConnectError` — the pairs mqrpc's End frame
 * carries (docs/PROTOCOL.md). Only the three fields are read, with
 * protobuf-es's wire reader: the detail values stay bytes, never decoded.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** A status detail as Connect holds one it received: the message's type name and its bytes. */
export interface StatusDetail {
  /** Fully qualified message name, e.g. `google.rpc.RetryInfo`. */
  readonly type: string;
  /** The detail message, protobuf binary. */
  readonly value: Uint8Array;
}

/** The parts of a `google.rpc.Status` a gateway forwards. */
export interface RpcStatus {
  readonly code: number;
  readonly message: string;
  readonly details: StatusDetail[];
}

/**
 * Decodes a `google.rpc.Status`. A type URL keeps what follows its last `/`
 * (`type.googleapis.com/google.rpc.RetryInfo` → `google.rpc.RetryInfo`), as
 * gRPC and Connect resolve Any.
 *
 * @throws Error when the bytes are not a valid protobuf message.
 */
export function decodeRpcStatus(bytes: Uint8Array): RpcStatus {
  const reader = new BinaryReader(bytes);
  let code = 0;
  let message = "";
  const details: StatusDetail[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.Varint) code = reader.int32();
    else if (field === 2 && wireType === WireType.LengthDelimited) message = reader.string();
    else if (field === 3 && wireType === WireType.LengthDelimited) {
      details.push(decodeAny(reader.bytes()));
    } else reader.skip(wireType, field);
  }
  return { code, message, details };
}

function decodeAny(bytes: Uint8Array): StatusDetail {
  const reader = new BinaryReader(bytes);
  let typeUrl = "";
  let value: Uint8Array = new Uint8Array(0);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) typeUrl = reader.string();
    else if (field === 2 && wireType === WireType.LengthDelimited) value = reader.bytes();
    else reader.skip(wireType, field);
  }
  return { type: typeUrl.slice(typeUrl.lastIndexOf("/") + 1), value };
}
