/**
 * `application/grpc-web-text`: the gRPC-Web byte stream in base64, for
 * clients that cannot read binary bodies. A body may be several base64
 * runs one after the other, each with its own padding (the gRPC-Web spec
 * lets senders encode each frame on its own), so it is decoded in 4-character
 * quanta, each run closed by its padding, as the bytes arrive.
 */
import { Code, ConnectError } from "@connectrpc/connect";

const BASE64 = /^[A-Za-z0-9+/=]*$/;
const WHITESPACE = /\s+/g;

/** Decodes a base64 body as it arrives; the bytes come out as soon as whole quanta are in. */
export async function* decodeBase64Body(
  body: AsyncIterable<Uint8Array | string>,
): AsyncGenerator<Uint8Array> {
  const decoder = new Base64BodyDecoder();
  for await (const chunk of body) {
    const bytes = decoder.push(chunk);
    if (bytes !== undefined) yield bytes;
  }
  decoder.end();
}

/** Decodes a base64 body pushed chunk by chunk, as {@link decodeBase64Body} does. */
export class Base64BodyDecoder {
  /** Base64 characters of a quantum not complete yet (fewer than 4). */
  private pending = "";

  /**
   * The bytes of the whole quanta in so far, or undefined when no quantum was completed.
   *
   * @throws ConnectError INVALID_ARGUMENT for a character outside base64 or misplaced padding.
   */
  push(chunk: Uint8Array | string): Uint8Array | undefined {
    const text =
      typeof chunk === "string"
        ? chunk
        : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1");
    const pending = this.pending + text.replace(WHITESPACE, "");
    const whole = pending.length - (pending.length % 4);
    this.pending = pending.slice(whole);
    return whole === 0 ? undefined : decodeQuanta(pending.slice(0, whole));
  }

  /**
   * Tells the body ended.
   *
   * @throws ConnectError INVALID_ARGUMENT when it ends inside a quantum.
   */
  end(): void {
    if (this.pending.length > 0) {
      throw new ConnectError(
        "protocol error: the grpc-web-text body ends inside a base64 quantum",
        Code.InvalidArgument,
      );
    }
  }
}

/** Base64 for one piece of a grpc-web-text response (each piece padded on its own). */
export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/** Decodes whole quanta, where runs may end in padding anywhere between them. */
function decodeQuanta(quanta: string): Uint8Array {
  if (!BASE64.test(quanta)) {
    throw new ConnectError(
      "protocol error: the grpc-web-text body is not base64",
      Code.InvalidArgument,
    );
  }
  if (!quanta.includes("=")) return Buffer.from(quanta, "base64");
  const runs: Buffer[] = [];
  let start = 0;
  for (let end = 4; end <= quanta.length; end += 4) {
    if (quanta.charCodeAt(end - 1) === 0x3d /* = */ || end === quanta.length) {
      const run = quanta.slice(start, end);
      const padding = run.slice(0, -2).includes("=") || (run.at(-2) === "=" && run.at(-1) !== "=");
      if (padding) {
        throw new ConnectError(
          "protocol error: misplaced base64 padding in the grpc-web-text body",
          Code.InvalidArgument,
        );
      }
      runs.push(Buffer.from(run, "base64"));
      start = end;
    }
  }
  return Buffer.concat(runs);
}
