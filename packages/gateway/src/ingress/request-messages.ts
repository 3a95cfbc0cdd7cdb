/**
 * The request messages of a binary gRPC or gRPC-Web call, cut out of the
 * HTTP request body (grpc-web-text decoded first) as the MQTT call asks for
 * them, decompressed when the request is gzip-encoded.
 */
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Compression, compressedFlag, envelopeDecompress } from "@connectrpc/connect/protocol";
import { trailerFlag } from "@connectrpc/connect/protocol-grpc-web";
import { type EnvelopedMessage, EnvelopeReader } from "../gateway/envelope-reader.js";
import { Base64BodyDecoder } from "./grpc-web-text.js";

/** Why a call ends CANCELED when its client goes away. */
export const CLIENT_GONE = "the gRPC client cancelled the call (its HTTP stream closed)";

/**
 * Request bytes read ahead of the MQTT call: whole messages it has not asked
 * for yet. Past this the body is paused, so the client's HTTP/2 window closes.
 */
export const REQUEST_HIGH_WATER_BYTES = 64 * 1024;

/** Options of {@link RequestMessages}. */
export interface RequestMessagesOptions {
  /** The body is grpc-web-text (base64). */
  readonly text: boolean;
  /** How compressed messages are decompressed (the request's `grpc-encoding`); null for none. */
  readonly compression: Compression | null;
  /** Largest message accepted, in bytes (after decompression). */
  readonly maxBytes: number;
  /** The call's: aborted with the protocol error that ends the request stream. */
  readonly abort: AbortController;
}

/**
 * The request messages of a call, read from the HTTP body only as the MQTT
 * call asks for them: the body is read (its `'data'` events) from the first
 * ask on, and paused while {@link REQUEST_HIGH_WATER_BYTES} wait unasked. A
 * protocol error (a compressed message without `grpc-encoding`, a message
 * over the limit, a truncated envelope) fails the call with its own status:
 * it is kept in {@link error} and the call is aborted. Returning early (a
 * unary call takes one message) leaves the body to be discarded, never
 * destroys the HTTP stream the response still needs.
 */
export class RequestMessages implements AsyncIterable<Uint8Array> {
  /** The protocol error that ended the request stream, if any. */
  error: ConnectError | undefined;
  private readonly reader: EnvelopeReader;
  private readonly text: Base64BodyDecoder | undefined;
  private reading = false;
  /** The body ended with the client's END_STREAM (or a complete HTTP/1.1 body). */
  private complete = false;
  /** The body is over: complete, or cut short. */
  private over = false;
  /** The call no longer reads the body: what comes is dropped. */
  private discarding = false;
  /** A chunk that could not be decoded (grpc-web-text). */
  private failure: unknown;
  private wake: (() => void) | undefined;

  private readonly compression: Compression | null;
  private readonly maxBytes: number;
  private readonly abort: AbortController;

  constructor(
    private readonly body: Readable,
    options: RequestMessagesOptions,
  ) {
    this.compression = options.compression;
    this.maxBytes = options.maxBytes;
    this.abort = options.abort;
    this.reader = new EnvelopeReader(options.maxBytes, {
      message: "a request message",
      limit: "the ingress's maxMessageBytes",
    });
    this.text = options.text ? new Base64BodyDecoder() : undefined;
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: () => this.next(),
      return: () => {
        this.discardRest();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }

  /** Reads what is left of the body and drops it (the call no longer needs it). */
  discardRest(): void {
    if (this.discarding) return;
    this.discarding = true;
    const body = this.body;
    if (!body.readableEnded) body.resume();
    this.notify();
  }

  private start(): void {
    this.reading = true;
    const body = this.body;
    body.on("data", (chunk: Buffer) => {
      if (this.discarding || this.failure !== undefined) return;
      try {
        const bytes = this.text === undefined ? chunk : this.text.push(chunk);
        if (bytes !== undefined) this.reader.push(bytes);
      } catch (e) {
        this.failure = e;
      }
      if (!this.notify() && this.reader.byteLength >= REQUEST_HIGH_WATER_BYTES) body.pause();
    });
    body.on("end", () => {
      this.complete = true;
      this.over = true;
      this.notify();
    });
    // A body cut short by a reset or a dropped connection closes without 'end'.
    const cut = () => {
      this.over = true;
      this.notify();
    };
    body.on("close", cut);
    body.on("error", cut);
    // A body that ended before the call first asked (an empty one, whose
    // END_STREAM came with the headers, while the call waited for its
    // device) emits no 'end' any more.
    if (body.readableEnded) {
      this.complete = true;
      this.over = true;
    } else if (body.destroyed) {
      this.over = true;
    }
  }

  /** Wakes the reader waiting for bytes; false when none waits. */
  private notify(): boolean {
    const wake = this.wake;
    if (wake === undefined) return false;
    this.wake = undefined;
    wake();
    return true;
  }

  private async next(): Promise<IteratorResult<Uint8Array>> {
    try {
      if (!this.reading) this.start();
      for (;;) {
        if (this.failure !== undefined) throw this.failure;
        if (this.discarding) {
          if (this.abort.signal.aborted) throw this.abort.signal.reason;
          return { done: true, value: undefined };
        }
        const envelope = this.reader.next();
        if (envelope !== undefined) {
          // Most messages are neither compressed nor a trailers frame: no await for them.
          const value = envelope.flags === 0 ? envelope.data : await this.open(envelope);
          return { done: false, value };
        }
        if (this.over) return this.end();
        const body = this.body;
        if (body.isPaused()) body.resume();
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } catch (e) {
      if (!this.abort.signal.aborted) {
        this.error = this.limitError(ConnectError.from(e, Code.Internal));
        this.abort.abort(this.error);
      }
      throw this.abort.signal.reason;
    }
  }

  /**
   * A message over the limit after decompression, named as the user knows
   * it (the ingress's `maxMessageBytes`) rather than as Connect's
   * decompression names it (`readMaxBytes`); other errors unchanged (the
   * envelope reader names the limit itself).
   */
  private limitError(error: ConnectError): ConnectError {
    if (error.code !== Code.ResourceExhausted || !error.rawMessage.includes("readMaxBytes")) {
      return error;
    }
    return new ConnectError(
      `a request message (after decompression) exceeds the ingress's maxMessageBytes (${this.maxBytes} bytes)`,
      Code.ResourceExhausted,
    );
  }

  /** The end of the request messages, once the body is over and every whole message was taken. */
  private end(): IteratorResult<Uint8Array> {
    // A body cut short by a dropped HTTP/1.1 connection or a reset cancels
    // the call instead of half-closing it. (grpc-js and Node's HTTP/2 client
    // cancel by ending the request stream, then resetting it: the device
    // sees that half-close, then the cancel, as a gRPC server would.)
    if (!this.complete || this.abort.signal.aborted) {
      throw new ConnectError(CLIENT_GONE, Code.Canceled);
    }
    this.text?.end();
    if (this.reader.byteLength > 0) {
      throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    }
    return { done: true, value: undefined };
  }

  private async open(envelope: EnvelopedMessage): Promise<Uint8Array> {
    if ((envelope.flags & trailerFlag) !== 0) {
      throw new ConnectError("protocol error: a request carries a trailers frame", Code.Internal);
    }
    if ((envelope.flags & compressedFlag) === 0) return envelope.data;
    if (this.compression === null) {
      throw new ConnectError(
        "protocol error: a request message is compressed but the request has no grpc-encoding",
        Code.Internal,
      );
    }
    return (await envelopeDecompress(envelope, this.compression, this.maxBytes)).data;
  }
}
