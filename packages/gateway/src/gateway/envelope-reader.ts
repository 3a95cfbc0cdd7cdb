/**
 * Cuts gRPC's length-prefixed messages out of an HTTP/2 body as its chunks
 * arrive: a 1-byte flags field (bit 0: compressed), a 4-byte big-endian
 * length, then that many bytes
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md, "Length-Prefixed-Message").
 *
 * Written by hand rather than through Connect's `transformSplitEnvelope`:
 * that one is an async-iterable transform over an async-iterated stream,
 * which cost the gateway about a fifth of its CPU per unary call; this one
 * is pushed chunks from `'data'` events and pulled messages synchronously.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** One message and its flags. */
export interface EnvelopedMessage {
  readonly flags: number;
  readonly data: Uint8Array;
}

const PREFIX_BYTES = 5;

/** Splits a byte stream into length-prefixed messages. */
export class EnvelopeReader {
  private chunks: Uint8Array[] = [];
  private held = 0;

  /**
   * @param maxBytes the largest message length accepted, in bytes
   * @param names what the error for a longer one calls a message and the
   *   limit, e.g. `a response message` and `the gateway's maxMessageBytes`
   */
  constructor(
    private readonly maxBytes: number,
    private readonly names: { readonly message: string; readonly limit: string } = {
      message: "a message",
      limit: "maxMessageBytes",
    },
  ) {}

  /** Bytes held: whole messages not taken yet and a part of the next. */
  get byteLength(): number {
    return this.held;
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.chunks.push(chunk);
    this.held += chunk.byteLength;
  }

  /**
   * The next whole message, or undefined until more bytes arrive.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED when a message's length is over
   *   `maxBytes` (before its bytes arrive: they are never held).
   */
  next(): EnvelopedMessage | undefined {
    if (this.held < PREFIX_BYTES) return undefined;
    const prefix = this.peek(PREFIX_BYTES);
    const flags = prefix[0] as number;
    const length =
      (((prefix[1] as number) << 24) |
        ((prefix[2] as number) << 16) |
        ((prefix[3] as number) << 8) |
        (prefix[4] as number)) >>>
      0;
    if (length > this.maxBytes) {
      throw new ConnectError(
        `${this.names.message} of ${length} bytes exceeds ${this.names.limit} (${this.maxBytes} bytes)`,
        Code.ResourceExhausted,
      );
    }
    if (this.held < PREFIX_BYTES + length) return undefined;
    const whole = this.take(PREFIX_BYTES + length);
    return { flags, data: whole.subarray(PREFIX_BYTES) };
  }

  /** The first `n` bytes held (n ≤ held), joining chunks only when they are split. */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array;
    if (first.byteLength >= n) return first;
    this.chunks = [this.join(this.held)];
    return this.chunks[0] as Uint8Array;
  }

  /** Removes and returns the first `n` bytes held (n ≤ held). */
  private take(n: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array;
    let bytes: Uint8Array;
    if (first.byteLength >= n) {
      bytes = first.subarray(0, n);
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      bytes = this.join(n);
      let left = n;
      while (left > 0) {
        const chunk = this.chunks[0] as Uint8Array;
        if (chunk.byteLength <= left) {
          left -= chunk.byteLength;
          this.chunks.shift();
        } else {
          this.chunks[0] = chunk.subarray(left);
          left = 0;
        }
      }
    }
    this.held -= n;
    return bytes;
  }

  /** A copy of the first `n` bytes held, across chunks (n ≤ held). */
  private join(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    for (const chunk of this.chunks) {
      if (at === n) break;
      const part = chunk.subarray(0, n - at);
      out.set(part, at);
      at += part.byteLength;
    }
    return out;
  }
}
